"""Loaders: the real COSMIC files and MELD CSVs in ../shared/data, synthetic pickles in every
community layout, and one test per class of bad input."""
from __future__ import annotations

import copy
import csv
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests import synthetic_pickles as sp
from train.data import IEMOCAP_LABELS, MELD_LABELS, MELD_SENTIMENTS, load_corpus, summarize
from train.common import InputError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IEMOCAP_PKL = DATA / "iemocap" / "iemocap_trainval.pkl"
MELD_PKL = DATA / "meld" / "meld_trainval.pkl"
MELD_DIR = DATA / "meld"


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} absent: put the shared data beside the repository (../shared/data) to run this test")


def split_counts(corpus):
    s = summarize(corpus)["splits"]
    return {k: (v["dialogues"], v["utterances"]) for k, v in s.items()}


# --- real files --------------------------------------------------------------------------------

def test_real_iemocap_cosmic():
    need(IEMOCAP_PKL)
    c = load_corpus(IEMOCAP_PKL)
    assert (c.dataset, c.format, c.labels) == ("iemocap", "cosmic", IEMOCAP_LABELS)
    counts = split_counts(c)
    assert counts["train"][0] == 108 and counts["valid"][0] == 12 and counts["test"] == (0, 0)
    assert counts["train"][1] + counts["valid"][1] == 5810
    assert set(c.speakers) == {"M", "F"} and c.modalities == {}
    for d in c.dialogues:
        assert d.labels.dtype == np.int64 and len(d.labels) == len(d.texts) == len(d.speakers) > 0
        assert d.labels.min() >= 0 and d.labels.max() < 6
    assert any("no test dialogues" in n for n in c.notes)
    assert not any("repaired" in n for n in c.notes)  # IEMOCAP's transcripts are plain ASCII


def test_real_meld_cosmic_text_repaired():
    need(MELD_PKL)
    c = load_corpus(MELD_PKL)
    assert (c.dataset, c.format, c.labels, c.sentiment_labels) == ("meld", "cosmic", MELD_LABELS, MELD_SENTIMENTS)
    counts = split_counts(c)
    assert counts["train"] == (1038, 9989) and counts["valid"] == (114, 1109) and counts["test"] == (0, 0)
    assert [d.id for d in c.split("valid")][:2] == ["1039", "1040"]
    texts = [t for d in c.dialogues for t in d.texts]
    assert not any("\x80" <= ch <= "\x9f" for t in texts for ch in t)  # no cp1252 bytes left as C1 controls
    assert c.split("train")[0].texts[0].startswith("also I was the point person on my company’s transition")
    assert all(d.sentiments is not None and len(d.sentiments) == len(d) for d in c.dialogues)
    assert len(c.speakers) == 9
    assert any(n.startswith("repaired cp1252/mojibake characters in ") for n in c.notes)


def test_real_meld_csv_agrees_with_cosmic_pickle():
    need(MELD_PKL)
    need(MELD_DIR / "train_sent_emo.csv")
    pkl = {d.id: d for d in load_corpus(MELD_PKL).dialogues}
    csv_corpus = load_corpus(MELD_DIR)
    assert csv_corpus.format == "meld-csv"
    assert split_counts(csv_corpus)["train"] == (1038, 9989) and split_counts(csv_corpus)["valid"] == (114, 1109)
    assert {d.id for d in csv_corpus.dialogues} == set(pkl)  # train = official id, valid = 1039 + dev id
    for d in csv_corpus.dialogues:
        p = pkl[d.id]
        assert d.split == p.split
        assert np.array_equal(d.labels, p.labels) and np.array_equal(d.sentiments, p.sentiments)
        assert [t.replace("\xa0", " ") for t in p.texts] == d.texts
    assert "Chandler" in csv_corpus.speakers


def test_real_meld_single_csv_files():
    need(MELD_DIR / "dev_sent_emo.csv")
    dev = load_corpus(MELD_DIR / "dev_sent_emo.csv")
    assert split_counts(dev)["valid"] == (114, 1109) and split_counts(dev)["train"] == (0, 0)
    train = load_corpus(MELD_DIR / "train_sent_emo.csv")
    assert split_counts(train)["valid"][0] == 103 and split_counts(train)["train"][0] == 1038 - 103
    assert [d.id for d in train.split("valid")][:3] == ["0", "1", "2"]
    assert any("first 103 of 1038" in n for n in train.notes)


