"""Utterances as the model knows them, assembled from the VAD's stretches of speech.

The model was trained on whole utterances: one speaker's turn, which may hold several sentences
with pauses between them. The VAD (:class:`runtime.vad.UtteranceSegmenter`) ends a *stretch* of
speech after ``vad.min_silence_ms`` (300 ms) of silence, which is shorter than many pauses
inside a turn. :class:`UtteranceAssembler` joins stretches into utterances:

* an utterance **closes** at a pause of ``segmentation.boundary_pause_ms`` (the boundary pause),
  or where the voice changes (:class:`runtime.speaker_change.SpeakerChangeDetector`, which also
  finds a change inside a stretch: an answer within 150-300 ms, or over the end of a sentence),
  whichever comes first; at ``vad.max_utterance_s`` it is cut at its last pause (or, inside one
  stretch, where the VAD cuts it) and the speech goes on as a new utterance;
* at **each pause** of ``segmentation.provisional_pause_ms`` inside an open utterance it hands on a
  provisional view: the utterance so far (``final=False``), with the number (``uid``) its final
  view will carry. Its transcription need not wait for that: after ``early_decode_ms`` of silence
  the same view is handed on marked ``speculative`` (decode it, show nothing), so that when the
  pause has lasted long enough only the label is left to compute. A pause that ends sooner costs
  one decode for nothing. The two views of one pause carry the same audio: the speech so far and
  ``min(vad.speech_pad_ms, early_decode_ms, provisional_pause_ms)`` after it;
* the **final** view (``final=True``) holds the whole utterance's audio, from its first word to its
  last, pauses included: what the ASR transcribes in one piece.

``segmentation.mode: pause`` gives the old behaviour for comparison: every VAD stretch is a final
utterance of its own and nothing is provisional.

Everything is in stream samples (16 kHz) from the start of the audio. Memory is bounded by
``vad.max_utterance_s`` plus the boundary pause and padding.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from runtime.config import SAMPLE_RATE, SegmentationConfig, VadConfig
from runtime.vad import WINDOW, SampleSpan, UtteranceSegmenter

log = logging.getLogger(__name__)

MAX_CHANGES_PER_STRETCH = 32  # a stretch is split at most this many times (bounds the work)


@dataclass
class Span(SampleSpan):
    """One view of an utterance. ``start``/``end``: its speech; ``audio`` (samples,) float32 from
    ``audio_start`` on (padding and inner pauses included); ``decided_at``: the stream position
    at which this view was decided; ``reason``: why -- ``pause`` (provisional, or every final in
    ``pause`` mode), ``boundary_pause``, ``speaker_change``, ``max_length``, ``end_of_stream``;
    ``speculative``: a provisional view handed on early so that its transcription can start (no
    label is shown for it; the view with the same audio follows if the pause lasts)."""

    uid: int
    start: int
    end: int
    audio: np.ndarray
    audio_start: int
    decided_at: int
    final: bool
    reason: str
    stretches: list[tuple[int, int]] = field(default_factory=list)
    sample_rate: int = SAMPLE_RATE
    speculative: bool = False


class UtteranceAssembler:
    """Streaming utterance assembly: ``push(samples) -> [Span]`` (see the module docstring).

    Args:
        vad_cfg, cfg: the VAD and segmentation settings.
        segmenter: a pre-built :class:`UtteranceSegmenter` (tests, a shared VAD model).
        detector: a :class:`~runtime.speaker_change.SpeakerChangeDetector`; None = no speaker
            change detection (utterances then close at boundary pauses only).
    """

    def __init__(self, vad_cfg: VadConfig | None = None, cfg: SegmentationConfig | None = None,
                 segmenter: UtteranceSegmenter | None = None, detector=None):
        self.vad_cfg = vad_cfg or VadConfig()
        self.cfg = cfg or SegmentationConfig()
        self.seg = segmenter or UtteranceSegmenter(self.vad_cfg)
        self.detector = detector if self.cfg.mode == "utterance" else None
        ms = SAMPLE_RATE // 1000
        self.boundary = self.cfg.boundary_pause_ms * ms
        self.pad = self.vad_cfg.speech_pad_ms * ms
        self.provisional_pause = self.cfg.provisional_pause_ms * ms
        self.early = min(self.cfg.early_decode_ms, self.cfg.provisional_pause_ms) * ms
        # a provisional view's audio after the speech: what exists when it is first handed on
        self.provisional_tail = min(self.pad, self.early)
        self.max_len = int(self.vad_cfg.max_utterance_s * SAMPLE_RATE)
        self.reset()

    def reset(self) -> None:
        self.seg.reset()
        if self.detector is not None:
            self.detector.reset()
        self._buf = np.zeros(0, np.float32)  # stream audio from self._buf_start on
        self._buf_start = 0
        self._probs = np.zeros(0, np.float32)  # P(speech) per VAD window from self._probs_start on
        self._probs_start = 0
        self._uid = 0
        self._open = False
        self._start = 0  # open utterance: its speech start
        self._end = 0  # ...the end of its last stretch
        self._stretches: list[tuple[int, int]] = []
        self._voiced = np.zeros(0, np.float32)  # its stretches' audio joined (pauses left out)
        self._floor = 0  # no utterance audio before this sample (the previous utterance's audio end)
        self._prepared = 0  # voiced samples the detector has embedded windows for
        self._taken = 0  # the stretch in progress before this sample went to utterances already (early change)
        self._searched = 0  # voiced samples of the open utterance + stretch in progress searched while speaking
        self.changes = 0  # speaker changes found (log / bench figure)
        self.cut_long = 0  # utterances cut at max_utterance_s
        self._early_for: int | None = None  # the pause (its start) whose view was handed on early
        self._shown_for: tuple[int, int] | None = None  # (uid, pause start) whose provisional view went out

    # -- public ----------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        return self.seg.position

    @property
    def open_uid(self) -> int | None:
        """The number of the utterance in progress (None: none open)."""
        return self._uid if self._open else None

    def push(self, samples: np.ndarray) -> list[Span]:
        """Feed (n,) float32 16 kHz audio; returns the views it decided (usually none)."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        out: list[Span] = []
        for i in range(0, len(samples), WINDOW):  # window by window: boundaries fall where they are
            piece = samples[i : i + WINDOW]
            scored_before = self.seg.scored
            stretches = self.seg.push(piece)
            self._buf = np.concatenate([self._buf, piece])
            if len(self.seg.last_probs):
                if not len(self._probs):
                    self._probs_start = scored_before
                self._probs = np.concatenate([self._probs, self.seg.last_probs])
            for st in stretches:
                out += self._on_stretch(st)
            out += self._check_boundary()
            out += self._pause_views()
        out += self._change_while_speaking()
        self._prepare()
        self._trim()
        return out

    def flush(self) -> list[Span]:
        """End of stream: the stretch and the utterance in progress are closed."""
        out: list[Span] = []
        for st in self.seg.flush():
            out += self._on_stretch(st)
        if self._open:
            out.append(self._close("end_of_stream", self.seg.position))
        return out

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[Span]:
        for chunk in chunks:
            yield from self.push(chunk)
        yield from self.flush()

    # -- internals -------------------------------------------------------------------------------

    def _audio(self, a0: int, a1: int) -> np.ndarray:
        a0 = max(a0, self._buf_start)
        return self._buf[a0 - self._buf_start : max(a0, a1) - self._buf_start].copy()

    def _on_stretch(self, st) -> list[Span]:
        if self.cfg.mode == "pause":  # the old behaviour: a stretch is an utterance
            span = Span(self._uid, st.start, st.end, st.audio, st.audio_start, st.decided_at, True,
                        "pause" if st.reason == "silence" else st.reason, [(st.start, st.end)])
            self._uid += 1
            return [span]
        out: list[Span] = []
        start = max(st.start, self._taken)  # its head may have gone to utterances already
        if start >= st.end:
            return out
        if not self._open:
            self._open_new(start)
        since = len(self._voiced)
        self._voiced = np.concatenate([self._voiced, self._audio(start, st.end)])
        self._stretches.append((start, st.end))
        self._end = st.end
        if self.detector is not None:
            for _ in range(MAX_CHANGES_PER_STRETCH):
                change = self.detector.find(self._voiced, since)
                if change is None:
                    break
                out.append(self._split(change.at, change.score, st.decided_at))
                since = 0
        # A stretch the VAD cut at max_utterance_s ended at a short pause, not a real one: no
        # provisional view there (the utterance's own length limit is checked in _check_boundary).
        # Nor when this pause's view already went out before the VAD's stretch ended.
        if st.reason == "silence" and self._shown_for != (self._uid, st.end):
            out.append(self._view(False, "pause", st.decided_at, tail=self.provisional_tail))
        return out

    def _pause_views(self) -> list[Span]:
        """The provisional view of a pause still in progress (shorter than ``vad.min_silence_ms``,
        so the VAD's stretch goes on): handed on ``speculative`` after ``early_decode_ms`` of
        silence, then for showing after ``provisional_pause_ms`` (module docstring)."""
        seg = self.seg
        if self.cfg.mode != "utterance" or not seg.speaking or seg.pause_start is None:
            return []
        p0, silence = seg.pause_start, seg.scored - seg.pause_start
        s0 = max(seg.speech_start, self._taken)
        if silence < self.early or p0 - s0 < seg.min_speech:
            return []  # too soon, or speech the VAD would drop as too short
        if self._open and p0 - self._start > self.max_len:
            return []  # _check_boundary cuts it at max_utterance_s
        out: list[Span] = []
        if self.early < self.provisional_pause and self._early_for != p0:
            self._early_for = p0
            out.append(self._pause_view(s0, p0, speculative=True))
        if silence >= self.provisional_pause and self._shown_for != (self._uid, p0):
            self._shown_for = (self._uid, p0)
            out.append(self._pause_view(s0, p0, speculative=False))
        return out

    def _pause_view(self, s0: int, p0: int, speculative: bool) -> Span:
        """The open utterance (or the one this stretch opens) up to the pause at ``p0``, with the
        stretch in progress from ``s0``."""
        start = self._start if self._open else s0
        stretches = (list(self._stretches) if self._open else []) + [(s0, p0)]
        return self._span(start, p0, stretches, p0 + self.provisional_tail, self.seg.scored, False, "pause",
                          speculative=speculative)

    def _check_boundary(self) -> list[Span]:
        if not self._open:
            return []
        if not self.seg.speaking and self.seg.scored - self._end >= self.boundary:
            return [self._close("boundary_pause", self.seg.scored)]
        if self.seg.speaking and self.seg.scored - self._start > self.max_len:
            # speech goes on past max_utterance_s: cut at the utterance's last pause (the end of its
            # last stretch); the stretch in progress begins the next utterance
            self.cut_long += 1
            log.info("utterance %d reached max_utterance_s (%.0f s): cut at its last pause", self._uid,
                     self.vad_cfg.max_utterance_s)
            return [self._close("max_length", self.seg.scored)]
        return []

    def _open_new(self, start: int) -> None:
        self._open, self._start, self._end = True, start, start
        self._stretches, self._voiced = [], np.zeros(0, np.float32)

    def _view(self, final: bool, reason: str, decided_at: int, end_cap: int | None = None,
              tail: int | None = None) -> Span:
        a1 = min(self._end + (self.pad if tail is None else tail), decided_at,
                 end_cap if end_cap is not None else decided_at)
        return self._span(self._start, self._end, list(self._stretches), a1, decided_at, final, reason)

    def _span(self, start: int, end: int, stretches: list[tuple[int, int]], a1: int, decided_at: int,
              final: bool, reason: str, speculative: bool = False) -> Span:
        """A view of speech ``start``..``end`` whose audio runs from ``pad`` before it (never before
        the last closed utterance's audio) to ``a1``."""
        a0 = max(start - self.pad, self._floor)
        return Span(self._uid, start, end, self._audio(a0, a1), max(a0, self._buf_start), decided_at,
                    final, reason, stretches, speculative=speculative)

    def _close(self, reason: str, decided_at: int, end_cap: int | None = None) -> Span:
        span = self._view(True, reason, decided_at, end_cap)
        self._floor = span.audio_start + len(span.audio)
        self._uid += 1
        self._open = False
        self._prepared = 0
        self._searched = 0
        if self.detector is not None:  # its windows belong to the closed utterance
            self.detector.reset()
        log.debug("utterance %d: %.2f-%.2f s (%s)", span.uid, span.start_s, span.end_s, reason)
        return span

    def _split(self, at: int, score: float, decided_at: int) -> Span:
        """Close the open utterance where the voice changed (``at`` voiced samples in) and open
        the next one with the rest of its stretches."""
        cum = 0
        for k, (a, b) in enumerate(self._stretches):
            if at < cum + (b - a):
                break
            cum += b - a
        a, b = self._stretches[k]
        if at == cum and k > 0:  # at the pause between two stretches
            before, after = self._stretches[:k], self._stretches[k:]
            end, start = self._stretches[k - 1][1], a
            cap = None
        else:  # inside stretch k: cut at the least speech-like VAD window near the estimate
            cut = self._quietest(a + (at - cum), a, b)
            at = cum + (cut - a)
            before = self._stretches[:k] + [(a, cut)]
            after = [(cut, b)] + self._stretches[k + 1 :]
            end = start = cut
            cap = cut
        rest = self._voiced[at:]
        self._stretches, self._end = before, end
        self.changes += 1
        log.debug("speaker change (score %.3f) at %.2f s", score, start / SAMPLE_RATE)
        span = self._close("speaker_change", decided_at, end_cap=cap)
        self._open_new(start)
        self._stretches, self._voiced, self._end = after, rest, after[-1][1]
        return span

    def _change_while_speaking(self) -> list[Span]:
        """A change of voice inside the stretch still in progress, found before it ends: people who
        answer within the VAD's pause make one long stretch of several turns. Only cuts with a full
        context after them are judged (the rest is judged later, or at the stretch's end). A change
        closes the utterance there (``speaker_change``) and opens the next one at the cut; the
        stretch, when it ends, gives that utterance only what follows the cut (``_taken``)."""
        det = self.detector
        if det is None or not self.cfg.change_while_speaking or not self.seg.speaking:
            return []
        s0 = self.seg.speech_start
        safe = self.seg.pause_start if self.seg.pause_start is not None else self.seg.scored
        if s0 is None:
            return []
        out: list[Span] = []
        for _ in range(MAX_CHANGES_PER_STRETCH):
            head = max(s0, self._taken)
            if self._open and head - self._start > self.max_len:
                break  # _check_boundary closes it at max_utterance_s first
            done = len(self._voiced) if self._open else 0
            voiced = np.concatenate([self._voiced, self._audio(head, safe)]) if self._open else self._audio(head, safe)
            until = len(voiced) - det.context
            if until - max(self._searched, done) < 2 * det.hop:
                break
            change = det.find(voiced, since=max(self._searched, done), until=until)
            self._searched = until
            if change is None or change.at < done:
                break  # none, or one inside the finished stretches (judged when they ended)
            cut = self._quietest(head + change.at - done, head, safe) if change.at > done else head
            if not self._open:
                self._open_new(head)
            if cut > head:
                self._stretches.append((head, cut))
                self._end = cut
            self.changes += 1
            log.debug("speaker change while speaking (score %.3f) at %.2f s", change.score, cut / SAMPLE_RATE)
            out.append(self._close("speaker_change", self.seg.scored, end_cap=cut if cut > head else None))
            self._open_new(cut)
            self._taken = cut
        return out

    def _quietest(self, guess: int, lo: int, hi: int) -> int:
        """The VAD window with the lowest P(speech) within a hop of ``guess`` (inside [lo, hi])."""
        reach = int(self.cfg.change_hop_s * SAMPLE_RATE)
        first = max(lo, guess - reach, self._probs_start)
        last = min(hi, guess + reach, self._probs_start + len(self._probs) * WINDOW)
        i0, i1 = (first - self._probs_start) // WINDOW, (last - self._probs_start) // WINDOW
        if i1 <= i0:
            return guess
        k = i0 + int(np.argmin(self._probs[i0:i1]))
        return int(np.clip(self._probs_start + k * WINDOW, lo + 1, hi - 1))

    def _prepare(self) -> None:
        """While someone speaks, embed the detector's windows over what is already certain to be
        voiced, so that at the pause only the last windows are left."""
        if self.detector is None or not self.seg.speaking:
            return
        s0 = self.seg.speech_start
        safe = self.seg.pause_start if self.seg.pause_start is not None else self.seg.scored
        if s0 is None:
            return
        s0 = max(s0, self._taken)
        if safe - s0 <= 0:
            return
        if not self._open:  # this stretch will open the next utterance
            voiced = self._audio(s0, safe)
        elif safe - self._start <= self.max_len:  # ...or continue the open one
            voiced = np.concatenate([self._voiced, self._audio(s0, safe)])
        else:
            return  # it will close the open one at max_utterance_s first
        if len(voiced) - self._prepared >= 2 * self.detector.hop:
            self.detector.prepare(voiced)
            self._prepared = len(voiced)

    def _trim(self) -> None:
        keep = self.seg.position - self.boundary - self.pad - 2 * WINDOW
        if self._open:
            keep = min(keep, self._start - self.pad)
        if self.seg.speech_start is not None:
            keep = min(keep, self.seg.speech_start - self.pad)
        keep = max(keep, self._buf_start)
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start :]
            self._buf_start = keep
        pk = (keep - self._probs_start) // WINDOW
        if pk > 0:
            self._probs = self._probs[pk:]
            self._probs_start += pk * WINDOW
