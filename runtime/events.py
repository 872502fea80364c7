"""What the runtime tells the world: JSON-lines events and a one-line terminal status.

Event kinds (one JSON object per line, flushed line by line so a reader sees each at once):

* ``{"type": "utterance", "final", "index", "start", "end", "speaker", "text", "emotion", "probs",
  "latency_ms": {stage: ms}, "modalities"}`` -- a label of one utterance. ``final: false``: a
  provisional label of the utterance so far, sent at each pause inside it
  (``segmentation.provisional_pause_ms`` of silence); ``final: true``: the utterance is over (a boundary pause, a change of speaker, the
  length limit or the end of the audio), with its whole transcript, its speaker and its label.
  Provisional and final events of one utterance share its ``index``; each utterance has exactly
  one final event (none when its audio holds no words), and only final utterances join the
  conversation history the graph sees. To keep final labels only, keep the events with
  ``"final": true`` (``jq -c 'select(.final == true)'``). ``start``/``end``: seconds on the
  session's audio clock; ``speaker``: integer id in order of first appearance; ``probs``: label
  -> probability; ``modalities``: which modalities the model saw for it; ``face``: the
  facial-expression model's own output for the utterance, ``{"probs": {expression: p},
  "frames": n}`` (fer's 7 class probabilities averaged over the utterance's frames that had a
  face, and how many did; :mod:`runtime.face`), ``null`` without video or without a face. It is
  evidence shown beside the label, not the label: ``emotion`` comes from the emotion model.
* ``{"type": "speaker_update", "merged": [id], "into": id, "indices": [...]}`` -- two speaker
  ids turned out to be one voice: the final utterances listed (which carried the merged id) now
  carry ``into``, and the merged id is never used again. The graph's window is re-labelled too.
* ``{"type": "status", "state": "started"|"stopped", ...}`` -- session start (model, backend,
  sources) and end (counts, why it ended).
* ``{"type": "warning", "message", ...}`` -- something stopped working or was skipped (no face,
  camera gone, an utterance with no words, no speech at all, an utterance cut at the length
  limit), and the session went on.

Latency stages (``latency_ms``; see :mod:`runtime.recognizer`): ``vad`` (end of speech -> the
segmenter closes the utterance: the silence it waits for), ``queue`` (waiting for the model
thread), ``asr`` (0 for a provisional label whose view was transcribed early, before its pause
was long enough to show it), ``speaker``, ``features`` (+ one key per modality, e.g. ``features.text``),
``model`` (graph + classifier), ``face`` (the face evidence: the frames the face thread had not
reached yet; with video only) and ``total`` (end of speech -> event, as it would be live). Final
events add ``after_close``: from the moment the utterance closed to the event (``vad`` is then
the wait for the close: the boundary pause, or until the change of voice was sure).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Literal, Mapping, Sequence, TypedDict

import numpy as np

from train.common import InputError

log = logging.getLogger(__name__)

STAGES = ("vad", "queue", "asr", "speaker", "features", "model", "total")


class FaceEvidence(TypedDict):
    """The face model's own reading of an utterance: fer's expression probabilities (angry,
    disgust, fear, happy, sad, surprise, neutral) averaged over ``frames`` frames with a face."""

    probs: dict[str, float]
    frames: int


class UtteranceEvent(TypedDict):
    """One labelled utterance (the module docstring says what each field means)."""

    type: Literal["utterance"]
    final: bool
    index: int
    start: float
    end: float
    speaker: int
    text: str
    emotion: str
    probs: dict[str, float]
    latency_ms: dict[str, float]
    modalities: list[str]
    face: FaceEvidence | None


class SpeakerUpdateEvent(TypedDict):
    """Speaker ids found to be one voice: ``merged`` ids now read ``into`` in the final ``indices``."""

    type: Literal["speaker_update"]
    merged: list[int]
    into: int
    indices: list[int]


class StatusEvent(TypedDict, total=False):
    """Session start / end; further fields (model, backend, sources, counts, reason) vary."""

    type: Literal["status"]
    state: str
    time: float


class WarningEvent(TypedDict, total=False):
    """Something was skipped or stopped working and the session went on; may carry ``source``..."""

    type: Literal["warning"]
    message: str


Event = UtteranceEvent | SpeakerUpdateEvent | StatusEvent | WarningEvent


def utterance_event(index: int, start: float, end: float, speaker: int, text: str, labels: Sequence[str],
                    probs: np.ndarray, latency_ms: Mapping[str, float], modalities: Sequence[str] = (),
                    final: bool = True, face: FaceEvidence | None = None) -> UtteranceEvent:
    """The event of one labelled utterance; ``probs``: (C,) in the order of ``labels``; ``face``:
    the face evidence (:func:`runtime.face.face_evidence`) or None.

    ``final``: False for a provisional label of the utterance so far (at a pause inside it)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.shape[0] != len(labels):
        raise ValueError(f"{p.shape[0]} probabilities for {len(labels)} labels")
    return {
        "type": "utterance",
        "final": bool(final),
        "index": int(index),
        "start": round(float(start), 3),
        "end": round(float(end), 3),
        "speaker": int(speaker),
        "text": text,
        "emotion": labels[int(np.argmax(p))],
        "probs": {lab: round(float(v), 5) for lab, v in zip(labels, p)},
        "latency_ms": {k: round(float(v), 1) for k, v in latency_ms.items()},
        "modalities": list(modalities),
        "face": face,
    }


