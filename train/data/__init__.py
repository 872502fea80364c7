"""Corpus loading: one in-memory :class:`Corpus` from the field's file formats.

    from train.data import load_corpus
    corpus = load_corpus("../shared/data/iemocap/iemocap_trainval.pkl")
    corpus.split("train")[0].labels   # (n,) int64

Every pickle goes through :mod:`train.data.safe_pickle`. No torch import here.
"""
from train.data.corpus import IEMOCAP_LABELS, MELD_LABELS, MELD_SENTIMENTS, SPLITS, Corpus, Dialogue
from train.data.load import LAYOUTS, detect_layout, load_corpus
from train.data.safe_pickle import load_pickle, loads_pickle
from train.data.summary import format_summary, summarize
from train.data.text import fix_text

__all__ = [
    "Corpus", "Dialogue", "SPLITS", "IEMOCAP_LABELS", "MELD_LABELS", "MELD_SENTIMENTS",
    "load_corpus", "detect_layout", "LAYOUTS", "load_pickle", "loads_pickle",
    "summarize", "format_summary", "fix_text",
]
