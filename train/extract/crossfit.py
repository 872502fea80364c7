"""Cross-fitted training features of a fine-tuned text encoder (``crossfit.npz``) and their use.

A fine-tuned encoder has learned the labels of its training utterances, so its features of them
separate the emotions better than its features of anything it never saw (validation, live). A
graph model trained on them learns to trust the text more than it should. Cross-fitting
(``train.crossfit_folds`` of an encoder config, :mod:`train.encoder_tuning.loop`) embeds each
training utterance with an encoder trained without that utterance's fold of dialogues.

``crossfit.npz`` is a :class:`~train.features.cache.FeatureFile` of the training dialogues only,
under the identity of the finished encoder (whose features it stands in for) and with the
content keys :func:`train.extract.text_keys` gives, so a changed transcript is noticed. Rows of
utterances the encoder did not train on (unlabelled, blank) are NaN: those keep the encoder's own
features, which saw no label of theirs.

A graph config names it as ``data.crossfit: {text: PATH}``; :func:`apply_crossfit` then replaces
the extractor's features of every training dialogue before training.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from train.common import InputError, python_m
from train.features.base import ExtractorIdentity
from train.features.cache import FeatureFile

log = logging.getLogger(__name__)


def write_crossfit(path: str | Path, corpus, identity: ExtractorIdentity, where: Sequence[tuple[str, int]], embeddings: np.ndarray,
                   context_turns: int, info: Mapping[str, Any]) -> Path:
    """Save out-of-fold ``embeddings`` ((n, dim), row r for utterance ``where[r]`` = (dialogue id,
    index)) of the training split as a crossfit file; ``info`` (folds, seed, ...) goes into its meta."""
    from train.extract import text_keys

    if embeddings.shape != (len(where), identity.dim) or np.isnan(embeddings).all(axis=1).any():
        raise ValueError(f"need {len(where)} finished rows of {identity.dim} features, got {embeddings.shape} with missing rows")
    rows: dict[str, list[tuple[int, int]]] = {}
    for r, (did, i) in enumerate(where):
        rows.setdefault(did, []).append((i, r))
    features, keys = {}, {}
    for d in corpus.split("train"):
        arr = np.full((len(d), identity.dim), np.nan, dtype=np.float32)
        for i, r in rows.get(d.id, []):
            arr[i] = embeddings[r]
        features[d.id], keys[d.id] = arr, text_keys(d, context_turns)
    meta = {"dataset": corpus.dataset, "source": str(corpus.source), "modality": identity.modality, "split": "train",
            "context_turns": int(context_turns), "crossfit": dict(info)}
    return FeatureFile(identity, features, keys, meta).save(path)


def apply_crossfit(corpus, modality: str, path: str | Path, identity: ExtractorIdentity) -> int:
    """Replace ``dialogue.features[modality]`` of every training dialogue with the crossfit rows of
    ``path`` (made for the extractor ``identity``); returns how many rows were replaced."""
    from train.extract import text_keys

    if not Path(path).is_file():
        raise InputError(f"cross-fitted features not found (data.crossfit.{modality}); {python_m('train.finetune')} writes them "
                         "as crossfit.npz beside the encoder when its config sets train.crossfit_folds", path=str(path))
    ff = FeatureFile.load(path)
    if ff.identity != identity:
        raise InputError(f"cross-fitted features of {ff.identity.name} ({ff.identity.version}), but data.extractors.{modality} gives "
                         f"{identity.name} ({identity.version}); use the crossfit.npz its fine-tune wrote", path=str(path))
    if ff.meta.get("split") != "train" or "context_turns" not in ff.meta:
        raise InputError(f"not a crossfit file (written by {python_m('train.finetune')} with train.crossfit_folds)", path=str(path))
    turns = int(ff.meta["context_turns"])
    replaced = 0
    for d in corpus.split("train"):
        if d.id not in ff.features:
            raise InputError("the crossfit file has no features for this training dialogue; it was made from another corpus", path=str(path), dialogue=d.id)
        if ff.keys[d.id] != text_keys(d, turns):
            raise InputError("the transcripts of this dialogue differ from those the crossfit features were made from", path=str(path), dialogue=d.id)
        if modality not in d.features:
            raise InputError(f"no {modality} features to replace (extract them first)", dialogue=d.id)
        rows = ~np.isnan(ff.features[d.id]).all(axis=1)
        d.features[modality] = d.features[modality].copy()
        d.features[modality][rows] = ff.features[d.id][rows]
        replaced += int(rows.sum())
    log.info("%s: cross-fitted features (%s folds) for %d training utterances from %s", modality, ff.meta.get("crossfit", {}).get("folds", "?"), replaced, path)
    return replaced
