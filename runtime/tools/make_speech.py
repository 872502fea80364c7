"""Generate a scripted two-speaker conversation with espeak-ng and sox (test and demo speech).

``python -m runtime.tools.make_speech --out DIR`` writes

* ``DIR/speech.wav``  -- 16 kHz mono 16-bit PCM, utterances separated by ``--gap`` seconds of
  silence (plus ``--lead`` seconds before the first one);
* ``DIR/script.json`` -- ``{"sample_rate", "utterances": [{"index", "speaker", "voice", "text",
  "start", "end"}]}`` with the true start/end of each utterance's audio, in seconds;
* ``DIR/script.txt``  -- ``speaker<TAB>text``, one utterance a line.

The two speakers are espeak-ng's American English voice with different variants and pitch
(a low male voice and a higher female variant), different enough for a speaker-embedding model
to tell apart. Needs the Debian packages ``espeak-ng`` and ``sox``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from train.common import InputError, atomic_file, run_cli, write_text_atomic
from runtime.config import SAMPLE_RATE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Voice:
    """espeak-ng settings for one speaker: ``-v name -p pitch -s words_per_minute``."""

    name: str
    pitch: int
    speed: int


VOICES = {
    "A": Voice("en-us", pitch=35, speed=150),  # low male voice
    "B": Voice("en-us+f3", pitch=75, speed=160),  # female variant, higher pitch
    # More speakers (MELD's scenes have up to 8), chosen among 138 espeak-ng variant / pitch pairs
    # for distinct voice embeddings (runtime.speakers.VoiceEncoder, 4 test sentences each): the
    # six voices' centroids are at most 0.73 alike (the join bar is 0.75), where en-gb+m3 at pitch
    # 55 had been 0.96 like A and merged with it in the first MELD renders.
    "C": Voice("en-us+anika", pitch=50, speed=155),
    "D": Voice("en-us+Lee", pitch=20, speed=155),
    "E": Voice("en-us+f5", pitch=50, speed=155),
    "F": Voice("en-us+Storm", pitch=85, speed=155),
}

# A short conversation with an emotional arc; plain words that a small ASR model can spell.
DEFAULT_SCRIPT: list[tuple[str, str]] = [
    ("A", "I finally got the job offer this morning."),
    ("B", "That is wonderful news, I am so happy for you."),
    ("A", "Thank you, I was really nervous about the interview."),
    ("B", "Why did you not tell me about it before?"),
    ("A", "I did not want you to worry about me."),
    ("B", "Well, next time please tell me the truth."),
    ("A", "I am sorry, you are right about that."),
    ("B", "It is fine, let us go out and celebrate tonight."),
]


def require_tools() -> None:
    """Raise :class:`InputError` naming the missing Debian package(s)."""
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise InputError(
            f"{' and '.join(missing)} not found; install with: apt-get install -y espeak-ng sox"
        )


def synthesize(text: str, voice: Voice, workdir: Path) -> np.ndarray:
    """One utterance as (samples,) float32 at 16 kHz, leading/trailing silence trimmed."""
    raw = workdir / "raw.wav"
    out = workdir / "16k.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice.name, "-p", str(voice.pitch), "-s", str(voice.speed), "-w", str(raw), text],
        check=True, capture_output=True,
    )
    # sox: resample to 16 kHz mono 16-bit; trim espeak's silence at both ends so that the
    # script's start/end times are the speech itself. -R (repeatable): sox dithers the 16-bit
    # output with noise from a seed it draws per run; without it the same text gave samples that
    # differed by 1-2 LSB in a quarter of them, so corpora and the features computed from them
    # were not reproducible.
    subprocess.run(
        ["sox", "-R", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out),
         "silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%", "reverse"],
        check=True, capture_output=True,
    )
    return read_wav(out)


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono WAV as (samples,) float32 in [-1, 1]."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise InputError("expected 16-bit mono WAV", path=str(path))
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write (samples,) float32 as 16-bit mono WAV, atomically (temp file, then rename)."""
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    with atomic_file(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def make_conversation(
    out_dir: str | Path,
    script: Sequence[tuple[str, str]] = DEFAULT_SCRIPT,
    gap_s: float = 1.0,
    lead_s: float = 0.5,
    tail_s: float = 1.0,
    noise_dbfs: float | None = None,
    seed: int = 0,
    gaps: Sequence[float] | None = None,
    voice_of: Mapping[str, str] | None = None,
) -> dict:
    """Synthesize ``script`` (speaker, text) pairs into ``out_dir``; returns the script dict.

    ``noise_dbfs`` adds white noise at that RMS level over the whole file (None: digital
    silence in the gaps). ``gaps``: the silence after each utterance but the last (len(script)
    - 1 values, seconds) instead of one ``gap_s`` for all. ``voice_of``: speaker name -> key of
    :data:`VOICES` for scripts whose speakers have other names (e.g. IEMOCAP's "M"/"F").
    """
    require_tools()
    if gaps is not None and len(gaps) != max(0, len(script) - 1):
        raise InputError(f"{len(gaps)} gaps for {len(script)} utterances (need {max(0, len(script) - 1)})")
    voice_of = dict(voice_of or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pieces: list[np.ndarray] = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)]
    cursor = len(pieces[0])
    utterances = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (speaker, text) in enumerate(script):
            key = voice_of.get(speaker, speaker)
            if key not in VOICES:
                raise InputError(f"unknown speaker {speaker!r}; known: {', '.join(VOICES)}")
            audio = synthesize(text, VOICES[key], Path(tmp))
            utterances.append({
                "index": i, "speaker": speaker, "voice": VOICES[key].name, "text": text,
                "start": cursor / SAMPLE_RATE, "end": (cursor + len(audio)) / SAMPLE_RATE,
            })
            after = tail_s if i == len(script) - 1 else (gap_s if gaps is None else float(gaps[i]))
            gap = np.zeros(int(round(after * SAMPLE_RATE)), np.float32)
            pieces += [audio, gap]
            cursor += len(audio) + len(gap)
    audio = np.concatenate(pieces)
    if noise_dbfs is not None:
        rng = np.random.default_rng(seed)
        audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * (10 ** (noise_dbfs / 20))
    write_wav(out / "speech.wav", audio)
    meta = {"sample_rate": SAMPLE_RATE, "utterances": utterances}
    write_text_atomic(out / "script.json", json.dumps(meta, indent=1))
    (out / "script.txt").write_text("".join(f"{u['speaker']}\t{u['text']}\n" for u in utterances))
    log.info("wrote %d utterances, %.1f s, to %s", len(utterances), len(audio) / SAMPLE_RATE, out)
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.tools.make_speech", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--gap", type=float, default=1.0, help="silence between utterances, seconds")
    p.add_argument("--noise-dbfs", type=float, default=None, help="add white noise at this RMS level (e.g. -50)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    meta = make_conversation(args.out, gap_s=args.gap, noise_dbfs=args.noise_dbfs)
    for u in meta["utterances"]:
        print(f"{u['start']:6.2f}-{u['end']:6.2f}  {u['speaker']}  {u['text']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
