"""Audio sources for the live runtime, all delivering 16 kHz mono float32 chunks.

* :class:`FileAudioSource` -- any file PyAV (FFmpeg) can open, including the sound track of a
  video file; decoded and resampled to 16 kHz mono float32 on the fly, optionally paced to
  real time (replay) or as fast as possible (``--fast``).
* :class:`MicrophoneSource` -- sounddevice (PortAudio) capture at 16 kHz mono.

Never dropping audio, never blocking capture
-------------------------------------------
PortAudio calls the capture callback on its own thread; if that callback blocks, the driver
overruns and audio is lost inside the driver. So the callback only appends the block to an
:class:`AudioQueue` and returns. The queue is bounded by *duration*, not by a small item count:
``audio.queue_max_s`` (default 10 minutes, ~38 MB of float32) lets a slow consumer fall far
behind without losing a sample. Should it fall further behind than that, the queue does not
start dropping silently: capture stops, the consumer receives every sample queued until then,
and then :class:`AudioOverflowError` names the problem. A bounded queue that silently drops (or
a blocking put) would corrupt utterance boundaries and timings without anyone noticing.

Faults: a missing/unreadable file, no audio track, no PortAudio, no microphone or a bad device
are :class:`~train.common.InputError` at open time. A microphone that disappears mid-session
(PortAudio ends the stream, or no block arrives for ``audio.stall_timeout_s``) is reopened every
``audio.reconnect_s`` until it is back, the gap delivered as silence (see
:class:`MicrophoneSource`); with ``reconnect_s = 0`` it ends the source with a logged warning,
and everything captured before is still delivered.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from runtime.config import SAMPLE_RATE, AudioConfig
from train.common import InputError
from train.extract.media import wav_truncation

log = logging.getLogger(__name__)

MIC_POLL_S = 0.1  # the microphone reader re-checks for a stalled or ended stream this often
# A block arriving this long after the previous one ends a stall: the audio the device did not
# deliver meanwhile is lost, and its duration goes on the queue as silence so that sample k stays at
# start_time + k / 16000. PortAudio's own buffering is tens of milliseconds, far below this.
GAP_FILL_S = 0.5


class AudioOverflowError(InputError):
    """The consumer fell more than ``queue_max_s`` behind capture; capture was stopped.

    A subclass of InputError so that CLIs report it as one clear line (run_cli).
    """


class NoAudioTrackError(InputError):
    """The file opens as media but has no audio track (e.g. a silent video)."""


class AudioQueue:
    """Unbounded-in-spirit, bounded-in-fact FIFO of float32 chunks between capture and consumer.

    ``put`` never blocks and never drops: it either stores the chunk or, once more than
    ``max_samples`` would be waiting, marks the queue overflowed and refuses it (returns False)
    so the producer can stop capture. ``get`` returns chunks in order, then ``None`` at the end
    of a closed queue, then raises :class:`AudioOverflowError` if it ended by overflow.
    """

    def __init__(self, max_samples: int):
        self.max_samples = int(max_samples)
        self._items: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._overflow = False
        self.reason: str | None = None  # why the producer closed it
        self.total_samples = 0  # ever accepted
        self.high_water = 0  # most samples waiting at once

    @property
    def queued_samples(self) -> int:
        return self._queued

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def overflowed(self) -> bool:
        """Closed because the consumer fell more than ``max_samples`` behind (see :meth:`put`)."""
        return self._overflow

    def put(self, chunk: np.ndarray) -> bool:
        """Append a chunk (the queue keeps a reference: pass a copy). Never blocks."""
        with self._cond:
            if self._closed:
                return False
            if self._queued + len(chunk) > self.max_samples:
                self._overflow = True
                self._closed = True
                self.reason = (
                    f"audio consumer fell {self._queued / SAMPLE_RATE:.1f} s behind capture "
                    f"(bound audio.queue_max_s = {self.max_samples / SAMPLE_RATE:.0f} s); capture stopped"
                )
                self._cond.notify_all()
                return False
            self._items.append(chunk)
            self._queued += len(chunk)
            self.total_samples += len(chunk)
            self.high_water = max(self.high_water, self._queued)
            self._cond.notify_all()
            return True

    def close(self, reason: str | None = None) -> None:
        """No more chunks will come; the consumer still receives those queued."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self.reason = reason
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> np.ndarray | None:
        """Next chunk; ``None`` on timeout or at the end of a closed, drained queue.

        Raises AudioOverflowError once the queue is drained if it was closed by overflow.
        """
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                chunk = self._items.popleft()
                self._queued -= len(chunk)
                return chunk
            if self._closed and self._overflow:
                raise AudioOverflowError(self.reason or "audio queue overflowed")
            return None

    def finished(self) -> bool:
        """Closed and drained (and not by overflow: get() raises in that case)."""
        with self._cond:
            return self._closed and not self._items


