"""Voice activity and end of utterance: silero VAD (ONNX, onnxruntime) + a streaming segmenter.

The model is the silero VAD that faster-whisper ships (``faster_whisper/assets/
silero_vad_v6.onnx``; inputs ``input (n, 576)``, ``h``/``c (1, 1, 128)``) or, as a fallback or via
``vad.model``, the silero-vad package's ``silero_vad.onnx`` (inputs ``input (1, 576)``,
``state (2, 1, 128)``, ``sr``). Both score 512-sample windows (32 ms at 16 kHz) preceded by the
previous window's last 64 samples, carrying an LSTM state across windows; the silero-vad
package's own Python wrapper imports torch, so this module drives the ONNX graph directly.

The segmenter follows silero's ``get_speech_timestamps`` hysteresis, but streaming:

* speech starts at the first window with ``P >= threshold``;
* inside speech, a window with ``P < neg_threshold`` opens a pause, one with ``P >= threshold``
  closes it; a pause of ``min_silence_ms`` ends the utterance at the pause's start;
* an utterance reaching ``max_utterance_s`` is cut at its last pause of >= 100 ms when it has
  one (otherwise right there) and speech continues as a new utterance;
* speech shorter than ``min_speech_ms`` is dropped; each utterance's audio carries
  ``speech_pad_ms`` of context on both sides (never overlapping the previous utterance's audio).

The end of an utterance is therefore known ``min_silence_ms`` (+ at most one window) after the
speech stops: that is the VAD's share of the end-of-speech -> label latency.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from runtime.config import SAMPLE_RATE, VadConfig
from train.common import InputError

log = logging.getLogger(__name__)

WINDOW = 512  # samples scored per VAD step (32 ms)
CONTEXT = 64  # samples of the previous window prepended to each window


def default_vad_model() -> Path:
    """silero VAD ONNX from faster-whisper's assets, else from the silero-vad package."""
    import importlib.util

    for pkg, rel in (("faster_whisper", "assets/silero_vad_v6.onnx"), ("silero_vad", "data/silero_vad.onnx")):
        spec = importlib.util.find_spec(pkg)  # locate without importing (silero_vad imports torch)
        if spec and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / rel
            if path.is_file():
                return path
    raise InputError("no silero VAD model found; pip install faster-whisper (or silero-vad), or set vad.model")


class SileroVAD:
    """Stateful silero VAD: ``probs(windows) -> P(speech)`` for consecutive 512-sample windows."""

    def __init__(self, model_path: str | Path | None = None, threads: int = 1):
        from train.common import make_session

        path = Path(model_path) if model_path else default_vad_model()
        self.session = make_session(path, providers=["CPUExecutionProvider"], threads=threads, what="VAD model")
        names = {i.name for i in self.session.get_inputs()}
        if names == {"input", "h", "c"}:
            self.kind = "hc"  # faster-whisper's export: rows are processed in sequence
        elif names == {"input", "state", "sr"}:
            self.kind = "state"  # silero-vad package's export: one window per call
        else:
            raise InputError(f"not a silero VAD model (inputs {sorted(names)})", path=str(path))
        self.path = path
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)

    def probs(self, windows: np.ndarray) -> np.ndarray:
        """(n, 512) float32 consecutive windows -> (n,) speech probabilities; state carries over."""
        windows = np.asarray(windows, np.float32).reshape(-1, WINDOW)
        if len(windows) == 0:
            return np.zeros(0, np.float32)
        ctx = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]], axis=0)
        x = np.concatenate([ctx, windows], axis=1)
        self._context = windows[-1, -CONTEXT:].copy()
        if self.kind == "hc":
            p, self._h, self._c = self.session.run(None, {"input": x, "h": self._h, "c": self._c})
            return np.asarray(p, np.float32).reshape(-1)
        out = np.empty(len(x), np.float32)
        sr = np.array(SAMPLE_RATE, np.int64)
        for i, row in enumerate(x):
            p, self._state = self.session.run(None, {"input": row[None], "state": self._state, "sr": sr})
            out[i] = float(np.asarray(p).reshape(-1)[0])
        return out


class SampleSpan:
    """Seconds of a span given in samples: needs ``start``, ``end`` and ``sample_rate``."""

    start: int
    end: int
    sample_rate: int

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / self.sample_rate


@dataclass
class Utterance(SampleSpan):
    """One stretch of speech. Sample indices count from the start of the audio stream.

    ``start``/``end``: the speech itself; ``audio``: (samples,) float32 16 kHz from
    ``audio_start`` (``start`` minus padding) on; ``decided_at``: the stream position at which the
    segmenter closed it (``end`` + the silence it waited for); ``reason``: "silence",
    "max_length" or "end_of_stream".
    """

    index: int
    start: int
    end: int
    audio: np.ndarray
    audio_start: int
    decided_at: int
    reason: str
    sample_rate: int = SAMPLE_RATE


