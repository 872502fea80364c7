"""Make the sample conversation that ``python -m runtime.live --demo`` replays.

``python -m runtime.tools.make_demo [--out runtime/demo]`` writes

* ``demo.mp4``    -- a face photo (NASA's public-domain portrait of Eileen Collins, from
  ``runtime/demo/astronaut_320.jpg``) as 320x320 video at 5 fps, with the sound track of a
  two-voice espeak-ng conversation (:mod:`runtime.tools.make_speech`, AAC mono 16 kHz);
* ``script.json`` -- what is said, by whom, and when (seconds), for checking the transcripts.

A progress bar along the bottom edge moves with time, so a replay visibly runs. The files are
small (well under 1 MB) and are committed; re-run this only to change the demo. Needs the Debian
packages espeak-ng and sox.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.config import DEMO_DIR, DEMO_FACE, SAMPLE_RATE
from runtime.tools.make_speech import make_conversation, read_wav
from runtime.tools.media import write_video
from train.common import InputError, run_cli, write_text_atomic

log = logging.getLogger(__name__)

OUT = DEMO_DIR
FACE = DEMO_FACE
FPS = 5.0


def make_demo(out_dir: str | Path = OUT, face: str | Path = FACE, gap_s: float = 1.0) -> Path:
    """Write demo.mp4 and script.json into ``out_dir``; returns the video's path."""
    import cv2

    img = cv2.imread(str(face))
    if img is None:
        raise InputError("cannot read the face photo", path=str(face))
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        meta = make_conversation(tmp, gap_s=gap_s)
        audio = read_wav(Path(tmp) / "speech.wav")
    seconds = len(audio) / SAMPLE_RATE
    n = int(round(seconds * FPS))

    def frame(i: int) -> np.ndarray:
        f = rgb.copy()
        f[h - 6 :, : int(w * (i + 1) / n)] = (40, 200, 40)  # progress bar
        return f

    video = write_video(out / "demo.mp4", audio, seconds, fps=FPS, size=(w, h), frame=frame)
    meta["source"] = {"face": FACE.name, "voices": "espeak-ng (runtime.tools.make_speech.VOICES)", "fps": FPS}
    write_text_atomic(out / "script.json", json.dumps(meta, indent=1) + "\n")
    log.info("wrote %s (%.1f s, %.0f kB)", video, seconds, video.stat().st_size / 1e3)
    return video


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.tools.make_demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(OUT), help=f"output directory (default {OUT})")
    p.add_argument("--face", default=str(FACE), help="face photo (JPEG/PNG)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(make_demo(args.out, args.face))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