# --- synthetic pickles in every layout --------------------------------------------------------

EXPECTED = {  # layout -> (dataset, format, modalities in the file)
    "cosmic-iemocap": ("iemocap", "cosmic", set()),
    "cosmic-meld": ("meld", "cosmic", set()),
    "cosmic-roberta-iemocap": ("iemocap", "cosmic-roberta", {"text"}),
    "cosmic-roberta-meld": ("meld", "cosmic-roberta", {"text"}),
    "dialoguernn-iemocap": ("iemocap", "dialoguernn", {"text", "audio", "visual"}),
    "dialoguernn-meld": ("meld", "dialoguernn", {"text", "audio"}),
    "mmgcn-meld": ("meld", "mmgcn", {"text", "audio", "visual"}),
}


def _small(layout, **kw):
    make = sp.MAKERS[layout]
    if layout.startswith("cosmic-roberta"):
        return make(dim=32, **kw)
    if layout.startswith("cosmic"):
        return make(**kw)
    dims = {"text": 12, "audio": 20, "visual": 8}
    if layout == "dialoguernn-meld":
        dims.pop("visual")
    return make(dims=dims, **kw)


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("layout", sorted(sp.MAKERS))
def test_synthetic_layout_round_trip(tmp_path, layout, protocol):
    syn = _small(layout, seed=3)
    path = sp.write_pickle(tmp_path / f"{layout}.pkl", syn.obj, protocol=protocol)
    c = load_corpus(path)
    dataset, fmt, mods = EXPECTED[layout]
    assert (c.dataset, c.format, c.source) == (dataset, fmt, str(path))
    assert set(c.modalities) == mods
    # the validation split: the file's own, or the first 10% (at least 1) of train in stored order
    if syn.valid_ids:
        train, valid = syn.train_ids, syn.valid_ids
    else:
        k = max(1, int(0.1 * len(syn.train_ids)))
        train, valid = syn.train_ids[k:], syn.train_ids[:k]
        assert any("first 1 of" in n and "10%" in n for n in c.notes)
    assert [d.id for d in c.split("train")] == [str(i) for i in train]
    assert [d.id for d in c.split("valid")] == [str(i) for i in valid]
    assert [d.id for d in c.split("test")] == [str(i) for i in syn.test_ids]
    by_id = {d.id: d for d in c.dialogues}
    for did in syn.ids:
        d = by_id[str(did)]
        assert np.array_equal(d.labels, syn.labels[did]) and d.labels.dtype == np.int64
        if dataset == "meld":
            assert d.speakers == [f"spk{s}" for s in syn.speakers[did]]
            if layout == "mmgcn-meld":  # its 10th field is unnamed in every published loader: not read
                assert d.sentiments is None
            else:
                assert np.array_equal(d.sentiments, syn.sentiments[did])
        else:
            assert d.speakers == syn.speakers[did] and d.sentiments is None
        assert d.texts == [t.replace("\x92", "’") for t in syn.sentences[did]]
        for m in mods:
            assert d.features[m].dtype == np.float32 and d.features[m].flags.c_contiguous
            assert np.array_equal(d.features[m], syn.features[did][m])
    assert any("it’s" in t for d in c.dialogues for t in d.texts)
    assert "repaired cp1252/mojibake characters in 1 sentence (e.g. '\\x92' -> '’')" in c.notes


def test_published_dims_and_array_form(tmp_path):
    """Full-size community dimensions, features stored as 2-D arrays rather than lists of rows."""
    syn = sp.write_mmgcn_iemocap(tmp_path / "IEMOCAP_features.pkl", n_dialogues=4, n_test=1,
                                 feature_form="array", max_len=3)
    assert load_corpus(syn.path).modalities == {"audio": 1582, "text": 100, "visual": 342}
    syn = sp.write_mmgcn_meld(tmp_path / "MELD_features_raw1.pkl", n_dialogues=4, n_test=1, max_len=3)
    assert load_corpus(syn.path, dataset="meld").modalities == {"audio": 300, "text": 600, "visual": 342}


