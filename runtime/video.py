"""Video frames for the live runtime: an OpenCV camera (by index) or a video file.

Frames are never queued without bound. A reader thread decodes continuously and keeps:

* :class:`LatestFrame` -- the newest frame only; a consumer that is slower than the camera
  simply gets the newest frame next time, and ``dropped`` counts the frames it never saw
  (the overlay window and face detection take frames from here and never fall behind);
* :class:`FrameHistory` -- a ring of recent frames (at most ``history_fps`` per second for
  ``history_s`` seconds) so an utterance's frames can be gathered once its end is known.

Timestamps (:attr:`Frame.t`): for a camera, seconds since :attr:`VideoSource.start_time`
(a ``time.monotonic()`` reading, like the microphone's ``start_time``, so ``start_time + t``
on both sides puts frames and audio samples on one clock); for a file, the frame's time in the
file (index / fps), which lines up with sample / 16000 of the file's own audio track.

Faults: no camera at that index, a missing or unreadable file -> InputError at open. A camera
that stops delivering mid-session is *lost* (a logged warning, :attr:`VideoSource.lost`): the
frames already captured stay in the history, the session goes on audio-only, and the reader
tries to reopen the camera every ``video.reconnect_s`` seconds; frames flow again once it is back.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from runtime.config import VideoConfig
from train.common import InputError

log = logging.getLogger(__name__)


@dataclass
class Frame:
    """image: (H, W, 3) uint8 BGR; t: seconds on the session clock; index: frame number read."""

    image: np.ndarray
    t: float
    index: int


class LatestFrame:
    """A one-slot buffer: ``put`` replaces, ``get`` returns the newest frame not yet taken."""

    def __init__(self):
        self._frame: Frame | None = None
        self._taken = -1
        self._cond = threading.Condition()
        self.dropped = 0  # frames replaced before anyone took them
        self.closed = False

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None and self._frame.index > self._taken:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def peek(self) -> Frame | None:
        """Newest frame, taken or not (for an overlay that redraws)."""
        return self._frame

    def get(self, timeout: float | None = None) -> Frame | None:
        """Newest frame newer than the last one returned; None on timeout or when closed."""
        with self._cond:
            if self._frame is None or self._frame.index <= self._taken:
                if self.closed:
                    return None
                self._cond.wait(timeout)
            if self._frame is None or self._frame.index <= self._taken:
                return None
            self._taken = self._frame.index
            return self._frame


class FrameHistory:
    """Bounded ring of recent frames, sub-sampled to ``fps``, for per-utterance features."""

    def __init__(self, seconds: float = 20.0, fps: float = 5.0):
        self.fps = fps
        self._ring: collections.deque[Frame] = collections.deque(maxlen=max(1, int(seconds * fps)))
        self._lock = threading.Lock()

    def add(self, frame: Frame) -> None:
        with self._lock:
            if self._ring and frame.t - self._ring[-1].t < 1.0 / self.fps - 1e-6:
                return
            self._ring.append(frame)

    def between(self, t0: float, t1: float) -> list[Frame]:
        """Frames with t0 <= t <= t1, oldest first."""
        with self._lock:
            return [f for f in self._ring if t0 <= f.t <= t1]

    def __len__(self) -> int:
        return len(self._ring)


def open_cv2_capture(source: int | str):
    """``cv2.VideoCapture(source)``, with OpenCV's own open-failure logging silenced (the caller
    says it in one line)."""
    import cv2

    prev = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(source)
    finally:
        cv2.utils.logging.setLogLevel(prev)


class VideoSource:
    """Frames from a camera index or a video file, read on a background thread (:meth:`start`), or
    on the caller's thread (:meth:`frames`, files only).

    ``realtime`` (files only): pace reading to the file's frame times; otherwise read as fast
    as possible (the latest-frame buffer then drops what the consumer does not take).
    ``open_capture(source)``: what opens the device or file (default OpenCV's ``VideoCapture``);
    anything with ``isOpened``, ``read``, ``get``, ``set`` and ``release`` will do.

    A camera that stops delivering frames is *lost* (:attr:`lost` says why); the reader then
    tries to reopen it every ``video.reconnect_s`` seconds, and frames flow again once it is back
    (:attr:`reconnects` counts the returns). ``reconnect_s = 0`` ends the source instead.
    """

    def __init__(self, source: int | str | Path, cfg: VideoConfig | None = None, realtime: bool = True,
                 *, open_capture: Callable[[int | str], Any] | None = None):
        self.cfg = cfg or VideoConfig()
        self.is_camera = isinstance(source, int)
        self.source = source
        self.realtime = realtime
        self.latest = LatestFrame()
        self.history = FrameHistory(self.cfg.history_s, self.cfg.history_fps)
        self.ended_reason: str | None = None
        self.lost: str | None = None  # why the camera is gone right now (None while frames come)
        self.reconnects = 0  # times a lost camera came back
        self.frames_read = 0
        self.start_time: float | None = None
        self._open_capture = open_capture or open_cv2_capture
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.is_camera:
            cap = self._open_capture(source)
            if not cap.isOpened():
                raise InputError(f"no camera at index {source}")
            self._configure(cap)
        else:
            path = Path(source)
            if not path.is_file():
                raise InputError("video file not found", path=str(path))
            cap = self._open_capture(str(path))
            if not cap.isOpened():
                raise InputError("cannot read as video", path=str(path))
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise InputError(f"camera {source} delivers no frames" if self.is_camera else "no video frames could be decoded",
                             path=None if self.is_camera else str(source))
        self._cap = cap
        self._first: np.ndarray | None = first
        self.fps = self._fps(cap)

    def _configure(self, cap) -> None:
        import cv2

        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height),
                            (cv2.CAP_PROP_FPS, self.cfg.fps)):
            if value:
                cap.set(prop, value)

    @staticmethod
    def _fps(cap) -> float:
        import cv2

        try:
            return float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        except (TypeError, ValueError):
            return 0.0

    def time_of(self, index: int) -> float:
        """Seconds of frame ``index``: since :attr:`start_time` for a camera, in the file for a file."""
        import cv2

        if self.is_camera:
            return time.monotonic() - self.start_time
        if self.fps > 0:  # constant frame rate (what OpenCV's FFmpeg backend reports)
            return index / self.fps
        return self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

    def frames(self) -> Iterator[Frame]:
        """A file's frames in order, read on the caller's thread (``--fast``); instead of :meth:`start`."""
        if self.is_camera:
            raise ValueError("frames() reads files; a camera runs on its own thread (start())")
        if self._thread is not None or self._first is None:
            raise ValueError("this video source is already being read")
        index, image, self._first = 0, self._first, None
        try:
            while image is not None and not self._stop.is_set():
                yield Frame(image, self.time_of(index), index)
                self.frames_read = index + 1
                ok, image = self._cap.read()
                image = image if ok else None
                index += 1
            self.ended_reason = "end of file" if image is None else "stopped"
        finally:
            self._cap.release()

    def _publish(self, image: np.ndarray, index: int) -> None:
        frame = Frame(image, self.time_of(index), index)
        self.latest.put(frame)
        self.history.add(frame)
        self.frames_read = index + 1

    def _reopen(self) -> bool:
        """A lost camera: try to open it again every ``reconnect_s`` until it delivers or we stop."""
        self._cap.release()
        while not self._stop.wait(self.cfg.reconnect_s):
            try:
                cap = self._open_capture(self.source)
                ok = cap.isOpened()
                if ok:
                    self._configure(cap)
                    ok, image = cap.read()
                    ok = ok and image is not None
                if not ok:
                    cap.release()
                    continue
            except Exception as e:  # noqa: BLE001 - a driver in trouble: keep trying, say it under --debug
                log.debug("camera %s: reopening failed: %s", self.source, e)
                continue
            self._cap, self._first = cap, image
            return True
        return False

    def _run(self) -> None:
        index = 0
        image = self._first
        self._first = None
        try:
            while not self._stop.is_set():
                self._publish(image, index)
                if not self.is_camera and self.realtime:
                    due = self.start_time + self.latest.peek().t
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                ok, image = self._cap.read()
                if not ok or image is None:
                    if not self.is_camera:
                        self.ended_reason = "end of file"
                        break
                    self.lost = f"camera {self.source} stopped delivering frames after {self.frames_read} frames"
                    if self.cfg.reconnect_s <= 0:
                        self.ended_reason = self.lost
                        log.warning("%s; continuing without video", self.lost)
                        break
                    log.warning("%s; continuing without video, trying to reopen it every %g s", self.lost,
                                self.cfg.reconnect_s)
                    lost_at = time.monotonic()
                    if not self._reopen():
                        break
                    log.warning("camera %s is back after %.1f s without frames", self.source, time.monotonic() - lost_at)
                    self.lost = None
                    self.reconnects += 1
                    image, self._first = self._first, None
                index += 1
        finally:
            if self._stop.is_set() and self.ended_reason is None:
                self.ended_reason = "stopped"
            self._cap.release()
            self.latest.close()

    def start(self) -> "VideoSource":
        if self._thread is None:
            self.start_time = time.monotonic()
            self._thread = threading.Thread(target=self._run, name=f"video-{self.source}", daemon=True)
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._cap.release()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
