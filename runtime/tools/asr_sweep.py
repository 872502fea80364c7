"""``python -m runtime.tools.asr_sweep``: the ASR alone on the gold utterances of spoken validation dialogues.

::

    python -m runtime.tools.asr_sweep --gap 1.0 --dialogues 6
    python -m runtime.tools.asr_sweep --gap 1.0 --dialogues 2 --variants default greedy beam5 fw_defaults

A rerunnable measurement, not a test: for choosing ASR settings (``asr:`` in configs/runtime.yaml)
on the same validation renders as :mod:`runtime.evaluate_live` (shared render arguments), with the
segmentation taken out of the picture. Each gold utterance's audio is cut exactly from the
rendering (its true span, plus ``pad`` seconds of the rendering on each side, as the VAD's
``speech_pad_ms`` does) and transcribed by each variant:

* ``default``: :class:`runtime.asr.Transcriber` as the live pipeline decodes a final transcript
  (``asr.beam_size``, the previous ``asr.prompt_utterances`` transcripts as the prompt);
* ``greedy`` (beam 1), ``beam3``, ``beam5``: no prompt;
* ``ctx30`` (Whisper's 30 s window), ``pad0`` / ``pad300`` (span edges): greedy, one change each;
  ``tail64``: greedy with 64 ms after the span's end (the audio of a provisional view decoded
  early, ``segmentation.early_decode_ms``);
* ``greedy_prompt``, ``prompt_beam5``, ``prompt_beam10``: the previous 4 transcripts as the prompt;
  ``prompt2_beam5``, ``prompt8_beam5``: the previous 2 / 8. The prompt is the dialogue's previous
  transcripts by this variant (as the live pipeline has its previous finals);
* ``default_float32``: ``default`` with the model's weights kept in float32
  instead of ``asr.compute_type``'s int8 on a CPU;
* ``fw_defaults``: faster-whisper's own ``transcribe`` with its defaults (beam 5, temperature
  fallback, ``condition_on_previous_text``, 30 s window), no guards of ours.

Printed per variant: WER on lower-cased words without punctuation (``raw``) and after Whisper's
English text normalizer (``norm``), both pooled over utterances (total edits / total reference
words; :func:`runtime.evaluate_live.word_edits`), utterances returned without words, and ASR
milliseconds per call (p50 / p95, wall clock, so they follow the machine's load; variants run
interleaved utterance by utterance so that each sees the same load). ``--worst N`` lists the
utterances with the most edits for the first variant.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from train.common import run_cli


@dataclass(frozen=True)
class Variant:
    """One ASR setting: overrides of ``AsrConfig``, span padding, prompting, or faster-whisper's defaults."""

    asr: dict = field(default_factory=dict)
    pad_s: float | None = None  # None = the configured vad.speech_pad_ms
    tail_s: float | None = None  # audio after the span's end; None = pad_s
    prompt: int | None = 0  # previous transcripts given as the prompt (0: none; None: asr.prompt_utterances)
    fw_defaults: bool = False


GREEDY = {"beam_size": 1}
VARIANTS: dict[str, Variant] = {
    "default": Variant(prompt=None),
    "greedy": Variant(asr=GREEDY),
    "beam3": Variant(asr={"beam_size": 3}),
    "beam5": Variant(asr={"beam_size": 5}),
    "ctx30": Variant(asr={**GREEDY, "context_s": 30.0}),
    "pad0": Variant(asr=GREEDY, pad_s=0.0),
    "pad300": Variant(asr=GREEDY, pad_s=0.3),
    "tail64": Variant(asr=GREEDY, tail_s=0.064),
    "greedy_prompt": Variant(asr=GREEDY, prompt=4),
    "prompt_beam5": Variant(asr={"beam_size": 5}, prompt=4),
    "prompt_beam5_repeats": Variant(asr={"beam_size": 5, "repeat_min_words": 0}, prompt=4),  # no repeat check
    "prompt_beam10": Variant(asr={"beam_size": 10}, prompt=4),
    "prompt2_beam5": Variant(asr={"beam_size": 5}, prompt=2),
    "prompt8_beam5": Variant(asr={"beam_size": 5}, prompt=8),
    "fw_defaults": Variant(fw_defaults=True),
    "default_float32": Variant(asr={"compute_type": "float32"}, prompt=None),
}


@dataclass
class Tally:
    edits: int = 0
    words: int = 0
    edits_norm: int = 0
    words_norm: int = 0
    empty: int = 0
    ms: list[float] = field(default_factory=list)
    rows: list[tuple[int, str, str, float]] = field(default_factory=list)  # (edits, gold, heard, seconds)


