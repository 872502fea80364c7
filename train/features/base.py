"""The one interface every per-utterance feature extractor implements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

# The project's one audio rate (IEMOCAP's and the live microphone's): extractors resample every
# input to it, the runtime captures and replays at it.
SAMPLE_RATE = 16000
# Past turns of the conversation an utterance's text extractor may read (``UtteranceInput.context``):
# the live runtime keeps this many, the export's checks pass this many. An encoder that reads
# more (``ContextFormat.turns``) is refused rather than silently served fewer live.
MAX_CONTEXT_TURNS = 8


@dataclass(frozen=True)
class ExtractorIdentity:
    """What a trained model records so the runtime builds exactly the same features.

    ``name`` is the registry name (e.g. "minilm"), ``modality`` one of text/audio/visual,
    ``dim`` the output width, ``version`` changes whenever outputs would change (model
    weights, preprocessing); caches and model directories compare the whole identity.
    """

    name: str
    modality: str
    dim: int
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "modality": self.modality, "dim": self.dim, "version": self.version}


@dataclass
class UtteranceInput:
    """Everything an extractor may need for one utterance.

    text: transcript. speaker: speaker label. audio: (samples,) float32 mono at ``sample_rate``.
    frames: list of (H, W, 3) uint8 BGR video frames spanning the utterance.
    context: earlier utterances of the same conversation, oldest first (past only, so that
    a live runtime can compute the same thing), at most :data:`MAX_CONTEXT_TURNS` of them.
    """

    text: str | None = None
    speaker: str | None = None
    audio: np.ndarray | None = None
    sample_rate: int = SAMPLE_RATE
    frames: Sequence[np.ndarray] | None = None
    context: Sequence["UtteranceInput"] = ()


@runtime_checkable
class FeatureExtractor(Protocol):
    identity: ExtractorIdentity

    def extract(self, items: Sequence[UtteranceInput]) -> np.ndarray:
        """Features for a batch of utterances: (len(items), identity.dim) float32.

        A row is NaN where the utterance has nothing to extract from (no face in any frame,
        empty audio); the caller masks that modality out for that utterance.
        """
        ...
