"""Small synthetic corpus pickles in the community layouts, for tests.

Each ``make_*`` returns a :class:`Synthetic` (the unpickled object plus what a loader should
find); each ``write_*`` also pickles it to ``path``. Layouts follow train/data's modules
(cosmic.py, dialoguernn.py, mmgcn.py), which cite the published loaders.

    from tests.synthetic_pickles import write_mmgcn_iemocap
    syn = write_mmgcn_iemocap(tmp_path / "IEMOCAP_features.pkl", n_dialogues=10,
                              dims={"text": 16, "audio": 24, "visual": 8}, seed=0)
    syn.labels["d003"], syn.features["d003"]["audio"]     # (n,) int64, (n, 24) float32

``feature_fn(rng, modality, labels, dim) -> (n, dim)`` replaces the default Gaussian noise, e.g.
to make features that carry the label. Sentences contain one cp1252 apostrophe (``'\\x92'``) so
text repair is exercised.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

IEMOCAP_N_LABELS = 6
MELD_N_LABELS = 7
MELD_N_SENTIMENTS = 3
MELD_N_SPEAKERS = 9

# Dimensions of the published feature files (MMGCN train.py feat2dim; RoBERTa-large CLS for COSMIC).
IEMOCAP_DIMS = {"text": 100, "audio": 1582, "visual": 342}
MELD_DIMS = {"text": 600, "audio": 300, "visual": 342}
ROBERTA_DIM = 1024

FeatureFn = Callable[[np.random.Generator, str, np.ndarray, int], np.ndarray]


@dataclass
class Synthetic:
    """A synthetic corpus: the pickled object and the ground truth a loader must reproduce."""

    obj: list
    dataset: str
    train_ids: list
    valid_ids: list  # empty for layouts without validation ids
    test_ids: list
    labels: dict[Any, np.ndarray] = field(default_factory=dict)
    sentiments: dict[Any, np.ndarray] = field(default_factory=dict)
    speakers: dict[Any, list] = field(default_factory=dict)
    sentences: dict[Any, list[str]] = field(default_factory=dict)
    features: dict[Any, dict[str, np.ndarray]] = field(default_factory=dict)
    path: Path | None = None

    @property
    def ids(self) -> list:
        return self.train_ids + self.valid_ids + self.test_ids

    def utterances(self, ids: list | None = None) -> int:
        return sum(len(self.labels[i]) for i in (self.ids if ids is None else ids))


def write_pickle(path: str | Path, obj: Any, protocol: int = 4) -> Path:
    """Pickle ``obj`` to ``path`` (protocol 2 mimics the Python-2-era community files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def _generate(dataset: str, n_dialogues: int, n_valid: int, n_test: int, seed: int, min_len: int, max_len: int,
              dims: dict[str, int], feature_fn: FeatureFn | None, int_ids: bool) -> Synthetic:
    if n_dialogues < 1 + n_valid + n_test:
        raise ValueError("n_dialogues must exceed n_valid + n_test")
    rng = np.random.default_rng(seed)
    meld = dataset == "meld"
    ids = list(range(n_dialogues)) if int_ids else [f"d{i:03d}" for i in range(n_dialogues)]
    n_train = n_dialogues - n_valid - n_test
    syn = Synthetic(obj=[], dataset=dataset, train_ids=ids[:n_train], valid_ids=ids[n_train:n_train + n_valid],
                    test_ids=ids[n_train + n_valid:])
    for k, did in enumerate(ids):
        n = int(rng.integers(min_len, max_len + 1))
        labels = rng.integers(0, MELD_N_LABELS if meld else IEMOCAP_N_LABELS, size=n).astype(np.int64)
        syn.labels[did] = labels
        if meld:
            syn.sentiments[did] = rng.integers(0, MELD_N_SENTIMENTS, size=n).astype(np.int64)
            syn.speakers[did] = [int(s) for s in rng.integers(0, 3, size=n)]
        else:
            syn.speakers[did] = [str(s) for s in rng.choice(["M", "F"], size=n)]
        syn.sentences[did] = [f"utterance {j} of dialogue {did}" + (" it\x92s" if k == 0 and j == 0 else "")
                              for j in range(n)]
        feats = {}
        for mod, dim in dims.items():
            arr = feature_fn(rng, mod, labels, dim) if feature_fn else rng.standard_normal((n, dim))
            feats[mod] = np.asarray(arr, dtype=np.float32)
        syn.features[did] = feats
    return syn


def _one_hot(speakers: list[int]) -> list[list[int]]:
    return [[1 if j == s else 0 for j in range(MELD_N_SPEAKERS)] for s in speakers]


def _per_dialogue(syn: Synthetic, fn: Callable[[Any], Any]) -> dict:
    return {did: fn(did) for did in syn.ids}


def _feature_field(syn: Synthetic, mod: str, form: str) -> dict:
    if form == "list":  # list of 1-D arrays, as the DialogueRNN-era pickles store them
        return _per_dialogue(syn, lambda d: [row.copy() for row in syn.features[d][mod]])
    if form == "array":
        return _per_dialogue(syn, lambda d: syn.features[d][mod].copy())
    raise ValueError(f"feature_form must be 'list' or 'array', not {form!r}")


def _ids(ids: list, as_set: bool):
    return set(ids) if as_set else list(ids)


# --- COSMIC (conv-emotion COSMIC/feature-extraction) -------------------------------------------

def make_cosmic_iemocap(n_dialogues: int = 8, n_valid: int = 1, n_test: int = 2, seed: int = 0,
                        min_len: int = 2, max_len: int = 8) -> Synthetic:
    """[speakers, labels, sentences, train_ids, test_ids, valid_ids]."""
    syn = _generate("iemocap", n_dialogues, n_valid, n_test, seed, min_len, max_len, {}, None, False)
    syn.obj = [dict(syn.speakers), _per_dialogue(syn, lambda d: syn.labels[d].tolist()), dict(syn.sentences),
               list(syn.train_ids), list(syn.test_ids), list(syn.valid_ids)]
    return syn


def make_cosmic_meld(n_dialogues: int = 8, n_valid: int = 1, n_test: int = 2, seed: int = 0,
                     min_len: int = 2, max_len: int = 8) -> Synthetic:
    """[speakers (one-hot 9), emotion, sentiment, sentences, train_ids, test_ids, valid_ids]."""
    syn = _generate("meld", n_dialogues, n_valid, n_test, seed, min_len, max_len, {}, None, True)
    syn.obj = [_per_dialogue(syn, lambda d: _one_hot(syn.speakers[d])),
               _per_dialogue(syn, lambda d: syn.labels[d].tolist()),
               _per_dialogue(syn, lambda d: syn.sentiments[d].tolist()), dict(syn.sentences),
               list(syn.train_ids), list(syn.test_ids), list(syn.valid_ids)]
    return syn


def make_cosmic_roberta_iemocap(n_dialogues: int = 8, n_valid: int = 1, n_test: int = 2, seed: int = 0,
                                dim: int = ROBERTA_DIM, min_len: int = 2, max_len: int = 8,
                                feature_fn: FeatureFn | None = None) -> Synthetic:
    """[speakers, labels, roberta1..4, sentences, train_ids, test_ids, valid_ids]; roberta1 = text."""
    syn = _generate("iemocap", n_dialogues, n_valid, n_test, seed, min_len, max_len, {"text": dim}, feature_fn, False)
    r1 = _feature_field(syn, "text", "list")
    other = _per_dialogue(syn, lambda d: [np.zeros(dim, np.float32)] * len(syn.labels[d]))
    syn.obj = [dict(syn.speakers), _per_dialogue(syn, lambda d: syn.labels[d].tolist()), r1, other, other, other,
               dict(syn.sentences), list(syn.train_ids), list(syn.test_ids), list(syn.valid_ids)]
    return syn


def make_cosmic_roberta_meld(n_dialogues: int = 8, n_valid: int = 1, n_test: int = 2, seed: int = 0,
                             dim: int = ROBERTA_DIM, min_len: int = 2, max_len: int = 8,
                             feature_fn: FeatureFn | None = None) -> Synthetic:
    """[speakers, emotion, sentiment, roberta1..4, sentences, train_ids, test_ids, valid_ids]."""
    syn = _generate("meld", n_dialogues, n_valid, n_test, seed, min_len, max_len, {"text": dim}, feature_fn, True)
    r1 = _feature_field(syn, "text", "list")
    other = _per_dialogue(syn, lambda d: [np.zeros(dim, np.float32)] * len(syn.labels[d]))
    syn.obj = [_per_dialogue(syn, lambda d: _one_hot(syn.speakers[d])),
               _per_dialogue(syn, lambda d: syn.labels[d].tolist()),
               _per_dialogue(syn, lambda d: syn.sentiments[d].tolist()), r1, other, other, other,
               dict(syn.sentences), list(syn.train_ids), list(syn.test_ids), list(syn.valid_ids)]
    return syn


# --- DialogueRNN / bc-LSTM, MMGCN / MM-DFN / M3Net -------------------------------------------

def make_dialoguernn_iemocap(n_dialogues: int = 12, n_test: int = 3, seed: int = 0,
                             dims: dict[str, int] | None = None, feature_form: str = "list",
                             ids_as_set: bool = False, min_len: int = 2, max_len: int = 8,
                             feature_fn: FeatureFn | None = None) -> Synthetic:
    """[videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence,
    trainVid, testVid]. Train and test only; ``dims`` needs text, audio and visual."""
    dims = dict(dims or IEMOCAP_DIMS)
    syn = _generate("iemocap", n_dialogues, 0, n_test, seed, min_len, max_len, dims, feature_fn, False)
    syn.obj = [_per_dialogue(syn, lambda d: [f"{d}_u{j}" for j in range(len(syn.labels[d]))]),
               dict(syn.speakers), _per_dialogue(syn, lambda d: syn.labels[d].tolist()),
               _feature_field(syn, "text", feature_form), _feature_field(syn, "audio", feature_form),
               _feature_field(syn, "visual", feature_form), dict(syn.sentences),
               _ids(syn.train_ids, ids_as_set), _ids(syn.test_ids, ids_as_set)]
    return syn


def make_mmgcn_iemocap(**kw: Any) -> Synthetic:
    """MMGCN / MM-DFN / M3Net ``IEMOCAP_features.pkl``: DialogueRNN's IEMOCAP layout."""
    return make_dialoguernn_iemocap(**kw)


def make_dialoguernn_meld(n_dialogues: int = 12, n_test: int = 3, seed: int = 0,
                          dims: dict[str, int] | None = None, feature_form: str = "list",
                          ids_as_set: bool = False, min_len: int = 2, max_len: int = 8,
                          feature_fn: FeatureFn | None = None) -> Synthetic:
    """[videoIDs, videoSpeakers, emotion, videoText, videoAudio, videoSentence, trainVid, testVid,
    sentiment]. No visual field; ``dims`` needs text and audio."""
    dims = dict(dims or {"text": MELD_DIMS["text"], "audio": MELD_DIMS["audio"]})
    syn = _generate("meld", n_dialogues, 0, n_test, seed, min_len, max_len, dims, feature_fn, True)
    syn.obj = [_per_dialogue(syn, lambda d: [f"{d}_{j}" for j in range(len(syn.labels[d]))]),
               _per_dialogue(syn, lambda d: _one_hot(syn.speakers[d])),
               _per_dialogue(syn, lambda d: syn.labels[d].tolist()),
               _feature_field(syn, "text", feature_form), _feature_field(syn, "audio", feature_form),
               dict(syn.sentences), _ids(syn.train_ids, ids_as_set), _ids(syn.test_ids, ids_as_set),
               _per_dialogue(syn, lambda d: syn.sentiments[d].tolist())]
    return syn


def make_mmgcn_meld(n_dialogues: int = 12, n_test: int = 3, seed: int = 0,
                    dims: dict[str, int] | None = None, feature_form: str = "list",
                    ids_as_set: bool = False, min_len: int = 2, max_len: int = 8,
                    feature_fn: FeatureFn | None = None) -> Synthetic:
    """[videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence,
    trainVid, testVid, <unused>]."""
    dims = dict(dims or MELD_DIMS)
    syn = _generate("meld", n_dialogues, 0, n_test, seed, min_len, max_len, dims, feature_fn, True)
    syn.obj = [_per_dialogue(syn, lambda d: [f"{d}_{j}" for j in range(len(syn.labels[d]))]),
               _per_dialogue(syn, lambda d: _one_hot(syn.speakers[d])),
               _per_dialogue(syn, lambda d: syn.labels[d].tolist()),
               _feature_field(syn, "text", feature_form), _feature_field(syn, "audio", feature_form),
               _feature_field(syn, "visual", feature_form), dict(syn.sentences),
               _ids(syn.train_ids, ids_as_set), _ids(syn.test_ids, ids_as_set),
               _per_dialogue(syn, lambda d: syn.sentiments[d].tolist())]
    return syn


def _writer(make: Callable[..., Synthetic]) -> Callable[..., Synthetic]:
    def write(path: str | Path, protocol: int = 4, **kw: Any) -> Synthetic:
        syn = make(**kw)
        syn.path = write_pickle(path, syn.obj, protocol=protocol)
        return syn

    write.__name__ = make.__name__.replace("make_", "write_")
    write.__doc__ = f"Write :func:`{make.__name__}`'s pickle to ``path``; same keyword arguments, plus ``protocol``."
    return write


write_cosmic_iemocap = _writer(make_cosmic_iemocap)
write_cosmic_meld = _writer(make_cosmic_meld)
write_cosmic_roberta_iemocap = _writer(make_cosmic_roberta_iemocap)
write_cosmic_roberta_meld = _writer(make_cosmic_roberta_meld)
write_dialoguernn_iemocap = _writer(make_dialoguernn_iemocap)
write_dialoguernn_meld = _writer(make_dialoguernn_meld)
write_mmgcn_iemocap = _writer(make_mmgcn_iemocap)
write_mmgcn_meld = _writer(make_mmgcn_meld)

# layout name (as train.data.load.LAYOUTS) -> maker
MAKERS: dict[str, Callable[..., Synthetic]] = {
    "cosmic-iemocap": make_cosmic_iemocap,
    "cosmic-meld": make_cosmic_meld,
    "cosmic-roberta-iemocap": make_cosmic_roberta_iemocap,
    "cosmic-roberta-meld": make_cosmic_roberta_meld,
    "dialoguernn-iemocap": make_dialoguernn_iemocap,
    "dialoguernn-meld": make_dialoguernn_meld,
    "mmgcn-meld": make_mmgcn_meld,
}