def fw_defaults_text(transcriber, audio: np.ndarray, language: str) -> str:
    """faster-whisper's ``transcribe`` with its own defaults (only the language fixed)."""
    segments, _ = transcriber.model.transcribe(audio, language=language)
    return " ".join(s.text.strip() for s in segments).strip()


def main(argv: Sequence[str] | None = None) -> int:
    from runtime import evaluate_live as ev
    from runtime.config import add_settings_args, settings_from_args

    p = argparse.ArgumentParser(prog="python -m runtime.tools.asr_sweep",
                                description="ASR settings on the gold utterances of spoken validation dialogues.")
    ev.add_render_args(p)
    p.add_argument("--variants", nargs="+", default=["default", "greedy", "beam5", "greedy_prompt"],
                   choices=sorted(VARIANTS), help="settings to compare (default: default greedy beam5 greedy_prompt)")
    add_settings_args(p)
    p.add_argument("--worst", type=int, default=0, metavar="N", help="list the N utterances with the most edits (first variant)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gap, gap_range = ev.checked_gaps(args)

    from tqdm.auto import tqdm

    from runtime.asr import Transcriber, previous_text_prompt
    from runtime.tools.make_speech import read_wav

    cfg = settings_from_args(args)
    dialogues = ev.validation_dialogues(args, "iemocap")
    work = Path(args.work)
    transcribers: dict[tuple, Transcriber] = {}

    def transcriber_for(v: Variant) -> Transcriber:
        key = tuple(sorted(v.asr.items()))
        if key not in transcribers:
            transcribers[key] = Transcriber(dataclasses.replace(cfg.asr, **v.asr))
        return transcribers[key]

    tallies = {name: Tally() for name in args.variants}
    renders = [(d.id, *ev.render_dialogue(d, work, gap, args.seed, gap_range)) for d in dialogues]
    total = sum(len(g) for _, _, g in renders)
    t0 = time.perf_counter()
    with tqdm(total=total, desc="utterances", unit="utt", file=sys.stderr) as bar:
        for _, wav, gold in renders:
            audio = read_wav(wav)
            history = {name: [] for name in args.variants}
            for g in gold:
                for name in args.variants:
                    v = VARIANTS[name]
                    pad = cfg.vad.speech_pad_ms / 1000 if v.pad_s is None else v.pad_s
                    a = g.clip(audio, pad, v.tail_s)
                    tr = transcriber_for(v)
                    t = time.perf_counter()
                    if v.fw_defaults:
                        text = fw_defaults_text(tr, a, cfg.asr.language)
                    else:
                        n_prompt = cfg.asr.prompt_utterances if v.prompt is None else v.prompt
                        prompt = previous_text_prompt(history[name], n_prompt)
                        out = tr.transcribe(a, prompt=prompt)
                        text = out.text if out is not None else ""
                    tal = tallies[name]
                    tal.ms.append((time.perf_counter() - t) * 1000)
                    if text:
                        history[name].append(text)
                    else:
                        tal.empty += 1
                    e, w = ev.word_edits(g.text, text)
                    en, wn = ev.word_edits(g.text, text, whisper_norm=True)
                    tal.edits += e
                    tal.words += w
                    tal.edits_norm += en
                    tal.words_norm += wn
                    tal.rows.append((e, g.text, text, g.end - g.start))
                bar.update(1)
    load = os.getloadavg()
    gaps = f"{gap:g} s gaps" if gap is not None else f"gaps drawn from {gap_range[0]:g}-{gap_range[1]:g} s"
    print(f"ASR on gold utterance spans: {len(dialogues)} validation dialogues, {gaps}, {total} utterances, "
          f"{time.perf_counter() - t0:.0f} s; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'variant':14s} {'WER raw':>8s} {'WER norm':>9s} {'no words':>9s} {'ms p50':>7s} {'ms p95':>7s}")
    for name, t in tallies.items():
        print(f"{name:14s} {100 * t.edits / max(1, t.words):7.1f}% {100 * t.edits_norm / max(1, t.words_norm):8.1f}% "
              f"{t.empty:9d} {np.percentile(t.ms, 50):7.0f} {np.percentile(t.ms, 95):7.0f}")
    for name, t in tallies.items():
        empty = [f"{dur:.1f} s {gtext!r}" for e, gtext, heard, dur in t.rows if not heard]
        if empty:
            print(f"{name}: no words for " + "; ".join(empty))
    if args.worst:
        first = tallies[args.variants[0]]
        print(f"\nworst {args.worst} utterances for {args.variants[0]} (edits, seconds: gold | heard):")
        for e, gtext, heard, dur in sorted(first.rows, key=lambda r: -r[0])[: args.worst]:
            print(f"  {e:3d} {dur:5.1f} s: {gtext} | {heard}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
