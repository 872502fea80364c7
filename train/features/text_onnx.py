"""Torch-free text extractor: the exported MiniLM encoder run by onnxruntime + ``tokenizers``.

Gives the same features as the torch MiniLM extractor (``train.features.text``) within 1e-4
(FP32) and carries the same :class:`ExtractorIdentity`, so a model trained on torch features
runs on these. The encoder directory is written by ``python -m export.text_encoder --out DIR``
(or ``python -m export``) and holds ``text_encoder.onnx``, optionally ``text_encoder.int8.onnx``,
and ``tokenizer.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from train.common import InputError, python_m
from train.features.base import ExtractorIdentity, UtteranceInput
from train.features.text import is_blank

ENCODER_FILE = "text_encoder.onnx"
ENCODER_INT8_FILE = "text_encoder.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
# Keys of the ONNX model's metadata_props written by export.text_encoder.
META_MAX_LENGTH = "max_length"
META_DIM = "dim"
META_IDENTITY = "extractor_identity"
META_SOURCE = "source"

PRECISIONS = {"fp32": ENCODER_FILE, "int8": ENCODER_INT8_FILE}


class OnnxMiniLMExtractor:
    """Sentence embeddings (n, dim) float32, L2-normalised, from an exported encoder directory
    (MiniLM, 384-d, or mpnet, 768-d: the identity in the ONNX metadata says which).

    Args:
        path: directory holding the exported encoder and ``tokenizer.json``.
        precision: "fp32" or "int8" (dynamic-quantised copy; cosine to FP32 > 0.99).
        batch_size: utterances per onnxruntime call (sorted by length to limit padding).
        providers, threads: passed to onnxruntime (default: CUDA when available, else CPU).
    """

    modality = "text"

    def __init__(
        self,
        path: str | Path,
        precision: str = "fp32",
        *,
        batch_size: int = 32,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ):
        from train.common import make_session

        if precision not in PRECISIONS:
            raise InputError(f"unknown text encoder precision {precision!r}; expected one of {sorted(PRECISIONS)}")
        self.path = Path(path)
        model_file = self.path / PRECISIONS[precision]
        tok_file = self.path / TOKENIZER_FILE
        for f in (model_file, tok_file):
            if not f.is_file():
                hint = f" (export it with: {python_m('export.text_encoder --out DIR')}" + (" --int8" if precision == "int8" else "") + ")"
                raise InputError(f"no {f.name} in the text encoder directory{hint}", path=str(self.path))
        self.precision = precision
        self.batch_size = int(batch_size)
        self.session = make_session(model_file, providers=providers, threads=threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.identity = ExtractorIdentity(**json.loads(meta[META_IDENTITY]))
            self.max_length = int(meta[META_MAX_LENGTH])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"ONNX model lacks the text encoder metadata; re-export it with {python_m('export.text_encoder')}", path=str(model_file)) from None
        self.tokenizer = load_tokenizer(tok_file, self.max_length)

    def extract(self, items: Sequence[UtteranceInput]) -> np.ndarray:
        """(len(items), dim) float32; a NaN row where the text is blank (as the torch extractor)."""
        out = np.full((len(items), self.identity.dim), np.nan, dtype=np.float32)
        idx = [i for i, it in enumerate(items) if not is_blank(it.text)]
        idx.sort(key=lambda i: len(items[i].text))  # similar lengths together -> little padding
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start : start + self.batch_size]
            out[chunk] = self.encode([str(items[i].text) for i in chunk])
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed one batch of non-blank strings: (len(texts), dim) float32."""
        if not texts:
            return np.zeros((0, self.identity.dim), np.float32)
        enc = self.tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in enc], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
        (emb,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return emb.astype(np.float32, copy=False)


def load_tokenizer(path: Path, max_length: int):
    """``tokenizers`` tokenizer set up like sentence-transformers: truncate to ``max_length``,
    pad to the longest sequence of the batch (tokenizer.json's own fixed padding is replaced)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError("the tokenizers package is not installed: pip install 'ariigcn[export]'") from None
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise InputError(f"cannot read tokenizer: {str(e).splitlines()[0]}", path=str(path)) from None
    # the pad token tokenizer.json names (MPNet: <pad>), else BERT's [PAD]
    pad_token = (tok.padding or {}).get("pad_token") or "[PAD]"
    pad_id = tok.token_to_id(pad_token)
    if pad_id is None:
        raise InputError(f"tokenizer has no {pad_token} token", path=str(path))
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tok
