"""``python -m runtime.tools.segmentation_sweep``: the segmentation alone on spoken validation dialogues.

::

    python -m runtime.tools.segmentation_sweep --gap 0.25 --dialogues 4
    python -m runtime.tools.segmentation_sweep --gap 1.0 --dialogues 3 --set segmentation.boundary_pause_ms=450

What :mod:`runtime.evaluate_live` measures about utterance boundaries and speakers, without the
ASR, the features and the model (minutes instead of tens of minutes, for choosing segmentation
settings): the same validation renders (:func:`runtime.evaluate_live.render_dialogue`), the same
VAD, utterance assembly (:class:`runtime.segmentation.UtteranceAssembler`), speaker-change
detection and speaker clustering as the live pipeline, each final utterance assigned a speaker
when it closes (merges re-label earlier ones), and the same scoring (one-to-one matching by time
overlap, the utterances with the other speaker on both sides, purity, speaker count). The audio is
fed in ``audio.chunk_ms`` chunks as fast as it goes. ``--diag`` lists the missed utterances that have the
other speaker on both sides, with the final utterances over them.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from train.common import run_cli


def segment_dialogue(wav: Path, cfg, encoder) -> tuple[list[dict], int]:
    """Final utterances of one rendering as ``{"start", "end", "speaker", "reason", "decided"}``
    (seconds; ``decided``: where in the stream it was closed), speakers corrected by later merges;
    and the speaker changes the assembler found."""
    from runtime.config import SAMPLE_RATE
    from runtime.segmentation import UtteranceAssembler
    from runtime.speaker_change import SpeakerChangeDetector
    from runtime.speakers import SpeakerTracker
    from runtime.tools.make_speech import read_wav

    audio = read_wav(wav)
    tracker = SpeakerTracker(cfg.speakers, encoder=encoder)
    detector = SpeakerChangeDetector(encoder, cfg.segmentation, voices=tracker) if cfg.segmentation.mode == "utterance" else None
    assembler = UtteranceAssembler(cfg.vad, cfg.segmentation, detector=detector)
    finals: list[dict] = []

    def take(views) -> None:
        for v in views:
            if not v.final:
                continue
            a = tracker.assign(v.audio)
            for merged, into in a.merges:
                for e in finals:
                    if e["speaker"] == merged:
                        e["speaker"] = into
            finals.append({"start": v.start_s, "end": v.end_s, "speaker": a.speaker, "reason": v.reason,
                           "decided": v.decided_at / SAMPLE_RATE})

    chunk = cfg.audio.chunk_ms * SAMPLE_RATE // 1000  # samples per push, as the file source's chunks
    for i in range(0, len(audio), chunk):
        take(assembler.push(audio[i : i + chunk]))
    take(assembler.flush())
    return finals, assembler.changes


def main(argv: Sequence[str] | None = None) -> int:
    from runtime import evaluate_live as ev
    from runtime.config import add_settings_args, settings_from_args

    p = argparse.ArgumentParser(prog="python -m runtime.tools.segmentation_sweep",
                                description="Utterance boundaries and speakers on spoken validation dialogues, no ASR.")
    ev.add_render_args(p)
    add_settings_args(p)
    p.add_argument("--diag", action="store_true", help="list the missed utterances with the other speaker on both sides")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gap_arg, gap_range = ev.checked_gaps(args)

    from runtime.speakers import VoiceEncoder

    cfg = settings_from_args(args)
    dialogues = ev.validation_dialogues(args, "iemocap")  # validation only: never a test split
    work = Path(args.work)
    encoder = VoiceEncoder(cfg.speakers.cache_dir)
    t0 = time.perf_counter()
    tot = dict(n=0, matched=0, both=0, both_matched=0, pure=0, judged=0, count_right=0, changes=0)
    gap = f"{gap_arg:g} s gaps" if gap_arg is not None else f"gaps drawn from {gap_range[0]:g}-{gap_range[1]:g} s"
    print(f"segmentation alone, {len(dialogues)} validation dialogues, {gap}" + (f", --set {' '.join(args.overrides)}" if args.overrides else ""))
    for d in dialogues:
        wav, gold = ev.render_dialogue(d, work, gap_arg, args.seed, gap_range)
        finals, changes = segment_dialogue(wav, cfg, encoder)
        ok = [m is not None for m in ev.match(finals, gold)]
        both = ev.other_speaker_both_sides(gold)
        pure, judged = ev.purity_counts(finals, gold)
        found, true = len({e["speaker"] for e in finals}), len({g.speaker for g in gold})
        both_ok = sum(a and b for a, b in zip(ok, both))
        for k, v in dict(n=len(gold), matched=sum(ok), both=sum(both), both_matched=both_ok, pure=pure, judged=judged,
                         count_right=int(found == true), changes=changes).items():
            tot[k] += v
        print(f"{d.id:22s} utterances {len(gold):3d}  one-to-one {100 * np.mean(ok):5.1f}%  other speaker on both sides "
              f"{both_ok}/{sum(both)}  finals {len(finals):3d}  speakers {found}/{true}  purity {100 * pure / max(1, judged):5.1f}%"
              f"  changes {changes}", flush=True)
        if args.diag:
            for gi, (g, b, o) in enumerate(zip(gold, both, ok)):
                if b and not o:
                    over = [e for e in finals if e["end"] > g.start and e["start"] < g.end]
                    print(f"    missed #{gi} speaker {g.speaker} {g.start:.2f}-{g.end:.2f} s: "
                          + "; ".join(f"[{e['start']:.2f}-{e['end']:.2f} speaker {e['speaker']} {e['reason']}]" for e in over))
    print(f"pooled: one-to-one {100 * tot['matched'] / max(1, tot['n']):.1f}% ({tot['matched']} of {tot['n']}); "
          f"other speaker on both sides {100 * tot['both_matched'] / max(1, tot['both']):.1f}% "
          f"({tot['both_matched']} of {tot['both']}); purity {100 * tot['pure'] / max(1, tot['judged']):.1f}%; "
          f"speaker count right in {tot['count_right']} of {len(dialogues)}; {tot['changes']} speaker changes; "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
