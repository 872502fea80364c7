"""Run feature extractors over a corpus, with an on-disk cache: one path for every modality.

``attach_features(corpus, {"text": "minilm"}, "cache/features")`` fills
``dialogue.features["text"]`` ((n, 384) float32) for every dialogue. Each utterance gets a
content key (its text; for audio/visual its media file and span) and a row is computed only when
the cache (same extractor identity) lacks that key. The CLI is ``python -m train.extract``.

Text comes from ``dialogue.texts``; audio and visual come from a media manifest
(:mod:`train.extract.media`) since the corpora here carry no recordings.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from train.config import MODALITIES
from train.data.corpus import Corpus
from train.common import InputError
from train.features.base import ExtractorIdentity, FeatureExtractor, UtteranceInput
from train.features.cache import FeatureFile, content_key, plan_reuse
from train.features.registry import get_extractor

log = logging.getLogger(__name__)

# CLI subcommand / modality -> default extractor name.
DEFAULT_EXTRACTORS = {"text": "minilm", "audio": "is10", "visual": "fer"}


@dataclass
class ExtractStats:
    """What one extraction did: ``reused`` of ``total`` rows came from the cache, ``empty`` are NaN."""

    identity: ExtractorIdentity
    total: int
    reused: int
    computed: int
    empty: int
    path: Path


@dataclass
class _Utterance:
    key: str
    make: Callable[[], UtteranceInput] | None  # builds the input when the row must be computed; None: no input (NaN row)
    order: int  # sort key for batching (text length: less padding)


def text_keys(dialogue, context_turns: int = 0) -> list[str]:
    """Cache keys of a dialogue's utterances for a text extractor reading ``context_turns`` past turns."""
    d = dialogue
    keys = []
    for i, text in enumerate(d.texts):
        text = "" if text is None else str(text)
        ctx = [(d.texts[j], d.speakers[j]) for j in range(max(0, i - context_turns), i)]
        # a context-aware encoder also sees speakers and past turns, so they are part of its key
        keys.append(content_key("text", f"{d.speakers[i]}: {text}", *(f"{s}: {t}" for t, s in ctx)) if context_turns else content_key("text", text))
    return keys


def _text_units(corpus: Corpus, extractor: FeatureExtractor) -> dict[str, list[_Utterance]]:
    context_turns = int(getattr(extractor, "context_turns", 0) or 0)  # encoders that read past turns
    units: dict[str, list[_Utterance]] = {}
    for d in corpus.dialogues:
        if d.texts is None:
            raise InputError("text features need transcripts, but this corpus has none (use a file with sentences)", path=corpus.source or None, dialogue=d.id)
        if len(d.texts) != len(d):
            raise InputError(f"{len(d.texts)} texts but {len(d)} utterances", path=corpus.source or None, dialogue=d.id)
        rows = []
        for i, key in enumerate(text_keys(d, context_turns)):
            text = "" if d.texts[i] is None else str(d.texts[i])
            ctx = [(d.texts[j], d.speakers[j]) for j in range(max(0, i - context_turns), i)]
            rows.append(_Utterance(key, _text_loader(text, d.speakers[i], ctx), len(text)))
        units[d.id] = rows
    return units


def _text_loader(text: str, speaker: str, ctx: list[tuple[str, str]]) -> Callable[[], UtteranceInput]:
    return lambda: UtteranceInput(text=text, speaker=speaker, context=[UtteranceInput(text=t, speaker=s) for t, s in ctx])


def _media_units(corpus: Corpus, modality: str, media: str | Path | None) -> dict[str, list[_Utterance]]:
    if media is None:
        raise InputError(
            f"{modality} features need the recordings: pass a media manifest (--media / media=), a CSV with "
            "columns dialogue_id, utterance_index, path, start, end (seconds) for every utterance"
        )
    from train.extract import media as m

    spans = m.read_manifest(media)
    known = {d.id for d in corpus.dialogues}
    stray = sorted({did for did, _ in spans if did not in known})
    if stray:
        log.warning("media manifest names %d dialogue(s) not in the corpus (ignored), e.g. %r", len(stray), stray[0])
    units: dict[str, list[_Utterance]] = {}
    missing = 0
    for d in corpus.dialogues:
        rows = []
        for i in range(len(d)):
            span = spans.get((d.id, i))
            if span is None:  # no recording for this utterance: a NaN row, masked out by the model
                missing += 1
                rows.append(_Utterance(content_key(modality, "no-media"), None, 0))
            elif modality == "audio":
                rows.append(_Utterance(content_key(modality, *span.stamp(), m.SAMPLE_RATE), _audio_loader(span, d.speakers[i]), 0))
            else:
                stamp = (*span.stamp(), m.VIDEO_FPS, m.MAX_FRAMES)
                rows.append(_Utterance(content_key(modality, *stamp), _frames_loader(span, d.speakers[i]), 0))
        units[d.id] = rows
    if missing:
        log.warning("media manifest has no %s for %d utterance(s): their rows are NaN (masked out)", modality, missing)
    return units


def _audio_loader(span, speaker: str) -> Callable[[], UtteranceInput]:
    from train.extract.media import SAMPLE_RATE, load_audio

    return lambda: UtteranceInput(speaker=speaker, audio=load_audio(span), sample_rate=SAMPLE_RATE)


def _frames_loader(span, speaker: str) -> Callable[[], UtteranceInput]:
    from train.extract.media import load_frames

    return lambda: UtteranceInput(speaker=speaker, frames=load_frames(span))