def test_ids_stored_as_set_are_sorted_and_noted(tmp_path):
    syn = sp.make_dialoguernn_iemocap(n_dialogues=25, n_test=3, dims={"text": 4, "audio": 4, "visual": 4},
                                      ids_as_set=True, seed=1)
    c = load_corpus(sp.write_pickle(tmp_path / "s.pkl", syn.obj))
    ordered = sorted(syn.train_ids)
    assert [d.id for d in c.split("valid")] == ordered[:2]  # int(0.1 * 22) = 2
    assert [d.id for d in c.split("train")] == ordered[2:]
    assert any("stored as a set" in n for n in c.notes)
    assert any("first 2 of 22" in n for n in c.notes)


def test_feature_fn_hook(tmp_path):
    def onehot_label(rng, modality, labels, dim):
        out = np.zeros((len(labels), dim))
        out[np.arange(len(labels)), labels] = 1.0
        return out

    syn = sp.write_mmgcn_meld(tmp_path / "m.pkl", dims={"text": 7, "audio": 7, "visual": 7}, feature_fn=onehot_label)
    for d in load_corpus(syn.path).dialogues:
        assert np.array_equal(d.features["audio"].argmax(1), d.labels)


def test_full_cosmic_file_with_test_ids(tmp_path):
    syn = sp.write_cosmic_iemocap(tmp_path / "iemocap.pkl", n_dialogues=10, n_valid=2, n_test=3)
    c = load_corpus(syn.path)
    assert split_counts(c)["test"] == (3, syn.utterances(syn.test_ids))
    assert not any("no test" in n for n in c.notes)


def test_cosmic_empty_valid_ids_carves_validation(tmp_path):
    syn = sp.make_cosmic_meld(n_dialogues=12, n_valid=0, n_test=1)
    c = load_corpus(sp.write_pickle(tmp_path / "m.pkl", syn.obj))
    assert [d.id for d in c.split("valid")] == [str(syn.train_ids[0])]


# --- bad input: one InputError per class, naming file, dialogue and problem -------------------

def _write(tmp_path, obj, name="bad.pkl"):
    return sp.write_pickle(tmp_path / name, obj)


def _fails(path, *needles, dataset=None):
    with pytest.raises(InputError) as e:
        load_corpus(path, dataset=dataset)
    msg = str(e.value)
    assert msg.startswith(str(path)), msg
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def _drnn(**kw):
    return sp.make_dialoguernn_iemocap(dims={"text": 6, "audio": 5, "visual": 4}, **kw)


def test_missing_file(tmp_path):
    _fails(tmp_path / "nope.pkl", "no such file")


@pytest.mark.parametrize("obj,needle", [
    ({"speakers": {}}, "holds a dict, not a list of fields"),
    ([{}, {}, {}], "a list of 3 fields"),
    ([{}] * 8, "a list of 8 fields"),
])
def test_wrong_layout(tmp_path, obj, needle):
    _fails(_write(tmp_path, obj), "wrong layout", needle)


def test_wrong_layout_field_type(tmp_path):
    syn = _drnn()
    syn.obj[4] = [1, 2, 3]  # videoAudio should be a dict
    _fails(_write(tmp_path, syn.obj), "field 4 (videoAudio)", "dialoguernn-iemocap")


def test_dataset_mismatch(tmp_path):
    syn = _drnn()
    _fails(_write(tmp_path, syn.obj), "'meld' requested", "iemocap", dataset="meld")
    _fails(_write(tmp_path, syn.obj), "unknown dataset", dataset="daily")


def test_labels_vs_sentences(tmp_path):
    syn = sp.make_cosmic_iemocap()
    did = syn.train_ids[2]
    syn.obj[2][did] = syn.obj[2][did][:-1]
    n = len(syn.labels[did])
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", f"{n} labels but {n - 1} sentences")


def test_labels_vs_speakers(tmp_path):
    syn = sp.make_cosmic_iemocap()
    did = syn.valid_ids[0]
    syn.obj[1][did] = syn.obj[1][did] + [0]
    n = len(syn.labels[did])
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", f"{n + 1} labels but {n} speakers")


def test_features_vs_labels(tmp_path):
    syn = _drnn()
    did = syn.test_ids[0]
    syn.obj[5][did] = syn.obj[5][did][:-1]  # videoVisual one row short
    n = len(syn.labels[did])
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", f"{n - 1} visual feature rows but {n} labels")