# -- files -------------------------------------------------------------------------------------


def _open_container(path: str | Path):
    import av

    p = Path(path)
    if not p.exists():
        raise InputError("audio file not found", path=str(p))
    if not p.is_file():
        raise InputError("not a file", path=str(p))
    try:
        container = av.open(str(p))
    except av.FFmpegError as e:  # unreadable / not media
        raise InputError(f"cannot read as audio/video: {e.strerror or type(e).__name__}", path=str(p)) from None
    if not container.streams.audio:
        container.close()
        raise NoAudioTrackError("has no audio track", path=str(p))
    return container


class FileAudioSource:
    """Decode a file's (first) audio track to 16 kHz mono float32 chunks of ``chunk_ms``.

    ``realtime=True`` paces delivery to the wall clock (replay as if live); otherwise chunks
    come as fast as they decode. A decoding error part-way through ends the stream with a
    logged warning after the audio decoded so far.
    """

    def __init__(self, path: str | Path, chunk_ms: int = 32, realtime: bool = False):
        self.path = Path(path)
        self.chunk = SAMPLE_RATE * chunk_ms // 1000
        self.realtime = realtime
        self.sample_rate = SAMPLE_RATE
        _open_container(self.path).close()  # fail now, clearly, not on first iteration
        # A WAV that ends before its header's length (FFmpeg reads it without a word): said now.
        self.truncated: str | None = wav_truncation(self.path)
        if self.truncated:
            log.warning("%s: %s; replaying the audio that is there", self.path, self.truncated)
        self.samples_delivered = 0
        self.start_time: float | None = None  # time.monotonic() when delivery began
        self.ended_reason: str | None = None
        self._stop = False

    def close(self) -> None:
        self._stop = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _decoded(self) -> Iterator[np.ndarray]:
        import av

        container = _open_container(self.path)
        try:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            skip = 0  # samples before file time 0 (negative start pts)
            try:
                first = True
                for frame in container.decode(stream):
                    if first and frame.time is not None and frame.time != 0:
                        # Place sample 0 at file time 0 so audio lines up with video timestamps.
                        lead = int(round(frame.time * SAMPLE_RATE))
                        if lead > 0:
                            yield np.zeros(lead, np.float32)
                        else:
                            skip = -lead
                    first = False
                    for out in resampler.resample(frame):
                        samples = out.to_ndarray().reshape(-1)
                        if skip:
                            cut = min(skip, len(samples))
                            samples, skip = samples[cut:], skip - cut
                        yield samples
                for out in resampler.resample(None):  # flush the resampler's tail
                    yield out.to_ndarray().reshape(-1)
                self.ended_reason = "end of file"
            except av.FFmpegError as e:
                self.ended_reason = f"decoding failed after {self.samples_delivered / SAMPLE_RATE:.2f} s: {e}"
                log.warning("%s: %s; keeping the audio decoded so far", self.path, self.ended_reason)
        finally:
            container.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        self.start_time = time.monotonic()
        pending = np.zeros(0, np.float32)
        for samples in self._decoded():
            pending = np.concatenate([pending, samples.astype(np.float32, copy=False)])
            while len(pending) >= self.chunk:
                if self._stop:
                    self.ended_reason = "stopped"
                    return
                chunk, pending = pending[: self.chunk].copy(), pending[self.chunk :]
                yield from self._deliver(chunk)
        if len(pending) and not self._stop:
            yield from self._deliver(pending.copy())

    def _deliver(self, chunk: np.ndarray) -> Iterator[np.ndarray]:
        if self.realtime:
            due = self.start_time + self.samples_delivered / SAMPLE_RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.samples_delivered += len(chunk)
        yield chunk


