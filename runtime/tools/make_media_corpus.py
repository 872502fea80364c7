"""Make a small conversation corpus out of media: what a user holding IEMOCAP or MELD recordings has.

``python -m runtime.tools.make_media_corpus --out DIR [--dialogues 10] [--utterances 5]`` writes

* ``DIR/dNN.wav``  -- each dialogue's speech: espeak-ng in two voices (:mod:`runtime.tools.make_speech`),
  16 kHz mono, 1 s of silence between turns;
* ``DIR/dNN.mp4``  -- its video (5 fps, 320x320, with the same speech as its AAC sound track): the
  astronaut photo (``runtime/demo/astronaut_320.jpg``, a real face) varied per utterance by a crop,
  a flip and a brightness that follow the utterance's emotion, plus a small per-dialogue jitter, so
  faces differ. The picture changes half-way through each gap, so every utterance's frames (with
  the VAD's padding) show its own face;
* ``DIR/iemocap_media.pkl`` -- the corpus in COSMIC's IEMOCAP layout (speakers, labels, transcripts,
  train / test / valid dialogue ids), readable by every ``train`` command;
* ``DIR/manifest.csv`` -- ``dialogue_id, utterance_index, path, start, end`` for every utterance
  (``train.extract.media``): the true span of its speech in ``dNN.mp4``.

Emotions: happy, sad, neutral, angry (IEMOCAP ids 0-3), drawn with a fixed seed; each one's
sentences carry it in plain words (text) and its face variant shows it (visual). The speech says
nothing about it beyond the words (the two voices are the speakers). Splits: the last 2 dialogues
are ``test``, the 2 before them ``valid``, the rest ``train``. Deterministic for a seed. Needs the
Debian packages espeak-ng and sox.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import pickle
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.config import DEMO_FACE, SAMPLE_RATE
from runtime.tools.make_speech import make_conversation, read_wav, write_wav
from runtime.tools.media import write_video
from train.common import InputError, atomic_file, run_cli, write_text_atomic

log = logging.getLogger(__name__)

FPS = 5.0
SIZE = 320
GAP_S = 1.0
LABELS = {0: "happy", 1: "sad", 2: "neutral", 3: "angry"}  # IEMOCAP ids
# Plain sentences that Whisper tiny.en transcribes in both voices (other candidates came out as other
# words, or as no words at all in the higher voice).
SENTENCES = {
    0: ["I am so happy today", "this is lovely news", "what a wonderful day"],
    1: ["I feel so sad and alone", "I miss her very much", "I cried all night long"],
    2: ["please close the window", "I put the keys on the table", "my brother lives in the city"],
    3: ["stop shouting at me right now", "I am furious with you", "get out of my room"],
}
# Face variant per emotion: (crop: fraction of the photo kept around its face, mirrored, brightness offset).
FACES = {0: (1.0, False, 0), 1: (0.8, True, -45), 2: (0.9, False, 30), 3: (0.7, True, 10)}
CORPUS = "iemocap_media.pkl"
MANIFEST = "manifest.csv"


def face_variant(photo: np.ndarray, label: int, jitter: int = 0) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8 RGB: ``photo`` cropped, mirrored and brightened as ``FACES[label]`` says."""
    import cv2

    keep, mirror, light = FACES[label]
    h, w = photo.shape[:2]
    side = int(min(h, w) * keep)
    x0, y0 = (w - side) // 2, max(0, (h - side) // 4)  # keep the upper middle: the face
    img = photo[y0 : y0 + side, x0 : x0 + side]
    if mirror:
        img = img[:, ::-1]
    img = cv2.resize(np.ascontiguousarray(img), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.clip(img.astype(np.int16) + light + jitter, 0, 255).astype(np.uint8)


def make_media_corpus(out_dir: str | Path, dialogues: int = 10, utterances: int = 5, seed: int = 0,
                      face: str | Path = DEMO_FACE) -> Path:
    """Write the corpus (see the module docstring) into ``out_dir``; returns the corpus file."""
    import cv2

    if dialogues < 5 or utterances < 2:
        raise InputError("need at least 5 dialogues (train, 2 valid, 2 test) and 2 utterances each")
    bgr = cv2.imread(str(face))
    if bgr is None:
        raise InputError("cannot read the face photo", path=str(face))
    photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    speakers, labels, sentences, rows = {}, {}, {}, []
    ids = [f"d{k:02d}" for k in range(dialogues)]
    from tqdm.auto import tqdm

    for did in tqdm(ids, desc="dialogues", unit="dialogue"):
        ys = [int(v) for v in rng.integers(0, len(LABELS), utterances)]
        who = ["A" if i % 2 == 0 else "B" for i in range(utterances)]
        texts = [SENTENCES[y][int(rng.integers(0, len(SENTENCES[y])))] for y in ys]
        jitter = int(rng.integers(-15, 16))
        with tempfile.TemporaryDirectory() as tmp:
            script = make_conversation(tmp, list(zip(who, texts)), gap_s=GAP_S)["utterances"]
            audio = read_wav(Path(tmp) / "speech.wav")
        write_wav(out / f"{did}.wav", audio)
        # utterance k's face from half-way through the gap before it to half-way through the gap after it
        switch = [u["end"] + GAP_S / 2 for u in script[:-1]]
        variants = [face_variant(photo, y, jitter) for y in ys]

        def frame(i: int, switch=switch, variants=variants) -> np.ndarray:
            return variants[int(np.searchsorted(switch, i / FPS, side="right"))]

        seconds = len(audio) / SAMPLE_RATE
        write_video(out / f"{did}.mp4", audio, seconds, fps=FPS, size=(SIZE, SIZE), frame=frame)
        speakers[did], labels[did], sentences[did] = who, ys, texts
        rows += [(did, u["index"], f"{did}.mp4", f"{u['start']:.3f}", f"{u['end']:.3f}") for u in script]
    train, valid, test = ids[:-4], ids[-4:-2], ids[-2:]
    corpus = out / CORPUS
    with atomic_file(corpus) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump([speakers, labels, sentences, train, test, valid], f, protocol=4)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dialogue_id", "utterance_index", "path", "start", "end"])
    writer.writerows(rows)
    write_text_atomic(out / MANIFEST, buf.getvalue())
    log.info("wrote %d dialogues (%d utterances) to %s: train %d, valid %d, test %d", dialogues, len(rows), out,
             len(train), len(valid), len(test))
    return corpus


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.tools.make_media_corpus", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--dialogues", type=int, default=10, help="dialogues (the last 2 are test, the 2 before valid)")
    p.add_argument("--utterances", type=int, default=5, help="utterances per dialogue")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    corpus = make_media_corpus(args.out, args.dialogues, args.utterances, args.seed)
    print(f"corpus {corpus}\nmanifest {corpus.parent / MANIFEST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
