"""Where the voice changes inside one stretch of speech: voice embeddings over sliding windows.

People answer within 150-300 ms, or start over the end of the other's sentence, and the VAD
does not see a pause there. So the segmenter (:mod:`runtime.segmentation`) asks this detector,
for the utterance it is building, whether and where a second voice took over.

The utterance's **voiced audio** (its VAD stretches, pauses between them left out, so positions
are "voiced samples") is covered by windows of ``change_window_s`` every ``change_hop_s``, each
embedded by the voice encoder (resemblyzer's, :meth:`runtime.speakers.VoiceEncoder.embed_windows`,
one batch; an embedding is cached for as long as the utterance grows). For a candidate cut ``c``
the windows that end before it (within a tenth of a window) and those that start after it are
averaged; the cut's score is the cosine similarity of the two means. The candidate with the lowest
score is a change when that score is below ``change_threshold``. A side with less voiced audio
than one window (but at least ``min_turn_s``) is embedded whole as one window: a short answer such
as "Fine." still counts.

Candidates lie on the hop grid after ``since`` (what was already judged is not judged again, except
for the window length before it) and at ``since`` itself: the pause between the previous stretch
and the new one. Each side keeps at least ``min_turn_s`` of voiced audio.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from runtime.config import SAMPLE_RATE, SegmentationConfig

log = logging.getLogger(__name__)

CONTEXT_WINDOWS = 2  # each side of a cut: the windows within this many window lengths of it
CONFIRM_S = 1.5  # audio each side of a candidate compared with the known speakers


class SettledVoices:
    """The speaker tracker as a *replay's* detector reads it: each read first calls ``settle``
    (the recognizer waits until its model thread has taken in every utterance handed over), so
    what the tracker knows at a confirmation depends on the audio alone, not on how far
    segmentation ran ahead of the model thread on a loaded machine. Live capture reads the tracker
    as it stands: waiting there would delay the labels."""

    def __init__(self, voices, settle: Callable[[], None]):
        self.voices = voices
        self.settle = settle

    def would_split(self, before: np.ndarray, after: np.ndarray) -> bool:
        self.settle()
        return self.voices.would_split(before, after)


@dataclass
class Change:
    """A change of voice at ``at`` voiced samples into the utterance; ``score``: the cosine there."""

    at: int
    score: float


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) or 1.0)


class SpeakerChangeDetector:
    """``find(voiced, since) -> Change | None`` for one growing utterance; ``reset()`` between them.

    ``voices``: the session's :class:`~runtime.speakers.SpeakerTracker`. A candidate (a cut scoring
    below ``change_threshold``) is a change when it scores below ``change_strict_threshold``, or
    when the tracker would give the audio before and after it two different speakers (two known
    ones, a known one and a new one, or two new ones before any is known). Two stretches of one person rarely look like two speakers
    to the tracker, so this keeps false changes inside one person's long turn rare.
    """

    def __init__(self, encoder, cfg: SegmentationConfig | None = None, voices=None):
        self.cfg = cfg or SegmentationConfig()
        self.encoder = encoder
        self.voices = voices  # a runtime.speakers.SpeakerTracker (known voices), or None
        self.win = int(round(self.cfg.change_window_s * SAMPLE_RATE))
        self.hop = max(1, int(round(self.cfg.change_hop_s * SAMPLE_RATE)))
        self.min_side = int(round(self.cfg.min_turn_s * SAMPLE_RATE))
        self.tol = self.win // 10
        self.embedded = 0  # windows embedded so far (cost figure for logs and the bench)
        self.confirmations = 0  # candidates checked against the known speakers
        self.reset()

    @property
    def context(self) -> int:
        """Voiced samples each side of a cut that its score looks at (CONTEXT_WINDOWS windows)."""
        return CONTEXT_WINDOWS * self.win

    def reset(self) -> None:
        """A new utterance: cached window embeddings no longer apply."""
        self._cache: dict[int, np.ndarray] = {}

    def _windows(self, voiced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(starts (K,), embeddings (K, 256)) of every full window of ``voiced``, in order."""
        starts = list(range(0, len(voiced) - self.win + 1, self.hop))
        todo = [s for s in starts if s not in self._cache]
        if todo:
            emb = self.encoder.embed_windows(np.stack([voiced[s : s + self.win] for s in todo]))
            self._cache.update(zip(todo, emb))
            self.embedded += len(todo)
        if not starts:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.array(starts), np.stack([self._cache[s] for s in starts])

    def prepare(self, voiced: np.ndarray) -> None:
        """Embed the full windows of ``voiced`` (the utterance so far) now, ahead of :meth:`find`."""
        self._windows(np.asarray(voiced, np.float32).reshape(-1))

    def _side(self, voiced: np.ndarray, lo: int, hi: int, means: np.ndarray | None) -> np.ndarray | None:
        """Mean embedding of [lo, hi): its full windows', else the side embedded whole."""
        if means is not None:
            return means
        if hi - lo < self.min_side:
            return None
        return self.encoder.embed_windows(voiced[None, lo:hi])[0]

    def scores(self, voiced: np.ndarray, cuts: list[int]) -> list[float | None]:
        """Cosine of the voice just before vs just after each cut (None: a side too short to judge).

        Each side is the mean of its full windows within ``CONTEXT_WINDOWS`` window lengths of the
        cut (the voice right there, not the whole utterance's average), or, with no full window,
        that stretch embedded whole.
        """
        starts, emb = self._windows(voiced)
        reach = CONTEXT_WINDOWS * self.win
        out: list[float | None] = []
        for c in cuts:
            if c < self.min_side or len(voiced) - c < self.min_side:
                out.append(None)
                continue
            left = right = None
            if len(starts):
                lm = (starts + self.win <= c + self.tol) & (starts >= c - reach)
                rm = (starts >= c - self.tol) & (starts + self.win <= c + reach)
                left = emb[lm].mean(axis=0) if lm.any() else None
                right = emb[rm].mean(axis=0) if rm.any() else None
            left = self._side(voiced, max(0, c - self.win), c, left)
            right = self._side(voiced, c, min(len(voiced), c + self.win), right)
            out.append(None if left is None or right is None else float(_unit(left) @ _unit(right)))
        return out

    def find(self, voiced: np.ndarray, since: int = 0, until: int | None = None) -> Change | None:
        """The first change of voice at or after ``since`` (voiced samples), if there is one: of
        the cuts scoring below ``change_threshold``, the lowest within a window of the earliest.

        ``voiced``: (samples,) float32, the utterance's voiced audio so far, oldest first.
        ``until``: no cut after this (voiced samples); None: up to ``min_turn_s`` before the end.
        """
        voiced = np.asarray(voiced, np.float32).reshape(-1)
        lo = max(self.min_side, since - CONTEXT_WINDOWS * self.win)
        hi = len(voiced) - self.min_side if until is None else min(until, len(voiced) - self.min_side)
        if hi < lo:
            return None
        grid = list(range((lo + self.hop - 1) // self.hop * self.hop, hi + 1, self.hop))
        cuts = sorted(set(grid + ([since] if lo <= since <= hi else [])))
        if not cuts:
            return None
        below = [(s, c) for s, c in zip(self.scores(voiced, cuts), cuts) if s is not None and s < self.cfg.change_threshold]
        while below:  # groups of candidates, earliest first; each group's lowest is its estimate
            first = below[0][1]
            group = [(s, c) for s, c in below if c <= first + self.win]
            score, at = min(group)
            if self._confirmed(voiced, at, score):
                log.debug("speaker change score %.3f at %.2f s of %.2f s voiced", score, at / SAMPLE_RATE,
                          len(voiced) / SAMPLE_RATE)
                return Change(at, score)
            below = below[len(group):]
        return None

    def _confirmed(self, voiced: np.ndarray, at: int, score: float) -> bool:
        """A candidate is a change when its score is below ``change_strict_threshold``, or when the
        speaker tracker would give the audio before and after it two different speakers (two
        known ones, a known one and a new one, or, before any is known, two new ones:
        :meth:`runtime.speakers.SpeakerTracker.would_split`)."""
        if score < self.cfg.change_strict_threshold:
            return True
        if self.voices is None:
            return False
        span = int(CONFIRM_S * SAMPLE_RATE)
        self.confirmations += 1
        return self.voices.would_split(voiced[max(0, at - span) : at], voiced[at : at + span])