class UtteranceSegmenter:
    """Streaming end-of-utterance detection: ``push(samples)`` returns the utterances it closed.

    Memory is bounded: outside speech it keeps ``speech_pad_ms`` (+ a window) of audio, inside
    speech at most ``max_utterance_s`` plus padding.
    """

    def __init__(self, cfg: VadConfig | None = None, vad: SileroVAD | None = None):
        self.cfg = cfg or VadConfig()
        self.vad = vad or SileroVAD(self.cfg.model)
        ms = SAMPLE_RATE // 1000
        self.min_silence = self.cfg.min_silence_ms * ms
        self.pad = self.cfg.speech_pad_ms * ms
        self.min_speech = self.cfg.min_speech_ms * ms
        self.max_len = int(self.cfg.max_utterance_s * SAMPLE_RATE)
        self.min_cut_pause = 100 * ms  # pauses at least this long are preferred cut points
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self._buf = np.zeros(0, np.float32)  # audio from stream sample self._buf_start on
        self._buf_start = 0
        self._pos = 0  # stream position up to which windows have been scored
        self._pending = np.zeros(0, np.float32)  # tail shorter than one window
        self._speaking = False
        self._start = 0
        self._pause_start: int | None = None
        self._cut: tuple[int, int] | None = None  # (pause start, pause end) of the last long pause
        self._floor = 0  # no utterance audio before this sample (previous utterance's audio end)
        self._count = 0
        self.last_prob = 0.0
        self.last_probs = np.zeros(0, np.float32)  # P(speech) of the windows the last push scored

    @property
    def position(self) -> int:
        """Samples received so far."""
        return self._pos + len(self._pending)

    @property
    def scored(self) -> int:
        """Stream position up to which windows have been scored (a multiple of WINDOW)."""
        return self._pos

    @property
    def speaking(self) -> bool:
        """Inside a stretch of speech (including a pause shorter than ``min_silence_ms``)."""
        return self._speaking

    @property
    def speech_start(self) -> int | None:
        """Where the stretch of speech in progress began (None: not speaking)."""
        return self._start if self._speaking else None

    @property
    def pause_start(self) -> int | None:
        """Where the pause in progress inside speech began (None: not in a pause, or not speaking)."""
        return self._pause_start if self._speaking else None

    def push(self, samples: np.ndarray) -> list[Utterance]:
        """Feed (n,) float32 16 kHz audio; returns utterances closed by it (usually none)."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        data = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n = len(data) // WINDOW * WINDOW
        self._pending = data[n:].copy()
        if n == 0:
            self.last_probs = np.zeros(0, np.float32)
            return []
        self._buf = np.concatenate([self._buf, data[:n]])
        probs = self.vad.probs(data[:n].reshape(-1, WINDOW))
        out: list[Utterance] = []
        for k, p in enumerate(probs):
            u = self._step(self._pos + k * WINDOW, float(p))
            if u is not None:
                out.append(u)
        self._pos += n
        self._trim()
        self.last_probs = probs
        if probs.size:
            self.last_prob = float(probs[-1])
        return out

    def flush(self) -> list[Utterance]:
        """End of stream: close the utterance in progress (if long enough)."""
        if len(self._pending):
            self._buf = np.concatenate([self._buf, self._pending])
            self._pos += len(self._pending)
            self._pending = np.zeros(0, np.float32)
        out = []
        if self._speaking:
            end = self._pause_start if self._pause_start is not None else self._pos
            u = self._emit(self._start, end, self._pos, "end_of_stream")
            if u is not None:
                out.append(u)
            self._speaking = False
        return out

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[Utterance]:
        """Segment a whole stream of chunks (a file, a finite capture)."""
        for chunk in chunks:
            yield from self.push(chunk)
        yield from self.flush()

    # -- internals ---------------------------------------------------------------------------

    def _step(self, pos: int, p: float) -> Utterance | None:
        cfg = self.cfg
        end_of_window = pos + WINDOW
        if p >= cfg.threshold and self._pause_start is not None:
            if pos - self._pause_start >= self.min_cut_pause:
                self._cut = (self._pause_start, pos)
            self._pause_start = None
        if not self._speaking:
            if p >= cfg.threshold:
                self._speaking, self._start, self._cut = True, pos, None
            return None
        if end_of_window - self._start > self.max_len:
            if self._cut is not None and self._cut[0] > self._start:
                end, resume = self._cut
            else:
                end = resume = end_of_window
            u = self._emit(self._start, end, end_of_window, "max_length")
            self._start, self._cut, self._pause_start = resume, None, None
            return u
        if p < cfg.neg_threshold:
            if self._pause_start is None:
                self._pause_start = pos
            if end_of_window - self._pause_start >= self.min_silence:
                u = self._emit(self._start, self._pause_start, end_of_window, "silence")
                self._speaking, self._pause_start, self._cut = False, None, None
                return u
        return None

    def _emit(self, start: int, end: int, decided_at: int, reason: str) -> Utterance | None:
        if end - start < self.min_speech:
            log.debug("dropped %.0f ms of speech at %.2f s (shorter than min_speech_ms)",
                      (end - start) * 1000 / SAMPLE_RATE, start / SAMPLE_RATE)
            return None
        a0 = max(start - self.pad, self._floor, self._buf_start)
        a1 = min(end + self.pad, self._buf_start + len(self._buf), decided_at)
        audio = self._buf[a0 - self._buf_start : a1 - self._buf_start].copy()
        self._floor = a1
        u = Utterance(self._count, start, end, audio, a0, decided_at, reason)
        self._count += 1
        log.debug("utterance %d: %.2f-%.2f s (%s)", u.index, u.start_s, u.end_s, reason)
        return u

    def _trim(self) -> None:
        """Drop audio no future utterance can need, keeping memory bounded."""
        keep_from = (self._start if self._speaking else self._pos) - self.pad - WINDOW
        keep_from = max(keep_from, self._buf_start)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
