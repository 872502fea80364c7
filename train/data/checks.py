"""Turning one stored conversation into a checked :class:`Dialogue`, and the split rules.

Every loader goes through :func:`make_dialogue`, so every format gets the same checks: matching
lengths, known label ids, finite float32 ``(n, d)`` features, repaired text. Errors are
:class:`InputError` naming the file, the dialogue and the problem.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from train.data.corpus import Dialogue
from train.data.text import fix_text
from train.common import InputError

VALID_FRACTION = 0.1  # the field's convention: first 10% of train dialogues become validation


def _is_seq(x: Any) -> bool:
    return isinstance(x, (list, tuple, np.ndarray))


def speaker_name(raw: Any, i: int, *, path: str, dialogue: str) -> str:
    """A speaker as a string: names pass through; one-hot vectors become ``spk<index>``."""
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    if isinstance(raw, str):
        return fix_text(raw)
    if isinstance(raw, numbers.Integral) and not isinstance(raw, bool):
        return f"spk{int(raw)}"
    if _is_seq(raw):
        try:
            v = np.asarray(raw, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            v = None
        if v is not None and v.size and np.all((v == 0) | (v == 1)) and v.sum() == 1:
            return f"spk{int(np.argmax(v))}"
    raise InputError(f"speaker at utterance {i} is neither a name nor a one-hot vector: {str(raw)[:60]!r}",
                     path=path, dialogue=dialogue)


def class_ids(raw: Any, n_classes: int, what: str, names: Sequence[str], *, path: str, dialogue: str) -> np.ndarray:
    """(n,) int64 class ids, each in ``0..n_classes-1`` (or -1 = unlabelled)."""
    if not _is_seq(raw):
        raise InputError(f"{what} labels are a {type(raw).__name__}, not a list", path=path, dialogue=dialogue)
    out = np.empty(len(raw), dtype=np.int64)
    for i, v in enumerate(raw):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise InputError(f"{what} label at utterance {i} is not a class id: {v!r}", path=path, dialogue=dialogue)
        if isinstance(v, numbers.Integral):
            iv = int(v)
        elif float(v).is_integer():
            iv = int(v)
        else:
            raise InputError(f"{what} label at utterance {i} is {v!r}, not an integer class id "
                             "(regression labels such as AVEC's are not supported)", path=path, dialogue=dialogue)
        if not (-1 <= iv < n_classes):
            raise InputError(f"unknown {what} label id {iv} at utterance {i}; expected 0..{n_classes - 1} "
                             f"({', '.join(names)})", path=path, dialogue=dialogue)
        out[i] = iv
    return out


def feature_matrix(raw: Any, modality: str, *, path: str, dialogue: str) -> np.ndarray:
    """(n, d) float32 from a 2-D array or a list of 1-D vectors; finite values, or missing rows.

    A row that is entirely NaN, or entirely 0 (the community files' zero-fill for a modality an
    utterance lacks; no real openSMILE/CNN/face vector is exactly 0 everywhere), is a missing
    modality: it comes back as a NaN row, the project's "nothing extracted" (masked out of the
    graph, :mod:`train.batch`). Any other non-finite value is an error.
    """
    if isinstance(raw, np.ndarray) and raw.ndim == 2:
        arr = raw
    elif _is_seq(raw):
        rows = []
        for i, r in enumerate(raw):
            if not _is_seq(r) and not isinstance(r, np.ndarray):
                raise InputError(f"{modality} features at utterance {i} are a {type(r).__name__}, not a vector",
                                 path=path, dialogue=dialogue)
            rows.append(np.asarray(r).reshape(-1) if np.ndim(r) <= 1 else None)
            if rows[-1] is None:
                raise InputError(f"{modality} features at utterance {i} have shape {np.shape(r)}, not a vector",
                                 path=path, dialogue=dialogue)
        dims = {r.shape[0] for r in rows}
        if len(dims) > 1:
            raise InputError(f"{modality} feature vectors differ in size within the dialogue: {sorted(dims)}",
                             path=path, dialogue=dialogue)
        arr = np.stack(rows) if rows else np.zeros((0, 0))
    else:
        raise InputError(f"{modality} features are a {type(raw).__name__}, not a list of vectors or a 2-D array",
                         path=path, dialogue=dialogue)
    try:
        arr = np.asarray(arr, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{modality} features are not numeric", path=path, dialogue=dialogue) from None
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise InputError(f"{modality} features have shape {arr.shape}, expected (utterances, dim)",
                         path=path, dialogue=dialogue)
    missing = np.isnan(arr).all(axis=1) | (arr == 0).all(axis=1)
    bad = ~np.isfinite(arr) & ~missing[:, None]
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(arr[i, j]) else "inf"
        raise InputError(f"{modality} features hold {int(bad.sum())} non-finite values (first: {kind} at "
                         f"utterance {i}, component {j})", path=path, dialogue=dialogue)
    if missing.any():
        arr = arr.copy()
        arr[missing] = np.nan
    return np.ascontiguousarray(arr)


def make_dialogue(
    did: Any,
    split: str,
    *,
    path: str,
    speakers: Any,
    labels: Any,
    label_names: Sequence[str],
    texts: Any = None,
    sentiments: Any = None,
    sentiment_names: Sequence[str] | None = None,
    features: Mapping[str, Any] | None = None,
    stats: dict[str, int] | None = None,
) -> Dialogue:
    """Build and check one :class:`Dialogue`; every per-utterance field must have the same length.

    ``stats["repaired_texts"]``, when ``stats`` is given, counts sentences whose text was repaired.
    """
    name = str(did)
    if not _is_seq(speakers):
        raise InputError(f"speakers are a {type(speakers).__name__}, not a list", path=path, dialogue=name)
    n = len(speakers)
    if n == 0:
        raise InputError("dialogue has no utterances", path=path, dialogue=name)
    spk = [speaker_name(s, i, path=path, dialogue=name) for i, s in enumerate(speakers)]
    lab = class_ids(labels, len(label_names), "emotion", label_names, path=path, dialogue=name)
    if len(lab) != n:
        raise InputError(f"{len(lab)} labels but {n} speakers", path=path, dialogue=name)
    txt = None
    if texts is not None:
        if not _is_seq(texts):
            raise InputError(f"sentences are a {type(texts).__name__}, not a list", path=path, dialogue=name)
        if len(texts) != len(lab):
            raise InputError(f"{len(lab)} labels but {len(texts)} sentences", path=path, dialogue=name)
        txt = []
        for i, t in enumerate(texts):
            if isinstance(t, bytes):
                t = t.decode("latin-1")
            if not isinstance(t, str):
                raise InputError(f"sentence at utterance {i} is a {type(t).__name__}, not text", path=path, dialogue=name)
            fixed = fix_text(t)
            if stats is not None and fixed != t:
                stats["repaired_texts"] = stats.get("repaired_texts", 0) + 1
            txt.append(fixed)
    sen = None
    if sentiments is not None:
        assert sentiment_names is not None
        sen = class_ids(sentiments, len(sentiment_names), "sentiment", sentiment_names, path=path, dialogue=name)
        if len(sen) != n:
            raise InputError(f"{len(sen)} sentiment labels but {n} emotion labels", path=path, dialogue=name)
    feats: dict[str, np.ndarray] = {}
    for mod, raw in (features or {}).items():
        arr = feature_matrix(raw, mod, path=path, dialogue=name)
        if arr.shape[0] != n:
            raise InputError(f"{arr.shape[0]} {mod} feature rows but {n} labels", path=path, dialogue=name)
        feats[mod] = arr
        if stats is not None:
            lost = int(np.isnan(arr[:, 0]).sum())
            if lost:
                stats[f"missing_{mod}"] = stats.get(f"missing_{mod}", 0) + lost
    return Dialogue(id=name, split=split, speakers=spk, labels=lab, texts=txt, sentiments=sen, features=feats)


def repair_note(stats: dict[str, int]) -> list[str]:
    """The summary notes for :func:`make_dialogue`'s counts: repaired texts, missing feature rows."""
    n = stats.get("repaired_texts", 0)
    notes = [f"repaired cp1252/mojibake characters in {n} sentence{'s' if n != 1 else ''} (e.g. '\\x92' -> '’')"] if n else []
    for key in sorted(k for k in stats if k.startswith("missing_")):
        notes.append(f"{stats[key]} {key[len('missing_'):]} feature row(s) are all zero or all NaN: that modality is "
                     "missing there (masked out of the graph)")
    return notes


