"""Write a video file with a sound track (PyAV): test material and sample sessions."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from train.common import atomic_file
from runtime.config import SAMPLE_RATE


def write_video(
    path: str | Path,
    audio: np.ndarray | None,
    seconds: float,
    fps: float = 10.0,
    size: tuple[int, int] = (64, 48),
    frame: Callable[[int], np.ndarray] | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """MPEG-4 video (+ AAC mono audio when ``audio`` is given) to ``path``, atomically.

    frame(i) -> (H, W, 3) uint8 RGB for frame i; default: a grey level that changes per frame.
    audio: (samples,) float32 in [-1, 1] at ``sample_rate``.
    """
    import av

    path = Path(path)
    w, h = size
    with atomic_file(path) as tmp:  # the temporary name keeps the suffix: it picks the container
        container = av.open(str(tmp), "w")
        try:
            vs = container.add_stream("mpeg4", rate=int(round(fps)))
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            aus = None
            if audio is not None:
                aus = container.add_stream("aac", rate=sample_rate)
                aus.layout = "mono"
            for i in range(int(round(seconds * fps))):
                img = frame(i) if frame else np.full((h, w, 3), (i * 7) % 256, np.uint8)
                for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    container.mux(packet)
            for packet in vs.encode():
                container.mux(packet)
            if aus is not None:
                pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
                for s in range(0, len(pcm), 1024):
                    af = av.AudioFrame.from_ndarray(pcm[None, s : s + 1024], format="s16", layout="mono")
                    af.sample_rate = sample_rate
                    for packet in aus.encode(af):
                        container.mux(packet)
                for packet in aus.encode():
                    container.mux(packet)
        finally:
            container.close()
    return path
