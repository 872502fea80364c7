"""``--record DIR``: save a session so it can be replayed with ``--audio``/``--video``.

DIR receives

* ``audio.wav``   -- every audio sample the recognizer got (16 kHz mono 16-bit PCM);
* ``video.mp4``   -- the video frames at a constant ``fps`` on the audio clock (frame ``k`` shows
  the newest frame at ``k / fps`` s), so ``--video DIR/video.mp4`` lines up with the audio;
* ``events.jsonl`` -- the session's events, as ``--events`` writes them.

Replay: ``python -m runtime.live --video DIR/video.mp4 --audio DIR/audio.wav``.

Each file is written under a temporary name and renamed when the session closes, so DIR never
holds a half-written file under a final name (a killed session leaves only ``*.partial`` files).
DIR is checked when the Recorder is made but created (with its parent required to exist) only by
:meth:`Recorder.open`, when the session starts: a session that fails to start leaves nothing.
"""
from __future__ import annotations

import logging
import os
import threading
import wave
from pathlib import Path

import numpy as np

from runtime.config import SAMPLE_RATE
from runtime.events import EventWriter
from train.common import InputError, move_into_place

log = logging.getLogger(__name__)

AUDIO_FILE = "audio.wav"
VIDEO_FILE = "video.mp4"
EVENTS_FILE = "events.jsonl"


def _partial(path: Path) -> Path:
    return path.with_name(path.stem + ".partial" + path.suffix)  # keep the suffix: it picks the container


class Recorder:
    """Streams audio, video frames and events of one session into ``directory`` (after :meth:`open`)."""

    def __init__(self, directory: str | os.PathLike, video_fps: float = 10.0):
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise InputError("--record needs a directory, this is a file", path=str(self.dir))
        existing = [f for f in (AUDIO_FILE, VIDEO_FILE, EVENTS_FILE) if (self.dir / f).exists()]
        if existing:
            raise InputError(f"--record directory already holds a recording ({', '.join(existing)}); choose a new one",
                             path=str(self.dir))
        if not self.dir.exists() and not self.dir.parent.is_dir():
            raise InputError(f"--record: the directory {self.dir.parent} does not exist; create it first", path=str(self.dir))
        self.fps = float(video_fps)
        self._lock = threading.Lock()
        self._wav = None  # opened by open()
        self.samples = 0
        self.events = EventWriter(None)
        self._video = None  # opened on the first frame (its size is known then)
        self._stream = None
        self._next_k = 0  # next constant-rate frame index to write
        self._last: np.ndarray | None = None
        self.frames_written = 0
        self.closed = False
        self.created_dir = False  # open() made the directory

    def open(self) -> "Recorder":
        """Create the directory (when missing; ``created_dir`` says so) and the partial files."""
        with self._lock:
            if self._wav is not None or self.closed:
                return self
            try:
                if not self.dir.is_dir():
                    self.dir.mkdir()
                    self.created_dir = True
                    log.info("created the recording directory %s", self.dir)
                self._wav = wave.open(str(_partial(self.dir / AUDIO_FILE)), "wb")
            except OSError as e:
                raise InputError(f"cannot record here: {e.strerror}", path=str(self.dir)) from None
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(SAMPLE_RATE)
            self.events = EventWriter(_partial(self.dir / EVENTS_FILE))
            self.events.open()
        return self

    # -- audio / events --------------------------------------------------------------------------
    def audio(self, chunk: np.ndarray) -> None:
        pcm = np.clip(np.round(np.asarray(chunk, np.float32) * 32767.0), -32768, 32767).astype("<i2")
        with self._lock:
            if self._wav is not None and not self.closed:
                self._wav.writeframes(pcm.tobytes())
                self.samples += len(pcm)

    def event(self, event: dict) -> None:
        self.events.write(event)

    # -- video ---------------------------------------------------------------------------------
    def frame(self, image: np.ndarray, t: float) -> None:
        """A frame at ``t`` s on the audio clock; written on the constant-rate grid up to ``t``."""
        import av

        with self._lock:
            if self.closed or self._wav is None:
                return
            if self._video is None:
                h, w = image.shape[:2]
                self._video = av.open(str(_partial(self.dir / VIDEO_FILE)), "w")
                self._stream = self._video.add_stream("mpeg4", rate=int(round(self.fps)))
                self._stream.width, self._stream.height = w - w % 2, h - h % 2
                self._stream.pix_fmt = "yuv420p"
                self._stream.bit_rate = 1_000_000
            # Frames of the grid before this one show the previous frame (or this one, at the start).
            while self._next_k / self.fps < t:
                self._write(self._last if self._last is not None else image)
            self._last = image
            if self._next_k / self.fps <= t + 1e-9:
                self._write(image)

    def _write(self, image: np.ndarray) -> None:
        import av

        w, h = self._stream.width, self._stream.height
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="bgr24")
        for packet in self._stream.encode(frame):
            self._video.mux(packet)
        self._next_k += 1
        self.frames_written += 1

    # -- end -----------------------------------------------------------------------------------
    def close(self) -> list[Path]:
        """Finish the files and give them their final names; returns them."""
        with self._lock:
            if self.closed:
                return []
            self.closed = True
            if self._wav is None:  # never opened: the session did not start
                return []
            # pad the video to the audio's length so both tracks end together
            if self._video is not None and self._last is not None:
                while self._next_k / self.fps < self.samples / SAMPLE_RATE:
                    self._write(self._last)
            self._wav.close()
            done = []
            if self._video is not None:
                for packet in self._stream.encode():
                    self._video.mux(packet)
                self._video.close()
                move_into_place(_partial(self.dir / VIDEO_FILE), self.dir / VIDEO_FILE)
                done.append(self.dir / VIDEO_FILE)
        self.events.close()
        for name in (AUDIO_FILE, EVENTS_FILE):
            move_into_place(_partial(self.dir / name), self.dir / name)
            done.append(self.dir / name)
        log.info("recorded %.1f s of audio, %d video frames, %d events in %s", self.samples / SAMPLE_RATE,
                 self.frames_written, self.events.count, self.dir)
        return done