def check_feature_dims(dialogues: Sequence[Dialogue], path: str) -> None:
    """Every dialogue carries the same modalities, each with one dimension across the corpus."""
    first: dict[str, tuple[int, str]] = {}
    for d in dialogues:
        for mod, arr in d.features.items():
            dim = int(arr.shape[1])
            if mod not in first:
                first[mod] = (dim, d.id)
            elif dim != first[mod][0]:
                raise InputError(f"{mod} features are {dim}-d but dialogue {first[mod][1]!r} has "
                                 f"{first[mod][0]}-d ones (wrong feature dimension)", path=path, dialogue=d.id)
    for d in dialogues:
        missing = sorted(set(first) - set(d.features))
        if missing:
            raise InputError(f"no {', '.join(missing)} features (other dialogues have them)", path=path, dialogue=d.id)


def id_list(container: Any, what: str, path: str, notes: list[str]) -> list:
    """Dialogue ids in stored order; a set (whose order is not stable) is sorted, with a note."""
    if container is None:
        return []
    if isinstance(container, (set, frozenset)):
        try:
            ids = sorted(container)
        except TypeError:
            ids = sorted(container, key=repr)
        if ids:
            notes.append(f"{what} ids are stored as a set (no stable order); sorted them")
        return ids
    if isinstance(container, np.ndarray):
        return container.tolist()
    if isinstance(container, (list, tuple)):
        return list(container)
    raise InputError(f"{what} ids are a {type(container).__name__}, not a list or set of dialogue ids", path=path)


