"""The one in-memory representation of an emotion-recognition-in-conversation corpus.

Every loader (COSMIC pickles, MELD CSV, DialogueRNN / MMGCN feature pickles) returns a
:class:`Corpus`; training, feature extraction and evaluation read only this.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "valid", "test")

IEMOCAP_LABELS = ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
MELD_SENTIMENTS = ["neutral", "positive", "negative"]


@dataclass
class Dialogue:
    """One conversation: n utterances in spoken order.

    Attributes:
        id: dialogue id as stored in the source file.
        split: "train" | "valid" | "test".
        speakers: (n,) speaker names or ids as strings ("M"/"F" for IEMOCAP).
        labels: (n,) int64 emotion ids into ``Corpus.labels``; -1 where unlabelled.
        texts: (n,) transcripts, or None when the source has none.
        sentiments: (n,) int64 sentiment ids (MELD), or None.
        features: modality name ("text", "audio", "visual") -> (n, d) float32 array.
    """

    id: str
    split: str
    speakers: list[str]
    labels: np.ndarray
    texts: list[str] | None = None
    sentiments: np.ndarray | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.speakers)

    def speaker_ids(self) -> np.ndarray:
        """(n,) int64: each speaker's index in order of first appearance in this dialogue."""
        order: dict[str, int] = {}
        return np.array([order.setdefault(s, len(order)) for s in self.speakers], dtype=np.int64)


@dataclass
class Corpus:
    """A whole data set.

    Attributes:
        dataset: "iemocap" | "meld" (or another name for user data).
        labels: emotion names, index = label id.
        dialogues: every dialogue of every split, in stored order.
        source: the path it was loaded from.
        format: the layout detected ("cosmic", "meld-csv", "dialoguernn", "mmgcn").
        sentiment_labels: sentiment names (MELD) or None.
        notes: facts a user should see in the summary (e.g. how the validation split was made).
    """

    dataset: str
    labels: list[str]
    dialogues: list[Dialogue]
    source: str = ""
    format: str = ""
    sentiment_labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Dialogue]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [d for d in self.dialogues if d.split == name]

    @property
    def modalities(self) -> dict[str, int]:
        """Modality name -> feature dimension, for modalities every dialogue carries."""
        if not self.dialogues:
            return {}
        common = set(self.dialogues[0].features)
        for d in self.dialogues[1:]:
            common &= set(d.features)
        first = self.dialogues[0].features
        return {m: int(first[m].shape[1]) for m in sorted(common)}

    @property
    def speakers(self) -> list[str]:
        return sorted({s for d in self.dialogues for s in d.speakers})
