"""``load_corpus``: recognise a file's layout, read it, check it.

Recognised inputs (see each module for the published source of its layout):

=====================  ======  ==========================================================
layout                 fields  module
=====================  ======  ==========================================================
cosmic-iemocap         6       :mod:`train.data.cosmic`
cosmic-meld            7       :mod:`train.data.cosmic`
cosmic-roberta-iemocap 10      :mod:`train.data.cosmic` (10th field is a list of ids)
cosmic-roberta-meld    11      :mod:`train.data.cosmic`
dialoguernn-iemocap    9       :mod:`train.data.dialoguernn` (6th field: visual features)
dialoguernn-meld       9       :mod:`train.data.dialoguernn` (6th field: sentences)
mmgcn-meld             10      :mod:`train.data.mmgcn` (10th field is not a list of ids)
MELD *_sent_emo.csv    -       :mod:`train.data.meld_csv` (a .csv file or a directory)
=====================  ======  ==========================================================
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from train.data import cosmic, dialoguernn, meld_csv, mmgcn
from train.data.checks import check_feature_dims
from train.data.corpus import Corpus
from train.data.safe_pickle import load_pickle
from train.common import InputError

log = logging.getLogger(__name__)

DATASETS = ("iemocap", "meld")

# layout -> (dataset, field names, reader)
LAYOUTS: dict[str, tuple[str, tuple[str, ...], Any]] = {}
for _name, (_ds, _fields) in cosmic.LAYOUTS.items():
    LAYOUTS[_name] = (_ds, _fields, cosmic.read_cosmic)
for _name, (_ds, _fmt, _fields) in dialoguernn.LAYOUTS.items():
    LAYOUTS[_name] = (_ds, _fields, dialoguernn.read_dialoguernn)
for _name, (_ds, _fmt, _fields) in mmgcn.LAYOUTS.items():
    LAYOUTS[_name] = (_ds, _fields, mmgcn.read_mmgcn)

_KNOWN = ("COSMIC (6 or 7 fields; 10 or 11 with RoBERTa features), DialogueRNN/bc-LSTM (9), "
          "MMGCN/MM-DFN/M3Net MELD (10), or a MELD *_sent_emo.csv")


def _is_ids(x: Any) -> bool:
    return isinstance(x, (list, tuple, set, frozenset)) or (isinstance(x, np.ndarray) and x.ndim == 1)


def _first_value(d: Any) -> Any:
    if isinstance(d, Mapping) and d:
        return next(iter(d.values()))
    return None


def _holds_sentences(d: Any) -> bool:
    v = _first_value(d)
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(s, (str, bytes)) for s in v)


def detect_layout(obj: Any, path: str) -> str:
    """The name of ``obj``'s layout (a key of :data:`LAYOUTS`), or an InputError."""
    if not isinstance(obj, (list, tuple)):
        raise InputError(f"wrong layout: the pickle holds a {type(obj).__name__}, not a list of fields; "
                         f"expected {_KNOWN}", path=path)
    n = len(obj)
    if n == 6:
        layout = "cosmic-iemocap"
    elif n == 7:
        layout = "cosmic-meld"
    elif n == 11:
        layout = "cosmic-roberta-meld"
    elif n == 9:
        layout = "dialoguernn-meld" if _holds_sentences(obj[5]) else "dialoguernn-iemocap"
    elif n == 10:
        layout = "cosmic-roberta-iemocap" if _is_ids(obj[9]) else "mmgcn-meld"
    else:
        raise InputError(f"wrong layout: a list of {n} fields; expected {_KNOWN}", path=path)
    _, fields, _ = LAYOUTS[layout]
    for i, (name, value) in enumerate(zip(fields, obj)):
        if name == "unused":
            continue
        if name.endswith("_ids") or name.endswith("Vid"):
            ok, want = _is_ids(value), "a list or set of dialogue ids"
        else:
            ok, want = isinstance(value, Mapping), "a dict keyed by dialogue id"
        if not ok:
            raise InputError(f"wrong layout: a list of {n} fields looks like {layout}, but field {i} ({name}) is a "
                             f"{type(value).__name__}, not {want}", path=path)
    return layout


def _check_dataset(dataset: str | None, found: str, layout: str, path: str) -> None:
    if dataset is not None and dataset != found:
        raise InputError(f"dataset {dataset!r} requested, but the file is a {found} file ({layout} layout)", path=path)


def load_corpus(path: str | Path, dataset: str | None = None) -> Corpus:
    """Load any supported corpus file (or MELD CSV directory) into a checked :class:`Corpus`.

    Args:
        path: a pickle in one of the layouts above, a MELD ``*_sent_emo.csv``, or a directory of them.
        dataset: "iemocap" or "meld" to insist on; None accepts what the file is.

    Raises:
        InputError: missing file, unknown layout, a refused pickle global, mismatched lengths,
            unknown label ids, inconsistent feature dimensions, NaN/inf features, a dataset
            other than ``dataset``. The message names the file and, where there is one, the dialogue.
    """
    p = Path(path)
    src = str(path)
    if dataset is not None:
        dataset = dataset.strip().lower()
        if dataset not in DATASETS:
            raise InputError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}", path=src)
    if not p.exists():
        raise InputError("no such file or directory", path=src)
    if p.is_dir() or p.suffix.lower() == ".csv":
        _check_dataset(dataset, "meld", "meld-csv", src)
        corpus = meld_csv.read_meld_csv(p)
    else:
        obj = load_pickle(p)
        layout = detect_layout(obj, src)
        found, _, reader = LAYOUTS[layout]
        _check_dataset(dataset, found, layout, src)
        corpus = reader(obj, layout, src)
    _finish(corpus, src)
    log.info("loaded %s: %s %s, %d dialogues (%s)", src, corpus.dataset, corpus.format, len(corpus.dialogues),
             ", ".join(f"{s} {len(corpus.split(s))}" for s in ("train", "valid", "test")))
    return corpus


def _finish(corpus: Corpus, path: str) -> None:
    """Corpus-wide checks and the notes a user should see in the summary."""
    if not corpus.dialogues:
        raise InputError("no dialogues in any split", path=path)
    check_feature_dims(corpus.dialogues, path)
    for split in ("valid", "test"):
        if not any(d.split == split for d in corpus.dialogues):
            corpus.notes.append(f"no {split} dialogues in this file")
    unlabelled = sum(int((d.labels < 0).sum()) for d in corpus.dialogues)
    if unlabelled:
        corpus.notes.append(f"{unlabelled} utterance{' carries' if unlabelled == 1 else 's carry'} no emotion label (-1)")