def n_carved_valid(n_train: int) -> int:
    """How many of ``n_train`` train dialogues become validation when a file has none."""
    k = int(VALID_FRACTION * n_train)
    return 1 if k == 0 and n_train >= 2 else k


def assign_splits(train: list, valid: list | None, test: list, path: str, notes: list[str]) -> list[tuple[Any, str]]:
    """(dialogue id, split) pairs in order train, valid, test.

    With no validation ids, the first 10% of train dialogues in stored order become validation
    (the field's ``SubsetRandomSampler(idx[:int(0.1 * n)])`` convention; at least one when there
    are two or more train dialogues), and a note says so.
    """
    if not valid and train:
        k = n_carved_valid(len(train))
        if k:
            valid, train = train[:k], train[k:]
            notes.append(f"no validation split in the file: the first {k} of {k + len(train)} train dialogues "
                         f"in stored order are validation (the field's 10% convention)")
    valid = valid or []
    seen: dict[Any, str] = {}
    out = []
    for split, ids in (("train", train), ("valid", valid), ("test", test)):
        for i in ids:
            if i in seen:
                raise InputError(f"listed in both the {seen[i]} and the {split} ids" if seen[i] != split
                                 else f"listed twice in the {split} ids", path=path, dialogue=str(i))
            seen[i] = split
            out.append((i, split))
    return out


def lookup(table: Mapping, did: Any, field: str, split: str, path: str) -> Any:
    """``table[did]``, or an InputError saying which field lacks the dialogue."""
    try:
        return table[did]
    except (KeyError, TypeError):
        raise InputError(f"listed in the {split} ids but missing from {field}", path=path, dialogue=str(did)) from None