def test_sentiments_vs_labels(tmp_path):
    syn = sp.make_dialoguernn_meld(dims={"text": 4, "audio": 4})
    did = syn.train_ids[1]
    syn.obj[8][did] = syn.obj[8][did] + [1]
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", "sentiment labels but")


def test_wrong_feature_dimension_across_dialogues(tmp_path):
    syn = _drnn()
    did = syn.train_ids[4]
    syn.obj[4][did] = [np.zeros(7, np.float32) for _ in syn.obj[4][did]]  # audio 7-d, others 5-d
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", "audio features are 7-d", "5-d", "wrong feature dimension")


def test_wrong_feature_dimension_within_dialogue(tmp_path):
    syn = _drnn()
    did = syn.train_ids[0]
    syn.obj[3][did][1] = np.zeros(9, np.float32)
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", "text feature vectors differ in size", "[6, 9]")


@pytest.mark.parametrize("value,kind", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_features(tmp_path, value, kind):
    syn = _drnn()
    did = syn.test_ids[1]
    syn.obj[4][did][1][3] = value
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", "audio features hold 1 non-finite",
           f"{kind} at utterance 1, component 3")


@pytest.mark.parametrize("maker,field,bad,needle", [
    (sp.make_cosmic_iemocap, 1, 6, "unknown emotion label id 6"),
    (sp.make_cosmic_meld, 1, 7, "unknown emotion label id 7"),
    (sp.make_cosmic_meld, 2, 3, "unknown sentiment label id 3"),
    (sp.make_cosmic_iemocap, 1, -5, "unknown emotion label id -5"),
    (sp.make_cosmic_iemocap, 1, 0.5, "not an integer class id"),
    (sp.make_cosmic_iemocap, 1, "sad", "not a class id"),
])
def test_unknown_label_ids(tmp_path, maker, field, bad, needle):
    syn = maker()
    did = syn.train_ids[3]
    syn.obj[field][did][2] = bad
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", needle, "utterance 2")


def test_unlabelled_utterances_are_kept_and_noted(tmp_path):
    """-1 is the corpus representation's "no label"; it loads, and the summary says how many."""
    syn = sp.make_cosmic_iemocap()
    did = syn.train_ids[1]
    syn.obj[1][did][0] = -1
    c = load_corpus(_write(tmp_path, syn.obj))
    assert {d.id: d for d in c.dialogues}[did].labels[0] == -1
    assert "1 utterance carries no emotion label (-1)" in c.notes


def test_dialogue_missing_from_a_field(tmp_path):
    syn = _drnn()
    did = syn.train_ids[5]
    del syn.obj[4][did]
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", "listed in the train ids but missing from videoAudio")


def test_dialogue_in_two_splits(tmp_path):
    syn = sp.make_cosmic_iemocap()
    syn.obj[4].append(syn.train_ids[0])  # also in test_ids
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(syn.train_ids[0])!r}", "both the train and the test ids")


def test_bad_speaker_and_empty_dialogue(tmp_path):
    syn = sp.make_cosmic_meld()
    did = syn.train_ids[0]
    syn.obj[0][did][0] = [1, 1, 0, 0, 0, 0, 0, 0, 0]
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", "neither a name nor a one-hot vector")
    syn = sp.make_cosmic_iemocap()
    did = syn.train_ids[0]
    for f in (0, 1, 2):
        syn.obj[f][did] = []
    _fails(_write(tmp_path, syn.obj, "empty.pkl"), f"dialogue {str(did)!r}", "no utterances")


def test_regression_labels_refused(tmp_path):
    """AVEC shares DialogueRNN's IEMOCAP layout but has real-valued labels."""
    syn = _drnn()
    did = syn.train_ids[0]
    syn.obj[2][did] = [0.25] * len(syn.labels[did])
    _fails(_write(tmp_path, syn.obj), f"dialogue {str(did)!r}", "regression labels")


def test_malicious_pickle_through_load_corpus(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    syn = sp.make_cosmic_iemocap()
    syn.obj[2][syn.train_ids[0]] = Evil()
    _fails(_write(tmp_path, syn.obj), "refused to unpickle global", "system")
    assert not (tmp_path / "pwned").exists()


# --- bad MELD CSVs ---------------------------------------------------------------------------

COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
           "Season", "Episode", "StartTime", "EndTime"]


