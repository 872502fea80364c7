"""MMGCN / MM-DFN / M3Net MELD feature pickles (``MELD_features_raw1.pkl``).

A list of 10, as unpacked by hujingwen6666/MMGCN ``dataloader.py`` (``MELDDataset``),
zerohd4869/MM-DFN ``code/dataloader.py`` and feiyuchen7/M3NET ``dataloader.py``:
``videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence,
trainVid, testVid, _``. MMGCN's ``train.py`` gives the dimensions: text 600, audio 300,
visual 342 (``feat2dim``). Unlike DialogueRNN's MELD file it has a visual field after audio, and
a tenth field that every published loader discards (unnamed: ``_`` or ``self.aaa``); it is not
read here. Speakers are one-hot vectors of 9.

The IEMOCAP files of these code bases (``IEMOCAP_features.pkl``: text 100 or 1024, audio 1582,
visual 342) use DialogueRNN's IEMOCAP layout: see :mod:`train.data.dialoguernn`.
"""
from __future__ import annotations

from train.data.corpus import Corpus
from train.data.dialoguernn import read_video_layout

LAYOUTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "mmgcn-meld": ("meld", "mmgcn", (
        "videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual", "videoSentence",
        "trainVid", "testVid", "unused")),
}


def read_mmgcn(obj: list, layout: str, path: str) -> Corpus:
    dataset, fmt, names = LAYOUTS[layout]
    return read_video_layout(obj, dataset, fmt, names, path,
                             ["tenth field (discarded by the MMGCN/MM-DFN/M3Net loaders) not read"])
