"""Scoring a trained model on one split of a corpus, and its per-utterance predictions.

:func:`evaluate` builds the features the model's manifest names (unless the file carries them),
runs a backend and returns the report (percent figures, with accuracy on emotion shifts and on
the rest); :func:`write_predictions` writes one JSON line per utterance. The CLI is
``python -m train.evaluate``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from train.common import InputError, atomic_file

if TYPE_CHECKING:
    from train.backends import Backend


def attach_model_features(corpus, manifest, cache_dir: str, media: str | Path | None = None):
    """Give ``corpus`` every modality the model needs, with the extractor its manifest names.

    Modalities the model trained on precomputed features must already be in the file; audio and
    visual ones come from the recordings ``media`` (a manifest, :mod:`train.extract.media`) names.
    """
    need = {}
    for m, ident in manifest.extractors.items():
        if ident.name == "precomputed":
            continue
        need[m] = ident.name
    if not need:
        return corpus
    from train.extract import attach_features
    from train.trainer import identity_of

    for m, name in need.items():
        have = identity_of(name)
        want = manifest.extractors[m]
        if have != want:
            raise InputError(f"the model's {m} features come from {want.name} {want.version} ({want.dim}-d), "
                             f"but this installation's {name} is {have.version} ({have.dim}-d)")
    return attach_features(corpus, need, cache_dir, media=media)


@dataclass
class Evaluation:
    """One scored split: the report (JSON-ready) and what it was computed from.

    dialogues: the scored dialogues. probs: per dialogue, (n_i, C) float32 probabilities.
    labels: the model's label names.
    """

    report: dict[str, Any]
    dialogues: list
    probs: list[np.ndarray]
    labels: list[str]

    def prediction_rows(self) -> list[dict[str, Any]]:
        """One row per utterance: dialogue, index, speaker, label, prediction (names; label None
        when unlabelled), probs (label name -> probability, rounded to 1e-5)."""
        rows = []
        for d, p in zip(self.dialogues, self.probs):
            for i in range(len(d)):
                y = int(d.labels[i])
                rows.append({"dialogue": d.id, "index": i, "speaker": d.speakers[i],
                             "label": self.labels[y] if y >= 0 else None,
                             "prediction": self.labels[int(p[i].argmax())],
                             "probs": {k: round(float(v), 5) for k, v in zip(self.labels, p[i])}})
        return rows


def check_output_path(path: str | Path) -> Path:
    """``path`` for a file to be written: its folder must exist, and it must not be a folder."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"the folder {path.parent} does not exist; create it first", path=str(path))
    if path.is_dir():
        raise InputError("is a folder, not a file path", path=str(path))
    return path


def write_predictions(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines to ``path`` (via a temp file + rename: never half-written)."""
    path = check_output_path(path)
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def evaluate_split(model: str, data: str, split: str, backend: "str | Backend" = "torch", cache_dir: str | None = None,
                   device: str | None = None, media: str | None = None) -> Evaluation:
    """Score ``model`` on ``split`` of ``data``: the report and the per-utterance probabilities.

    ``cache_dir``, ``media``: the feature cache and the media manifest (audio / visual from
    recordings); None: the model config's ``data.cache_dir`` / ``data.media``.

    ``backend``: a loaded backend of ``model`` (any :class:`train.backends.Backend`, e.g. from
    :func:`export.backends.load_backend`), or the name of one of train's own (``torch``).
    """
    from train.backends import check_features, load_backend
    from train.data import load_corpus
    from train.metrics import dialogue_shifts, score

    be = load_backend(model, backend, **({"device": device} if device else {})) if isinstance(backend, str) else backend
    manifest = be.manifest
    corpus = load_corpus(data)
    dialogues = corpus.split(split)
    if not dialogues:
        counts = ", ".join(f"{s}: {len(corpus.split(s))} dialogues" for s in ("train", "valid", "test"))
        raise InputError(f"the {split} split is empty ({counts})", path=data)
    if corpus.labels != manifest.labels:
        raise InputError(f"the data's labels {corpus.labels} differ from the model's {manifest.labels} "
                         f"(a {corpus.dataset} file for a {manifest.dataset} model?)", path=data)
    if cache_dir is None or media is None:
        from train.model_dir import read_config

        data_cfg = read_config(model).data
        cache_dir = data_cfg.cache_dir if cache_dir is None else cache_dir
        media = data_cfg.media if media is None else media
    # Only the scored split gets features (extraction is the slow part), cached apart from the
    # training cache of the same file, which holds exactly the whole corpus.
    corpus = attach_model_features(dataclasses.replace(corpus, dialogues=dialogues), manifest,
                                   str(Path(cache_dir) / f"eval-{split}"), media=media)
    dialogues = corpus.split(split)
    check_features(dialogues, manifest, source=data)
    probs = be.predict(dialogues)
    y_true = np.concatenate([d.labels for d in dialogues])
    y_pred = np.concatenate([p.argmax(axis=1) for p in probs])
    report = score(y_true, y_pred, manifest.labels, shift=dialogue_shifts(dialogues)).to_dict()
    report.update({"model": str(model), "model_name": manifest.name, "backend": be.name, "data": str(data),
                   "split": split, "dialogues": len(dialogues)})
    return Evaluation(report, list(dialogues), [np.asarray(p) for p in probs], list(manifest.labels))


def evaluate(model: str, data: str, split: str, backend: "str | Backend" = "torch", cache_dir: str | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Score ``model`` on ``split`` of ``data``; returns the JSON report (percent figures)."""
    return evaluate_split(model, data, split, backend, cache_dir, device).report
