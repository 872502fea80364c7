"""``--window``: the camera picture with the latest label, transcript and face boxes.

The top bar shows the utterance's label, then (``| face: happy 0.93``) the top expression of the
face evidence (:mod:`runtime.face`): the face model's own reading, not the label.

The window is drawn by a display loop on the main thread (OpenCV's GUI must run there) from the
newest frame (:class:`runtime.video.LatestFrame`, newest wins) and the newest event; it never
waits for the model thread, so it keeps refreshing while an utterance is being processed. Face
boxes come from OpenCV's Haar cascade on a downscaled frame, a few times a second, in the same
loop (cheap, and independent of whether the model uses the visual modality).

OpenCV needs a GUI build (``opencv-python``, what ``.ci/setup.sh`` installs by default, not the
``-headless`` one of ``ARIIGCN_HEADLESS=1``) and a display; without them :func:`check_display`
raises a clear :class:`InputError` before the session starts. Without a screen, ``xvfb-run``
provides a virtual display (the tests show the window that way).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable

import numpy as np

from train.common import InputError

log = logging.getLogger(__name__)

WINDOW_TITLE = "ariigcn live"
FACE_EVERY_S = 0.2  # face boxes refresh rate
DETECT_WIDTH = 320  # frames are shrunk to this width for face detection
PROVISIONAL_COLOUR = (150, 200, 255)  # BGR: a provisional label's head line


def opencv_has_gui() -> bool:
    """Whether this OpenCV build can open windows (``opencv-python``, not ``-headless``)."""
    import cv2

    gui = [l for l in cv2.getBuildInformation().splitlines() if l.strip().startswith("GUI:")]
    return not (gui and "NONE" in gui[0].upper())


def check_display() -> None:
    """InputError unless an OpenCV window can be opened here."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError("--window needs a display, and this session has none (no $DISPLAY); "
                         "run without --window (events still go to --events / the terminal), "
                         "or under a virtual display: xvfb-run -a ...")
    if not opencv_has_gui():
        raise InputError("--window needs OpenCV with GUI support, but this is the headless build "
                         "(opencv-python-headless, from ARIIGCN_HEADLESS=1); for a window run bash .ci/setup.sh "
                         "without ARIIGCN_HEADLESS (it swaps the OpenCV build)")


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def headline(event: dict) -> str:
    """The top bar: ``"happy 0.81  speaker 1  | face: happy 0.93"`` (the face part only when the
    event has face evidence: the face model's own reading, beside the label, not the label)."""
    p = event["probs"][event["emotion"]]
    head = f"{event['emotion']} {p:.2f}  speaker {event['speaker']}"
    face = event.get("face")
    if face:
        top = max(face["probs"], key=face["probs"].get)
        head += f"  | face: {top} {face['probs'][top]:.2f}"
    return head


class Overlay:
    """Draws frames with the latest event; :meth:`run` is the display loop."""

    def __init__(self):
        import cv2

        self.cv2 = cv2
        self.cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
        self.boxes: list[tuple[int, int, int, int]] = []
        self._faces_at = 0.0

    def faces(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes (x, y, w, h) in frame pixels, refreshed every FACE_EVERY_S."""
        now = time.monotonic()
        if now - self._faces_at < FACE_EVERY_S or self.cascade.empty():
            return self.boxes
        self._faces_at = now
        cv2 = self.cv2
        scale = min(1.0, DETECT_WIDTH / image.shape[1])
        small = cv2.resize(image, None, fx=scale, fy=scale) if scale < 1 else image
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        found = self.cascade.detectMultiScale(gray, 1.1, 5, minSize=(24, 24))
        self.boxes = [tuple(int(v / scale) for v in b) for b in found]
        return self.boxes

    def draw(self, image: np.ndarray | None, event: dict | None, status: str = "") -> np.ndarray:
        """The frame (or a black canvas) with face boxes, the label and the transcript.

        A provisional event (``"final": false``) is drawn as such: dimmer, marked "(provisional...)";
        the final event of the same utterance replaces it."""
        cv2 = self.cv2
        canvas = np.zeros((360, 640, 3), np.uint8) if image is None else image.copy()
        if image is not None:
            for x, y, w, h in self.faces(image):
                cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 220, 0), 2)
        width = canvas.shape[1]
        if event is not None:
            final = event.get("final", True)
            # a provisional label (the utterance so far) is marked and drawn dimmer, until its final one
            head = headline(event) + ("" if final else "  (provisional...)")
            colour, weight = ((255, 255, 255), 2) if final else (PROVISIONAL_COLOUR, 1)
            cv2.rectangle(canvas, (0, 0), (width, 34), (0, 0, 0), -1)
            cv2.putText(canvas, head, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, colour, weight, cv2.LINE_AA)
            lines = _wrap(event["text"], max(20, width // 11))[-3:]
            y0 = canvas.shape[0] - 10 - 22 * (len(lines) - 1)
            for i, line in enumerate(lines):
                cv2.putText(canvas, line, (8, y0 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        if status:
            cv2.putText(canvas, status, (8, 52), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (200, 200, 200), 1, cv2.LINE_AA)
        return canvas

    def run(self, latest_frame: Callable[[], np.ndarray | None], latest_event: Callable[[], dict | None],
            running: Callable[[], bool], status: Callable[[], str] = lambda: "", fps: float = 30.0) -> int:
        """Show frames until ``running()`` is false or the user presses q / Esc / closes the window;
        returns the number of frames drawn."""
        cv2 = self.cv2
        cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_NORMAL)
        shown = 0
        try:
            while running():
                cv2.imshow(WINDOW_TITLE, self.draw(latest_frame(), latest_event(), status()))
                shown += 1
                key = cv2.waitKey(max(1, int(1000 / fps))) & 0xFF
                if key in (ord("q"), 27):
                    break
                if cv2.getWindowProperty(WINDOW_TITLE, cv2.WND_PROP_VISIBLE) < 1:
                    break
        finally:
            cv2.destroyWindow(WINDOW_TITLE)
        return shown
