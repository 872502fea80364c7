"""Media for audio/visual extraction: a CSV manifest mapping utterances to spans of media files.

Manifest (UTF-8 CSV with a header; extra columns are ignored)::

    dialogue_id,utterance_index,path,start,end
    Ses01F_impro01,0,Ses01F_impro01.wav,6.29,8.24
    Ses01F_impro01,1,Ses01F_impro01.wav,10.01,11.36

``path`` is relative to the manifest's directory (or absolute); ``start``/``end`` are seconds
into the file (empty: from the beginning / to the end). Audio is decoded with PyAV (any
container FFmpeg reads, video files' audio tracks included) to 16 kHz mono float32; video frames
are read with OpenCV at :data:`VIDEO_FPS` frames per second of the span.
"""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.common import InputError
from train.features.base import SAMPLE_RATE

COLUMNS = ("dialogue_id", "utterance_index", "path", "start", "end")
VIDEO_FPS = 4.0  # frames sampled per second of an utterance: expressions change slower than that
MAX_FRAMES = 64  # per utterance, so a long monologue cannot exhaust memory


@dataclass(frozen=True)
class MediaSpan:
    """One utterance's media: ``path`` from ``start`` to ``end`` seconds (None: file start/end)."""

    path: Path
    start: float | None
    end: float | None

    def stamp(self) -> tuple:
        """What the extracted features depend on, for the cache key (file identity + span)."""
        st = self.path.stat()
        return (str(self.path.resolve()), st.st_size, st.st_mtime_ns, self.start, self.end)


def read_manifest(path: str | Path) -> dict[tuple[str, int], MediaSpan]:
    """(dialogue id, utterance index) -> :class:`MediaSpan`. Errors name the manifest and row."""
    path = Path(path)
    if not path.is_file():
        raise InputError("media manifest not found (expected a CSV with columns " + ", ".join(COLUMNS) + ")", path=str(path))
    spans: dict[tuple[str, int], MediaSpan] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS[:3] if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"media manifest lacks column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}", path=str(path))
            for line, row in enumerate(reader, start=2):
                where = f"row {line}"
                try:
                    key = (str(row["dialogue_id"]).strip(), int(row["utterance_index"]))
                    start = _seconds(row.get("start"))
                    end = _seconds(row.get("end"))
                except ValueError as e:
                    raise InputError(f"{where}: {e}", path=str(path)) from None
                if start is not None and end is not None and end <= start:
                    raise InputError(f"{where}: end {end} <= start {start}", path=str(path))
                media = Path(str(row["path"]).strip())
                if not media.is_absolute():
                    media = path.parent / media
                if not media.is_file():
                    raise InputError(f"{where}: media file not found: {media}", path=str(path))
                if key in spans:
                    raise InputError(f"{where}: utterance {key[1]} of dialogue {key[0]!r} listed twice", path=str(path))
                spans[key] = MediaSpan(media, start, end)
    except UnicodeDecodeError as e:
        raise InputError(f"media manifest is not UTF-8 text: {e.reason}", path=str(path)) from None
    except csv.Error as e:
        raise InputError(f"media manifest is not valid CSV: {e}", path=str(path)) from None
    return spans


def _seconds(value: str | None) -> float | None:
    if value is None or not str(value).strip():
        return None
    x = float(value)
    if not np.isfinite(x) or x < 0:
        raise ValueError(f"time {value!r} is not a non-negative number of seconds")
    return x


@functools.lru_cache(maxsize=2)  # utterances of one recording come in a row: decode it once
def _decode_audio(path: str, sample_rate: int) -> np.ndarray:
    try:
        import av
    except ImportError:
        raise InputError("reading audio needs PyAV: pip install av") from None
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise InputError("media file has no audio track", path=path)
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except av.error.FFmpegError as e:
        raise InputError(f"cannot decode audio: {e}", path=path) from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def load_audio(span: MediaSpan, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(samples,) float32 mono at ``sample_rate`` for the span (empty when the span is past the end)."""
    audio = _decode_audio(str(span.path), sample_rate)
    a = 0 if span.start is None else int(round(span.start * sample_rate))
    b = len(audio) if span.end is None else int(round(span.end * sample_rate))
    return audio[a:b]


def load_frames(span: MediaSpan, fps: float = VIDEO_FPS, max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    """(H, W, 3) uint8 BGR frames sampled at ``fps`` over the span (empty list: no frames there)."""
    try:
        import cv2
    except ImportError:
        raise InputError("reading video needs OpenCV: pip install 'opencv-python-headless<5'") from None
    cap = cv2.VideoCapture(str(span.path))
    if not cap.isOpened():
        raise InputError("cannot open video", path=str(span.path))
    try:
        if span.start:
            cap.set(cv2.CAP_PROP_POS_MSEC, span.start * 1000.0)
        frames: list[np.ndarray] = []
        next_t = span.start or 0.0
        while len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if span.end is not None and t > span.end:
                break
            if t + 1e-6 >= next_t:
                frames.append(frame)
                next_t += 1.0 / fps
        return frames
    finally:
        cap.release()