def _csv(path, rows, columns=COLUMNS, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(columns)
        for i, r in enumerate(rows):
            w.writerow([i + 1, *r, 1, 1, "00:00:00,000", "00:00:01,000"][: len(columns)])
    return path


GOOD = [("Hi there.", "Ross", "joy", "positive", 3, 1), ("Hey.", "Rachel", "neutral", "neutral", 3, 0),
        ("What’s up?", "Ross", "surprise", "positive", 3, 2), ("Fine", "Joey", "anger", "negative", 5, 0)]


def test_csv_synthetic_ids_order_and_encoding(tmp_path):
    c = load_corpus(_csv(tmp_path / "test_sent_emo.csv", GOOD))
    assert [d.id for d in c.split("test")] == ["1156", "1158"]  # 1153 + test id
    d = c.split("test")[0]
    assert d.speakers == ["Rachel", "Ross", "Ross"] and d.texts == ["Hey.", "Hi there.", "What’s up?"]
    assert d.labels.tolist() == [0, 4, 1] and d.sentiments.tolist() == [0, 1, 1]
    cp = load_corpus(_csv(tmp_path / "cp" / "dev_sent_emo.csv", GOOD, encoding="cp1252")
                     if (tmp_path / "cp").mkdir() is None else None)
    assert cp.split("valid")[0].texts[2] == "What’s up?" and any("not UTF-8" in n for n in cp.notes)
    assert cp.split("valid")[0].id == str(1039 + 3)


def test_csv_bad_inputs(tmp_path):
    _fails(_csv(tmp_path / "train_sent_emo.csv", GOOD, columns=COLUMNS[:4] + COLUMNS[5:]),
           "missing column(s) Sentiment")
    bad = [*GOOD, ("Ugh.", "Joey", "boredom", "negative", 5, 1)]
    _fails(_csv(tmp_path / "dev_sent_emo.csv", bad), "dialogue '1044'", "unknown emotion 'boredom'")
    dup = [*GOOD, ("Again.", "Joey", "joy", "positive", 5, 0)]
    _fails(_csv(tmp_path / "test_sent_emo.csv", dup), "dialogue '1158'", "Utterance_ID 0 appears twice")
    _fails(_csv(tmp_path / "friends.csv", GOOD), "cannot tell the split from the file name")
    (tmp_path / "emptydir").mkdir()
    _fails(tmp_path / "emptydir", "no MELD train/dev/test_sent_emo.csv")
    _fails(_csv(tmp_path / "x" / "train_sent_emo.csv", GOOD) if (tmp_path / "x").mkdir() is None else None,
           "'iemocap' requested", dataset="iemocap")


@pytest.mark.parametrize("raw,fixed", [
    ("you\x92re", "you’re"),            # cp1252 byte read as latin-1
    ("\x93Hi\x94 \x85 \x96", "“Hi” … –"),
    ("he\u00e2\x80\x99s", "he’s"),       # UTF-8 read as latin-1
    ("he\u00e2\u20ac\u2122s", "he’s"),   # UTF-8 read as cp1252
    ("café – fine’s", "café – fine’s"),  # already proper Unicode: unchanged
    ("a’b \x92c", "a’b ’c"),             # mixed: proper and broken apostrophes
    ("plain ascii", "plain ascii"),
])
def test_fix_text(raw, fixed):
    from train.data import fix_text

    assert fix_text(raw) == fixed


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_all_zero_or_all_nan_rows_are_missing_modalities(tmp_path, fill):
    """A whole row of zeros (the community files' zero-fill) or of NaN is a missing modality: a NaN
    row in the corpus (masked out of the graph), with a note; a single NaN stays an error above."""
    from train.data import load_corpus

    syn = _drnn()
    did = syn.test_ids[1]
    syn.obj[4][did][1] = np.full_like(syn.obj[4][did][1], fill)
    corpus = load_corpus(_write(tmp_path, syn.obj))
    d = next(x for x in corpus.dialogues if x.id == str(did))
    assert np.isnan(d.features["audio"][1]).all() and np.isfinite(d.features["audio"][0]).all()
    assert any("1 audio feature row(s) are all zero or all NaN" in n for n in corpus.notes)