def load_audio(path: str | Path) -> np.ndarray:
    """A whole file's audio (or a video's sound track) as (samples,) float32 16 kHz mono."""
    src = FileAudioSource(path, chunk_ms=1000)
    parts = list(src)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# -- microphone --------------------------------------------------------------------------------


def _sounddevice():
    try:
        import sounddevice
    except OSError as e:  # the wheel needs the system PortAudio library
        raise InputError(f"microphone capture needs PortAudio ({e}); install it with: apt-get install -y libportaudio2") from None
    return sounddevice


class MicrophoneSource:
    """sounddevice capture at 16 kHz mono, int16 from the device, delivered as float32 chunks.

    ``device``: None for the default input, an index, or a name (substring). Iterating yields
    chunks until :meth:`close`. Capturing int16 lets PortAudio/ALSA hand over the device's native
    format; the conversion to float32 (/32768) is done here.

    Stalls: audio the device did not deliver (a stall of more than GAP_FILL_S) is delivered as
    silence of the same length, so sample k stays at ``start_time + k / 16000`` on the wall clock
    (and in step with a camera). A microphone that is *lost* (PortAudio ends the stream, or no
    block arrives for ``audio.stall_timeout_s``) is reopened every ``audio.reconnect_s`` seconds
    until it is back (:attr:`lost` says why it is gone meanwhile, :attr:`reconnects` counts the
    returns); the time it was gone becomes silence the same way. ``notify(message)``, when set,
    hears each stall, loss and return. With ``reconnect_s = 0`` a lost microphone ends the source
    instead (everything captured before is still delivered).
    """

    def __init__(self, device: int | str | None = None, cfg: AudioConfig | None = None, *, sounddevice=None):
        """``sounddevice``: the sounddevice module (default), or a stand-in with its API (a
        simulated device for tests and the fault benchmark)."""
        self.cfg = cfg or AudioConfig()
        self.sample_rate = SAMPLE_RATE
        self.chunk = SAMPLE_RATE * self.cfg.chunk_ms // 1000
        sd = self._sd = sounddevice or _sounddevice()
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as e:
            inputs = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
            known = f"input devices: {', '.join(map(repr, inputs))}" if inputs else "PortAudio sees no input device"
            what = "no microphone found" if device is None else f"no microphone {device!r} ({str(e).splitlines()[0]})"
            raise InputError(f"{what}; {known}") from None
        self.requested = device  # what the user asked for: reopened by this after a loss
        self.device = device if device is not None else info["index"]
        self.device_name = str(info["name"])
        self.queue = AudioQueue(int(self.cfg.queue_max_s * SAMPLE_RATE))
        self.samples_delivered = 0
        self.start_time: float | None = None
        self.ended_reason: str | None = None
        self.lost: str | None = None  # why the microphone is gone right now
        self.reconnects = 0
        self.silence_filled_s = 0.0  # time it was gone, delivered as silence
        self.notify: Callable[[str], None] | None = None
        self.driver_overflows = 0  # blocks PortAudio itself reports as lost (input_overflow)
        self._captured = 0  # samples put on the queue (capture + filled silence)
        self._last_block = 0.0  # arrival of the newest block, or the (re)opening of the stream
        self._last_arrival = 0.0  # arrival of the newest block (gaps are measured from it)
        self._gaps: collections.deque[float] = collections.deque(maxlen=100)  # seconds filled, to report
        self._stream_ended = False
        self._closing = False
        self._closed = threading.Event()
        self._stream = None

    # PortAudio thread: copy, enqueue, return. Nothing here may block or log.
    def _callback(self, indata, frames, time_info, status) -> None:
        now = self._last_block = time.monotonic()
        if status.input_overflow:
            self.driver_overflows += 1
        block = indata[:, 0].astype(np.float32) / 32768.0
        if self._last_arrival and now - self._last_arrival > GAP_FILL_S:
            missing = int((now - self.start_time) * SAMPLE_RATE) - self._captured - len(block)
            if missing > 0:  # the device delivered nothing meanwhile: that time becomes silence
                if not self.queue.put(np.zeros(missing, np.float32)):
                    raise self._sd.CallbackAbort
                self._captured += missing
                self.silence_filled_s += missing / SAMPLE_RATE
                self._gaps.append(missing / SAMPLE_RATE)
        self._last_arrival = now
        if not self.queue.put(block):
            raise self._sd.CallbackAbort
        self._captured += len(block)

    def _finished(self) -> None:
        if not self._closing:
            self._stream_ended = True

    def _open_stream(self) -> None:
        sd = self._sd
        self._stream_ended = False
        self._stream = sd.InputStream(
            samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=self.chunk, device=self.device,
            callback=self._callback, finished_callback=self._finished,
        )
        self._last_block = time.monotonic()
        self._stream.start()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except self._sd.PortAudioError as e:
                log.debug("closing the microphone stream: %s", e)

    def start(self) -> "MicrophoneSource":
        if self._stream is not None:
            return self
        try:
            self.start_time = time.monotonic()
            self._open_stream()
        except self._sd.PortAudioError as e:
            self._stream = None
            raise InputError(f"cannot open microphone {self.device_name!r} at {SAMPLE_RATE} Hz mono: {e}") from None
        log.info("microphone: %s (%d Hz mono)", self.device_name, SAMPLE_RATE)
        return self

    def close(self) -> None:
        """Stop capture; chunks already captured can still be read."""
        self._closing = True
        self._closed.set()
        self.queue.close("stopped")
        self._close_stream()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _tell(self, message: str) -> None:
        log.warning("%s", message)
        if self.notify is not None:
            self.notify(message)

    def _reconnect(self, reason: str) -> bool:
        """The microphone is gone: reopen it every reconnect_s until it is back (True) or the
        source is closed (False). The time it was gone goes on the queue as silence."""
        self.lost = reason
        self._close_stream()
        self._tell(f"microphone {self.device_name!r} lost ({reason}); reopening it every {self.cfg.reconnect_s:g} s")
        lost_at = self._last_arrival or time.monotonic()
        while not self._closed.wait(self.cfg.reconnect_s):
            try:
                if self.requested is None:  # the default input now (it may be another device)
                    self.device = self._sd.query_devices(None, "input")["index"]
                self._open_stream()
            except (ValueError, self._sd.PortAudioError) as e:
                log.debug("microphone: reopening failed: %s", e)
                self._close_stream()
                continue
            self.lost = None
            self.reconnects += 1
            self._tell(f"microphone {self.device_name!r} is back after {time.monotonic() - lost_at:.1f} s without "
                       "audio (delivered as silence)")
            return True
        return False

    def __iter__(self) -> Iterator[np.ndarray]:
        self.start()
        while True:
            chunk = self.queue.get(timeout=MIC_POLL_S)  # raises AudioOverflowError after draining
            while self._gaps:
                gap = self._gaps.popleft()
                if gap < self.cfg.stall_timeout_s:  # longer ones were a loss: _reconnect said it
                    self._tell(f"microphone {self.device_name!r} delivered nothing for {gap:.1f} s; "
                               "that time is silence")
            if chunk is not None:
                self.samples_delivered += len(chunk)
                yield chunk
                continue
            if self.queue.finished():
                break
            if self._closing:
                continue
            stalled = time.monotonic() - self._last_block
            reason = None
            if stalled > self.cfg.stall_timeout_s:
                reason = f"no audio from the microphone for {stalled:.1f} s (device removed?)"
            elif self._stream_ended or (self._stream is not None and not self._stream.active):
                reason = "the audio stream ended (device removed or failed)"
            if reason is None:
                continue
            if self.cfg.reconnect_s <= 0 or not self._reconnect(reason):
                self.queue.close(reason if not self._closing else "stopped")
        self.ended_reason = self.queue.reason
        if self.driver_overflows:
            log.warning("microphone: the driver reported %d overflowed blocks (audio lost before capture)", self.driver_overflows)
        if self.ended_reason != "stopped":
            log.warning("microphone %r: %s; keeping the %.1f s captured", self.device_name, self.ended_reason,
                        self.samples_delivered / SAMPLE_RATE)
        self.close()
