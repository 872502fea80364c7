"""COSMIC-layout pickles (declare-lab/conv-emotion, COSMIC/feature-extraction).

Layouts, as read by COSMIC's own scripts:

* IEMOCAP ``iemocap.pkl``, a list of 6 (``COSMIC/feature-extraction/roberta_feature_extract_iemocap.py``):
  ``speakers, labels, sentences, train_ids, test_ids, valid_ids``; speakers are "M"/"F".
* MELD ``meld.pkl``, a list of 7 (``COSMIC/feature-extraction/roberta_feature_extract_meld.py``):
  ``speakers, emotion_labels, sentiment_labels, sentences, train_ids, test_ids, valid_ids``;
  speakers are one-hot vectors of 9 (position of the speaker within the dialogue).
* The RoBERTa feature pickles those scripts write (also what M3Net reads as
  ``iemocap_features_roberta.pkl`` / ``meld_features_roberta.pkl``, feiyuchen7/M3NET dataloader.py):
  IEMOCAP, 10: ``speakers, labels, roberta1, roberta2, roberta3, roberta4, sentences, train_ids,
  test_ids, valid_ids``; MELD, 11: ``speakers, emotion, sentiment, roberta1..4, sentences,
  train_ids, test_ids, valid_ids``. ``roberta1`` is the last layer's CLS vector (1024-d): it
  becomes the ``text`` modality; the three lower layers are not loaded.
"""
from __future__ import annotations

from typing import Any

from train.data.checks import assign_splits, id_list, lookup, make_dialogue, repair_note
from train.data.corpus import IEMOCAP_LABELS, MELD_LABELS, MELD_SENTIMENTS, Corpus

# name -> (dataset, field names). Field names are the published variable names.
LAYOUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cosmic-iemocap": ("iemocap", ("speakers", "labels", "sentences", "train_ids", "test_ids", "valid_ids")),
    "cosmic-meld": ("meld", ("speakers", "emotion_labels", "sentiment_labels", "sentences",
                             "train_ids", "test_ids", "valid_ids")),
    "cosmic-roberta-iemocap": ("iemocap", ("speakers", "labels", "roberta1", "roberta2", "roberta3", "roberta4",
                                           "sentences", "train_ids", "test_ids", "valid_ids")),
    "cosmic-roberta-meld": ("meld", ("speakers", "emotion_labels", "sentiment_labels", "roberta1", "roberta2",
                                     "roberta3", "roberta4", "sentences", "train_ids", "test_ids", "valid_ids")),
}


def read_cosmic(obj: list, layout: str, path: str) -> Corpus:
    """Build a :class:`Corpus` from an unpickled COSMIC list whose layout name is ``layout``."""
    dataset, names = LAYOUTS[layout]
    f: dict[str, Any] = dict(zip(names, obj))
    notes: list[str] = []
    meld = dataset == "meld"
    labels_field = "emotion_labels" if meld else "labels"
    order = assign_splits(
        id_list(f["train_ids"], "train", path, notes),
        id_list(f["valid_ids"], "valid", path, notes),
        id_list(f["test_ids"], "test", path, notes),
        path, notes,
    )
    dialogues = []
    stats: dict[str, int] = {}
    for did, split in order:
        feats = {}
        if "roberta1" in f:
            feats["text"] = lookup(f["roberta1"], did, "roberta1", split, path)
        dialogues.append(make_dialogue(
            did, split, path=path,
            speakers=lookup(f["speakers"], did, "speakers", split, path),
            labels=lookup(f[labels_field], did, labels_field, split, path),
            label_names=MELD_LABELS if meld else IEMOCAP_LABELS,
            texts=lookup(f["sentences"], did, "sentences", split, path),
            sentiments=lookup(f["sentiment_labels"], did, "sentiment_labels", split, path) if meld else None,
            sentiment_names=MELD_SENTIMENTS if meld else None,
            features=feats,
            stats=stats,
        ))
    notes.extend(repair_note(stats))
    if meld:
        notes.append("speakers are one-hot positions within each dialogue (spk0..spk8), not names")
    if "roberta1" in f:
        notes.append("text features: roberta1 (last RoBERTa layer CLS); roberta2..4 not loaded")
    return Corpus(dataset=dataset, labels=list(MELD_LABELS if meld else IEMOCAP_LABELS), dialogues=dialogues,
                  source=path, format=layout.replace("-iemocap", "").replace("-meld", ""),
                  sentiment_labels=list(MELD_SENTIMENTS) if meld else None, notes=notes)
