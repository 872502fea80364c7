"""``python -m runtime.tools.asr_transcripts``: what the live ASR hears in a corpus's training dialogues.

::

    python -m runtime.tools.asr_transcripts --split train --out runs/asr/iemocap-train.jsonl

Each dialogue of ``--split`` (train or valid; never a test split) is spoken by espeak-ng as
:mod:`runtime.evaluate_live` renders validation dialogues (one voice per speaker, ``--gap``
seconds between utterances), and each utterance's audio, cut from the rendering at its true span
plus the VAD's padding, is transcribed as the live pipeline transcribes a final utterance
(:class:`runtime.asr.Transcriber`, ``asr.beam_size``, the previous ``asr.prompt_utterances``
transcripts as the prompt). The transcripts are training data: ``data.asr_transcripts`` in a
training config (:mod:`train.data.asr_views`) adds each training dialogue a second time with
them, so the model learns from the words as the runtime's ASR gets them, errors included.

``--voices`` picks the espeak-ng voices of speakers 0, 1, ... (default A B ..., as
``runtime.evaluate_live``): a second file with other voices is a second view of the same dialogues
with other ASR errors (``data.asr_transcripts`` takes a list of files).

Output: one JSON line per dialogue, ``{"dialogue": id, "texts": [...], "voices": [...]}``, ``null``
where an utterance has no words to speak (only markers such as ``[LAUGHTER]``) or the ASR returned
none. Written as it goes and resumable: a rerun skips the dialogues already in ``--out`` (an
interrupted last line is dropped and redone); a rerun with other voices is refused.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from train.common import InputError, run_cli, write_text_atomic

log = logging.getLogger("runtime.tools.asr_transcripts")


def read_done(path: Path, voices: Sequence[str] | None = None) -> dict[str, list]:
    """Dialogue id -> texts of the lines already in ``path``; an unreadable last line (an
    interrupted write) is dropped from the file, any other unreadable line is an InputError.
    Blank lines are skipped, as training's reader (``read_asr_transcripts``) skips them. With
    ``voices``, a line spoken with others (no ``voices`` key: the default) is an InputError: one file
    holds one view."""
    from train.data.asr_views import transcript_line

    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    done: dict[str, list] = {}
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            did, texts = transcript_line(line)
        except ValueError as e:
            if n == len(lines) - 1:
                log.warning("%s: dropped an interrupted last line; its dialogue is transcribed again", path)
                write_text_atomic(path, "".join(x + "\n" for x in lines[:-1]))
                break
            raise InputError(f"line {n + 1} {e}", path=str(path)) from None
        if voices is not None:
            had = json.loads(line).get("voices", default_voices())
            if list(had) != list(voices):
                raise InputError(f"line {n + 1} was spoken with voices {' '.join(had)}, this run's are "
                                 f"{' '.join(voices)}: give another --out", path=str(path))
        done[did] = texts
    return done


def default_voices() -> list[str]:
    """The voices a render uses when none are given (``runtime.evaluate_live.checked_voices``)."""
    from runtime.evaluate_live import checked_voices

    return checked_voices(None)


def transcribe_dialogue(dialogue, work: Path, gap: float, transcriber, cfg,
                        voices: Sequence[str] | None = None) -> list[str | None]:
    """The live final decoding of each utterance of ``dialogue`` spoken by espeak-ng with ``voices``
    (speakers 0, 1, ...; default A B ...) (None: no words)."""
    from runtime import evaluate_live as ev
    from runtime.asr import previous_text_prompt
    from runtime.tools.make_speech import read_wav

    wav, gold = ev.render_dialogue(dialogue, work, gap, 0, voices=voices)
    audio = read_wav(wav)
    pad = cfg.vad.speech_pad_ms / 1000
    texts: list[str | None] = [None] * len(dialogue)
    history: list[str] = []
    for g in gold:
        out = transcriber.transcribe(g.clip(audio, pad), prompt=previous_text_prompt(history, cfg.asr.prompt_utterances))
        if out is not None:
            history.append(out.text)
            texts[g.index] = out.text
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    from runtime import evaluate_live as ev
    from runtime.config import add_settings_args, settings_from_args

    p = argparse.ArgumentParser(prog="python -m runtime.tools.asr_transcripts",
                                description="Transcribe a corpus split as the live ASR hears it (espeak-ng renders).")
    p.add_argument("--data", default=str(ev.DEFAULT_DATA["iemocap"]), help="corpus file (default: IEMOCAP train+valid)")
    p.add_argument("--split", default="train", choices=["train", "valid"], help="which split (never test; default train)")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="where the transcripts go (resumed if it exists)")
    p.add_argument("--gap", type=float, default=1.0, help="silence between utterances in the renders, seconds (default 1)")
    p.add_argument("--dialogues", type=int, default=None, metavar="N", help="the first N dialogues only")
    p.add_argument("--work", default=str(ev.REPO / "cache" / "asr_transcripts"), help="where renders are kept")
    ev.add_voices_arg(p)
    add_settings_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not 0.0 <= args.gap <= 10.0:
        raise InputError(f"--gap must be between 0 and 10 seconds, got {args.gap}")

    from tqdm.auto import tqdm

    from runtime.asr import Transcriber
    from train.data import load_corpus

    cfg = settings_from_args(args)
    voices = ev.checked_voices(args.voices)
    if not Path(args.data).is_file():
        raise InputError("corpus file not found (give --data)", path=args.data)
    dialogues = [d for d in load_corpus(args.data).split(args.split) if d.texts is not None]
    if args.dialogues:
        dialogues = dialogues[: args.dialogues]
    if not dialogues:
        raise InputError(f"no {args.split} dialogues with transcripts", path=args.data)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(out, voices)
    todo = [d for d in dialogues if d.id not in done]
    transcriber = Transcriber(cfg.asr)
    for d in tqdm(todo, desc="dialogues", unit="dlg", file=sys.stderr):
        texts = transcribe_dialogue(d, Path(args.work), args.gap, transcriber, cfg, voices)
        with out.open("a", encoding="utf-8") as f:  # one whole line per dialogue: a kill loses at most that one
            f.write(json.dumps({"dialogue": d.id, "texts": texts, "voices": voices}) + "\n")
    print(f"{len(dialogues)} {args.split} dialogues in {out} ({len(todo)} transcribed now, {len(dialogues) - len(todo)} already there)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
