"""Benchmark the runtime's audio stages on this machine; prints figures (no pass/fail).

``python -m runtime.tools.bench_stages [--repeats 3] [--asr-model PATH] [--threads N]``

* VAD: streaming silero (512-sample windows fed one 32 ms chunk at a time) -- milliseconds of
  compute per second of audio, and per window;
* ASR: faster-whisper latency per utterance (p50/p95), and for utterances of about 3 s, with the
  provisional views' settings and the finals' side by side;
* speakers: ONNX voice-encoder latency per utterance (p50/p95), plus the clustering step.

Input: a generated two-voice conversation (espeak-ng + sox) in a temporary directory.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.config import SAMPLE_RATE
from train.common import run_cli


def pct(xs: Sequence[float]) -> str:
    a = np.asarray(xs)
    return f"p50 {np.percentile(a, 50):7.1f} ms  p95 {np.percentile(a, 95):7.1f} ms  (n={len(a)})"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.tools.bench_stages", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--asr-model", default=None, help="CTranslate2 Whisper dir (default: shipped tiny.en)")
    p.add_argument("--threads", type=int, default=0, help="ASR cpu_threads (0 = CTranslate2 default)")
    p.add_argument("--cache-dir", default=None, help="voice-encoder ONNX cache (default: a temp dir)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from runtime.asr import Transcriber, previous_text_prompt
    from runtime.config import AsrConfig
    from runtime.speakers import SpeakerClusterer, VoiceEncoder
    from runtime.tools.make_speech import make_conversation, read_wav
    from runtime.vad import UtteranceSegmenter

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (figures are wall-clock; other load inflates them)")
    with tempfile.TemporaryDirectory() as tmp:
        meta = make_conversation(tmp)
        wav = read_wav(Path(tmp) / "speech.wav")
        cache = args.cache_dir or tmp

        seg = UtteranceSegmenter()
        times = []
        for _ in range(args.repeats):
            seg.reset()
            t = time.perf_counter()
            utts = list(seg.run(wav[i : i + 512] for i in range(0, len(wav), 512)))
            times.append(time.perf_counter() - t)
        dur = len(wav) / SAMPLE_RATE
        best = min(times)
        print(f"VAD   : {1000 * best / dur:.2f} ms compute per second of audio "
              f"({1e6 * best / (len(wav) // 512):.0f} us per 32 ms window), {len(utts)} utterances in {dur:.1f} s")

        t = time.perf_counter()
        asr = Transcriber(AsrConfig(model=args.asr_model, cpu_threads=args.threads))
        print(f"ASR   : model load {time.perf_counter() - t:.2f} s ({asr.model_path.name}, {asr.device}/{asr.compute_type})")
        asr.transcribe(utts[0].audio)  # warm-up
        cfg = asr.cfg
        # the live pipeline's two settings, interleaved utterance by utterance (same load for both):
        # provisional views greedy without a prompt, finals with beam search and the previous
        # final transcripts as the prompt
        settings = {f"provisional (beam {cfg.provisional_beam_size}, no prompt)": (cfg.provisional_beam_size, 0),
                    f"final (beam {cfg.beam_size}, prompt of {cfg.prompt_utterances})": (cfg.beam_size, cfg.prompt_utterances)}
        lat = {k: [] for k in settings}
        lat3 = {k: [] for k in settings}
        for _ in range(args.repeats):
            said: list[str] = []
            for u in utts:
                for k, (beam, n_prompt) in settings.items():
                    prompt = previous_text_prompt(said, n_prompt)
                    t = time.perf_counter()
                    out = asr.transcribe(u.audio, prompt=prompt, beam_size=beam)
                    ms = 1000 * (time.perf_counter() - t)
                    lat[k].append(ms)
                    if abs(len(u.audio) / SAMPLE_RATE - 3.0) <= 0.35:
                        lat3[k].append(ms)
                if out is not None:
                    said.append(out.text)  # the final setting's transcript (the last one run)
        lens = [len(u.audio) / SAMPLE_RATE for u in utts]
        for k in settings:
            print(f"ASR   : {k}, all utterances ({min(lens):.1f}-{max(lens):.1f} s of audio): {pct(lat[k])}")
            if lat3[k]:
                print(f"ASR   : {k}, utterances of 3.0 +- 0.35 s:            {pct(lat3[k])}")
        exact = np.concatenate([utts[2].audio, np.zeros(SAMPLE_RATE * 3, np.float32)])[: 3 * SAMPLE_RATE]
        for k, (beam, n_prompt) in settings.items():
            prompt = previous_text_prompt(said, n_prompt)
            l3, c3 = [], []
            for _ in range(args.repeats * 3):
                t, c = time.perf_counter(), time.process_time()
                asr.transcribe(exact, prompt=prompt, beam_size=beam)
                l3.append(1000 * (time.perf_counter() - t))
                c3.append(1000 * (time.process_time() - c))
            print(f"ASR   : {k}, exactly 3.00 s:                          {pct(l3)}")
            print(f"ASR   : {k}, exactly 3.00 s, CPU time (all threads):  {pct(c3)}")

        t = time.perf_counter()
        enc = VoiceEncoder(cache_dir=cache)
        print(f"SPK   : encoder ready in {time.perf_counter() - t:.2f} s (includes the one-time ONNX build when not cached)")
        enc.embed(utts[0].audio)
        el, cl = [], []
        for _ in range(args.repeats):
            clus = SpeakerClusterer()
            for u in utts:
                t = time.perf_counter()
                e = enc.embed(u.audio)
                t1 = time.perf_counter()
                clus.assign(e)
                el.append(1000 * (t1 - t))
                cl.append(1000 * (time.perf_counter() - t1))
        print(f"SPK   : embedding per utterance: {pct(el)}; clustering {np.mean(cl):.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