def speaker_update_event(merged: int, into: int, indices: Sequence[int]) -> SpeakerUpdateEvent:
    """Speaker ``merged`` turned out to be speaker ``into``: the final utterances ``indices``
    (which carried ``merged``) now carry ``into``; ``merged`` is never used again."""
    return {"type": "speaker_update", "merged": [int(merged)], "into": int(into), "indices": [int(i) for i in indices]}


def status_event(state: str, **fields: Any) -> StatusEvent:
    return {"type": "status", "state": state, "time": round(time.time(), 3), **fields}


def warning_event(message: str, **fields: Any) -> WarningEvent:
    return {"type": "warning", "message": message, **fields}


def check_output_file(path: str | os.PathLike, what: str = "--events") -> Path:
    """InputError unless a file can be created at ``path`` later: its directory must exist (it is
    not created for you) and ``path`` must not be a directory. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} names a directory; give a file name (or - for stdout)", path=str(path))
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{what}: the directory {parent} does not exist; create it first", path=str(path))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what}: cannot write in the directory {parent}", path=str(path))
    return path


class EventWriter:
    """JSON lines to a file (``path``) or stdout (``"-"``); each line written whole and flushed.

    A file is checked when the writer is made (:func:`check_output_file`: its directory must
    exist) but created only by :meth:`open` or the first :meth:`write`, i.e. once the session has
    started: a session that fails to start leaves no file behind. It is then written line by line
    rather than at the end, so a session that is killed keeps every event it produced. Thread-safe.
    """

    def __init__(self, target: str | os.PathLike | IO[str] | None):
        self._lock = threading.Lock()
        self._own = False
        self._closed = False
        self.path: Path | None = None
        self._out: IO[str] | None = None
        if target == "-":
            self._out = sys.stdout
        elif target is not None and hasattr(target, "write"):
            self._out = target  # type: ignore[assignment]
        elif target is not None:
            self.path = check_output_file(target)
        self.count = 0

    def open(self) -> None:
        """Create the events file now (a no-op for stdout, a stream or no target)."""
        with self._lock:
            self._open()

    def _open(self) -> None:
        if self.path is None or self._out is not None or self._closed:
            return
        try:
            self._out = open(self.path, "w", encoding="utf-8", buffering=1)
        except OSError as e:
            raise InputError(f"cannot write events: {e.strerror}", path=str(self.path)) from None
        self._own = True

    def write(self, event: Mapping[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._open()
            if self._out is None:
                return
            self._out.write(line)
            self._out.flush()
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._own and self._out is not None:
                self._out.close()
            self._out = None
            self._closed = True


def format_status(event: Mapping[str, Any]) -> str:
    """One terminal line for an utterance event: label, speaker, text and per-stage latency."""
    lat = event.get("latency_ms", {})
    stages = " ".join(f"{k} {lat[k]:.0f}" for k in STAGES if k in lat)
    p = event["probs"][event["emotion"]]
    text = event["text"]
    if len(text) > 40:
        text = text[:37] + "..."
    mark = " " if event.get("final", True) else "~"  # ~ = provisional
    return (f"#{event['index']:<3d}{mark}spk {event['speaker']}  {event['emotion']:>8s} {p:4.2f}  "
            f"\"{text}\"  [ms: {stages}]")


class StatusLine:
    """The latest label and latencies on one terminal line (stderr), rewritten in place.

    Only drawn when the stream is a terminal (``force`` to draw anyway); a non-terminal gets
    nothing, so logs and piped events stay clean. ``whole_lines``: one finished line per event
    instead of rewriting one line in place, for when the events go to the same terminal on stdout
    (``--events -``): a line left open there would have the next JSON event appended to it.
    """

    def __init__(self, stream: IO[str] | None = None, force: bool = False, whole_lines: bool = False):
        self.stream = stream or sys.stderr
        self.enabled = force or (hasattr(self.stream, "isatty") and self.stream.isatty())
        self.whole_lines = whole_lines
        self._width = 0
        self._lock = threading.Lock()

    def show(self, event: Mapping[str, Any]) -> None:
        if not self.enabled or event.get("type") != "utterance":
            return
        line = format_status(event)
        with self._lock:
            if self.whole_lines:
                self.stream.write(line + "\n")
                self.stream.flush()
                return
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()
            self._width = len(line)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