def extract_corpus(
    corpus: Corpus,
    extractor: FeatureExtractor,
    out: str | Path,
    *,
    media: str | Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], ExtractStats]:
    """Features of every utterance of ``corpus`` by ``extractor``, reusing and rewriting ``out``.

    Returns dialogue id -> (n, dim) float32 (NaN rows where there was nothing to extract) and
    what was reused. ``out`` holds exactly this corpus's dialogues afterwards.
    """
    from tqdm.auto import tqdm

    identity = extractor.identity
    modality = identity.modality
    if modality not in MODALITIES:
        raise InputError(f"extractor {identity.name!r} has unknown modality {modality!r}")
    units = _text_units(corpus, extractor) if modality == "text" else _media_units(corpus, modality, media)
    out = Path(out)
    if out.exists() and not out.is_file():
        raise InputError("output path exists and is not a file", path=str(out))
    old = FeatureFile.load(out) if out.exists() else None  # refuses to overwrite a foreign file
    if old is not None and old.identity != identity:
        log.info("%s was made by %s, not %s: recomputing everything", out, old.identity.version, identity.version)
    plan = plan_reuse(old, identity, {did: [u.key for u in rows] for did, rows in units.items()})
    # Identical content needs computing once; sort by length so batches pad little.
    todo: dict[str, list[tuple[str, int]]] = {}
    for did, row in plan.pending:
        if units[did][row].make is not None:  # rows without input stay NaN
            todo.setdefault(units[did][row].key, []).append((did, row))
    order = sorted(todo, key=lambda k: units[todo[k][0][0]][todo[k][0][1]].order)
    chunk = max(1, int(getattr(extractor, "batch_size", 32))) * 4
    bar = tqdm(total=sum(len(v) for v in todo.values()), desc=f"{identity.name} ({modality})", unit="utt", disable=not progress or not todo)
    for start in range(0, len(order), chunk):
        batch = order[start : start + chunk]
        items = [units[todo[k][0][0]][todo[k][0][1]].make() for k in batch]
        feats = np.asarray(extractor.extract(items))
        if feats.shape != (len(items), identity.dim):
            raise RuntimeError(f"extractor {identity.name} returned {feats.shape}, expected ({len(items)}, {identity.dim})")
        if np.isinf(feats).any():
            raise RuntimeError(f"extractor {identity.name} returned infinite values")
        n_rows = 0
        for key, vec in zip(batch, feats.astype(np.float32, copy=False)):
            for did, row in todo[key]:
                plan.features[did][row] = vec
                n_rows += 1
        bar.update(n_rows)
    bar.close()
    empty = int(sum(np.isnan(f).all(axis=1).sum() for f in plan.features.values()))
    keys = {did: [u.key for u in rows] for did, rows in units.items()}
    if old is None or old.identity != identity or old.keys != keys:  # else the file already holds exactly this
        meta = {"dataset": corpus.dataset, "source": str(corpus.source), "modality": modality}
        FeatureFile(identity, plan.features, keys, meta).save(out)
    stats = ExtractStats(identity, plan.total, plan.reused, sum(len(v) for v in todo.values()), empty, out)
    log.info("%s: reused %d/%d utterances, computed %d, %d without %s -> %s", identity.name, stats.reused, stats.total, stats.computed, empty, modality, out)
    return plan.features, stats


def cache_path(cache_dir: str | Path, corpus: Corpus, identity: ExtractorIdentity) -> Path:
    """``cache_dir/<dataset>_<source stem>_<extractor>_<identity hash>.npz``."""
    stem = Path(str(corpus.source)).stem if corpus.source else "corpus"
    safe = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"  # noqa: E731
    tag = content_key(*identity.to_dict().values())[:10]
    return Path(cache_dir) / f"{safe(corpus.dataset)}_{safe(stem)}_{safe(identity.name)}_{tag}.npz"


def attach_features(
    corpus: Corpus,
    extractors: Mapping[str, str | FeatureExtractor],
    cache_dir: str | Path,
    backend: str | Mapping[str, str] | None = None,
    progress: bool = True,
    *,
    media: str | Path | None = None,
    extractor_kwargs: Mapping[str, Mapping] | None = None,
) -> Corpus:
    """Fill ``dialogue.features[modality]`` ((n, dim) float32) for every dialogue; returns ``corpus``.

    Args:
        extractors: modality -> registry name ("minilm", "is10", "fer") or a built extractor.
        cache_dir: where the per-(corpus, extractor) cache files live.
        backend: registry backend ("torch", "onnx") for every named extractor, or a mapping
            modality -> backend; None (or a modality left out) = the name's default backend
            (torch for minilm).
        media: manifest for audio/visual (see :mod:`train.extract.media`); unused for text.
        extractor_kwargs: modality -> constructor arguments (e.g. ``{"text": {"path": DIR}}``).
    """
    extractor_kwargs = extractor_kwargs or {}
    for modality, spec in extractors.items():
        if modality not in MODALITIES:
            raise InputError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
        chosen = backend.get(modality) if isinstance(backend, Mapping) else backend
        ex = spec if not isinstance(spec, str) else get_extractor(spec, chosen, **dict(extractor_kwargs.get(modality, {})))
        if ex.identity.modality != modality:
            raise InputError(f"extractor {ex.identity.name!r} makes {ex.identity.modality} features, not {modality}")
        feats, _ = extract_corpus(corpus, ex, cache_path(cache_dir, corpus, ex.identity), media=media, progress=progress)
        for d in corpus.dialogues:
            d.features[modality] = feats[d.id]
    return corpus


__all__ = ["attach_features", "extract_corpus", "cache_path", "text_keys", "ExtractStats", "DEFAULT_EXTRACTORS"]
