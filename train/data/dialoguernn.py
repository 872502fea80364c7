"""DialogueRNN / bc-LSTM feature pickles (declare-lab/conv-emotion), and the shared reader for
the ``video*`` family of layouts (also used by :mod:`train.data.mmgcn`).

Layouts, as unpacked by the published loaders:

* IEMOCAP ``IEMOCAP_features_raw.pkl``, a list of 9 (conv-emotion ``DialogueRNN/dataloader.py`` and
  ``bc-LSTM-pytorch/dataloader.py``, ``IEMOCAPDataset``): ``videoIDs, videoSpeakers, videoLabels,
  videoText, videoAudio, videoVisual, videoSentence, trainVid, testVid``; speakers "M"/"F".
  MMGCN, MM-DFN and M3Net read their ``IEMOCAP_features.pkl`` with this same unpacking
  (hujingwen6666/MMGCN ``dataloader.py``, zerohd4869/MM-DFN ``code/dataloader.py``,
  feiyuchen7/M3NET ``dataloader.py``), so such files load here too.
* MELD ``MELD_features_raw.pkl``, a list of 9 with no visual field and sentiment last
  (conv-emotion ``bc-LSTM-pytorch/dataloader.py`` ``MELDDataset``: ``videoIDs, videoSpeakers,
  emotion_labels, videoText, videoAudio, videoSentence, trainVid, testVid, sentiment_labels``;
  ``DialogueRNN/dataloader.py`` unpacks the same order). Speakers are one-hot vectors of 9.

These files have train and test ids only: validation is carved from train by the caller.
Features per dialogue are lists of vectors or 2-D arrays; they become float32 ``(n, d)``.
"""
from __future__ import annotations

from typing import Any

from train.data.checks import assign_splits, id_list, lookup, make_dialogue, repair_note
from train.data.corpus import IEMOCAP_LABELS, MELD_LABELS, MELD_SENTIMENTS, Corpus

# field name -> modality
MODALITY_FIELDS = {"videoText": "text", "videoAudio": "audio", "videoVisual": "visual"}

# name -> (dataset, format, field names)
LAYOUTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "dialoguernn-iemocap": ("iemocap", "dialoguernn", (
        "videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual", "videoSentence",
        "trainVid", "testVid")),
    "dialoguernn-meld": ("meld", "dialoguernn", (
        "videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoSentence",
        "trainVid", "testVid", "videoSentiment")),
}


def read_video_layout(obj: list, dataset: str, fmt: str, names: tuple[str, ...], path: str,
                      notes: list[str] | None = None) -> Corpus:
    """Build a :class:`Corpus` from a ``video*``-family list whose fields are ``names`` in order."""
    f: dict[str, Any] = dict(zip(names, obj))
    notes = list(notes or [])
    meld = dataset == "meld"
    order = assign_splits(id_list(f["trainVid"], "train", path, notes), None,
                          id_list(f["testVid"], "test", path, notes), path, notes)
    mods = [(field, mod) for field, mod in MODALITY_FIELDS.items() if field in f]
    dialogues = []
    stats: dict[str, int] = {}
    for did, split in order:
        dialogues.append(make_dialogue(
            did, split, path=path,
            speakers=lookup(f["videoSpeakers"], did, "videoSpeakers", split, path),
            labels=lookup(f["videoLabels"], did, "videoLabels", split, path),
            label_names=MELD_LABELS if meld else IEMOCAP_LABELS,
            texts=lookup(f["videoSentence"], did, "videoSentence", split, path),
            sentiments=lookup(f["videoSentiment"], did, "videoSentiment", split, path) if "videoSentiment" in f else None,
            sentiment_names=MELD_SENTIMENTS if meld else None,
            features={mod: lookup(f[field], did, field, split, path) for field, mod in mods},
            stats=stats,
        ))
    notes.extend(repair_note(stats))
    if meld:
        notes.append("speakers are one-hot positions within each dialogue (spk0..spk8), not names")
    return Corpus(dataset=dataset, labels=list(MELD_LABELS if meld else IEMOCAP_LABELS), dialogues=dialogues,
                  source=path, format=fmt,
                  sentiment_labels=list(MELD_SENTIMENTS) if meld else None, notes=notes)


def read_dialoguernn(obj: list, layout: str, path: str) -> Corpus:
    dataset, fmt, names = LAYOUTS[layout]
    notes = []
    if dataset == "iemocap":
        notes.append("layout of DialogueRNN IEMOCAP_features_raw.pkl, shared by MMGCN/MM-DFN/M3Net IEMOCAP_features.pkl")
    return read_video_layout(obj, dataset, fmt, names, path, notes)
