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
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.common import InputError
from train.features.base import SAMPLE_RATE

log = logging.getLogger(__name__)

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
                if any(row.get(c) is None for c in COLUMNS[:3]):
                    raise InputError(f"{where}: too few fields (expected {', '.join(COLUMNS)})", path=str(path))
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


# A RIFF/WAVE data chunk whose length field holds one of these was written by a streaming writer
# that could not go back to fill it in: its length is unknown, not wrong.
_WAV_UNKNOWN_LENGTHS = (0, 0xFFFFFFFF)


def wav_truncation(path: str | Path) -> str | None:
    """For a RIFF/WAVE file whose data ends before the length its header declares, a sentence
    saying so (what the header declares, what the file holds); None for a whole file or any other
    format. Reads only the chunk headers.

    FFmpeg reads such a file without a word, so a truncated copy would otherwise replay as a
    shorter recording (or, cut inside the header's neighbourhood, as nothing at all).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            riff = f.read(12)
            if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
                return None
            byte_rate, pos = 0, 12
            while True:  # chunks: 4-byte id, 4-byte little-endian length, data padded to even length
                f.seek(pos)
                head = f.read(8)
                if len(head) < 8:
                    return "the file ends inside its WAV header (no audio data chunk)"
                cid, length = head[:4], struct.unpack("<I", head[4:])[0]
                pos += 8
                if cid == b"data":
                    if length in _WAV_UNKNOWN_LENGTHS:
                        return None
                    have = size - pos
                    if have >= length:
                        return None
                    if byte_rate:
                        return (f"the file ends before its header's length: the header declares {length / byte_rate:.2f} s "
                                f"of audio, the file holds {have / byte_rate:.2f} s ({have} of {length} bytes)")
                    return f"the file ends before its header's length: {have} of {length} bytes of audio data"
                if cid == b"fmt ":
                    fmt = f.read(min(length, 16))
                    if len(fmt) >= 12:
                        byte_rate = struct.unpack("<I", fmt[8:12])[0]
                pos += length + (length & 1)
    except OSError:
        return None


@functools.lru_cache(maxsize=2)  # utterances of one recording come in a row: decode it once
def _decode_audio(path: str, sample_rate: int) -> np.ndarray:
    try:
        import av
    except ImportError:
        raise InputError("reading audio needs PyAV: pip install av") from None
    if (truncated := wav_truncation(path)) is not None:
        log.warning("%s: %s; using the audio that is there", path, truncated)
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
        raise InputError(f"cannot decode audio: {getattr(e, 'strerror', None) or e}", path=path) from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _past_the_end(span: MediaSpan, what: str, seconds: float) -> InputError:
    """The error for a span that starts where the clip has already ended: a truncated clip, or a
    manifest naming the wrong file or times (the utterance would silently get no features)."""
    return InputError(f"an utterance's span starts at {span.start:.2f} s but the clip's {what} ends at {seconds:.2f} s "
                      "(a truncated clip, or the wrong file or times in the manifest)", path=str(span.path))


def load_audio(span: MediaSpan, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(samples,) float32 mono at ``sample_rate`` for the span.

    InputError naming the clip when the span starts at or after the end of its audio."""
    audio = _decode_audio(str(span.path), sample_rate)
    a = 0 if span.start is None else int(round(span.start * sample_rate))
    b = len(audio) if span.end is None else int(round(span.end * sample_rate))
    if span.start and a >= len(audio):
        raise _past_the_end(span, "audio", len(audio) / sample_rate)
    return audio[a:b]


def load_frames(span: MediaSpan, fps: float = VIDEO_FPS, max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    """(H, W, 3) uint8 BGR frames sampled at ``fps`` over the span (empty list: no frame in the span).

    InputError naming the clip when OpenCV cannot open it (no video track, a damaged file), or when
    the span starts at or after the end of its video."""
    try:
        import cv2
    except ImportError:
        raise InputError("reading video needs OpenCV: pip install 'opencv-python>=4.8,<5' "
                         "(or opencv-python-headless on a server; never both)") from None
    cap = cv2.VideoCapture(str(span.path))
    if not cap.isOpened():
        raise InputError("cannot open video", path=str(span.path))
    try:
        if span.start:
            cap.set(cv2.CAP_PROP_POS_MSEC, span.start * 1000.0)
        frames: list[np.ndarray] = []
        next_t = span.start or 0.0
        read = 0
        while len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                if not read and span.start:
                    count, rate = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
                    if count > 0 and rate > 0 and span.start >= count / rate:
                        raise _past_the_end(span, "video", count / rate)
                break
            read += 1
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if span.end is not None and t > span.end:
                break
            if t + 1e-6 >= next_t:
                frames.append(frame)
                next_t += 1.0 / fps
        return frames
    finally:
        cap.release()
