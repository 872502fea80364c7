"""Soak benchmark: an hour-long conversation through the whole live pipeline; prints figures.

``python -m runtime.bench_soak [--minutes 60] [--block 10] [--model iemocap] [--backend B]``

The shipped demo conversation (two voices, a face; 29 s) is replayed back to back until
``--minutes`` of audio have gone through capture, VAD, ASR, speakers, features, the incremental
graph, the model, the events file and the video-frame history, as fast as the machine allows
(``--fast`` pacing: reading waits while an utterance is processed, so each latency is what it
would be live). Per ``--block`` minutes of audio it prints: utterances labelled, end-of-speech ->
event latency (p50 / p95 of ``total``, p50 of ``asr`` and ``model``), the process's resident memory
(RSS) at the end of the block, and the block's real-time factor. Flat columns mean nothing grows;
the last lines name the growth between the first and the last block. No pass/fail: a benchmark.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from runtime.config import SAMPLE_RATE, load_runtime_config
from train.common import run_cli

RSS_EVERY_S = 2.0  # memory samples (the block's figure is the last sample inside it)


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class LoopedAudio:
    """``audio`` (float32, 16 kHz) replayed back to back for ``seconds``, in 32 ms chunks."""

    def __init__(self, audio: np.ndarray, seconds: float, chunk: int = 512):
        self.audio, self.total, self.chunk = audio, int(seconds * SAMPLE_RATE), chunk
        self.samples_delivered = 0
        self.start_time: float | None = None
        self.ended_reason: str | None = None
        self._stop = False

    def close(self) -> None:
        self._stop = True

    def __iter__(self) -> Iterator[np.ndarray]:
        self.start_time = time.monotonic()
        n = len(self.audio)
        while self.samples_delivered < self.total and not self._stop:
            k = self.samples_delivered % n
            chunk = self.audio[k : min(k + self.chunk, n, k + self.total - self.samples_delivered)]
            self.samples_delivered += len(chunk)
            yield chunk
        self.ended_reason = "stopped" if self._stop else "end of file"


class LoopedVideo:
    """The demo's frames replayed in step with :class:`LoopedAudio` (what ``Session`` reads with
    ``--fast``: :meth:`frames`)."""

    is_camera = False

    def __init__(self, frames: list, period_s: float, seconds: float, fps: float):
        self._frames, self.period, self.seconds, self.fps = frames, period_s, seconds, fps

    def frames(self) -> Iterator:
        from runtime.video import Frame

        index, loop = 0, 0
        while True:
            for f in self._frames:
                t = loop * self.period + f.t
                if t > self.seconds:
                    return
                yield Frame(f.image, t, index)
                index += 1
            loop += 1

    def close(self) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.bench_soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="audio to replay (default 60)")
    p.add_argument("--block", type=float, default=10.0, help="minutes of audio per row (default 10)")
    p.add_argument("--model", default="iemocap")
    p.add_argument("--backend", default=None)
    p.add_argument("--no-video", action="store_true", help="audio only (default: the demo's frames too)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from runtime.audio import load_audio
    from runtime.events import EventWriter
    from runtime.live import DEMO_VIDEO, Session
    from runtime.recognizer import Recognizer
    from runtime.video import VideoSource

    seconds = args.minutes * 60.0
    block_s = args.block * 60.0
    demo = load_audio(DEMO_VIDEO)
    period = len(demo) / SAMPLE_RATE
    video = None
    if not args.no_video:
        source = VideoSource(DEMO_VIDEO, realtime=False)
        video = LoopedVideo(list(source.frames()), period, seconds, source.fps)
    lat: dict[int, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    counts: collections.Counter = collections.Counter()

    def collect(ev: dict) -> None:  # the recognizer's callback thread
        if ev.get("type") == "utterance":
            b = int(ev["start"] // block_s)
            counts[b] += 1
            for k in ("total", "asr", "model"):
                lat[b][k].append(ev["latency_ms"][k])
        elif ev.get("type") == "warning":
            counts["warnings"] += 1

    cfg = load_runtime_config(None)
    rec = Recognizer(args.model, args.backend, cfg, realtime=False, video=video is not None, on_event=collect)
    audio = LoopedAudio(demo, seconds)
    rss: list[tuple[float, float, float]] = []  # (audio s, RSS MB, wall s)
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not done.wait(RSS_EVERY_S):
            rss.append((rec.vad_position / SAMPLE_RATE, rss_mb(), time.monotonic() - t0))

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        events_file = Path(tmp) / "events.jsonl"
        session = Session(rec, audio, video, realtime=False, events=EventWriter(events_file))
        print(f"soak: {args.minutes:g} min of audio (the {period:.1f} s demo x {seconds / period:.0f}), model "
              f"{rec.manifest.name}, backend {rec.backend.name}, {'audio + video frames' if video else 'audio only'}; "
              f"RSS at start {rss_mb():.0f} MB", flush=True)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        session.run()
        done.set()
        sampler.join()
        events_mb = events_file.stat().st_size / 1e6
    wall = time.monotonic() - t0
    rss.append((seconds, rss_mb(), wall))

    print(f"\n{'audio (min)':>11} {'utts':>5} {'total p50':>9} {'p95':>6} {'asr p50':>8} {'model p50':>9} "
          f"{'RSS MB':>7} {'RTF':>6}")
    blocks = int(np.ceil(seconds / block_s))
    prev_wall, rows = 0.0, []
    for b in range(blocks):
        end = min(seconds, (b + 1) * block_s)
        inside = [r for r in rss if r[0] <= end + 1e-6] or rss[:1]
        last = inside[-1]
        rtf = (last[2] - prev_wall) / (end - b * block_s)
        prev_wall = last[2]
        L = lat[b]
        span = f"{b * args.block:g}-{end / 60:g}"
        if not L["total"]:
            print(f"{span:>11} {0:>5}")
            continue
        rows.append((last[1], np.percentile(L["total"], 50)))
        print(f"{span:>11} {counts[b]:>5} {np.percentile(L['total'], 50):>9.0f} "
              f"{np.percentile(L['total'], 95):>6.0f} {np.percentile(L['asr'], 50):>8.0f} {np.percentile(L['model'], 50):>9.1f} "
              f"{last[1]:>7.0f} {rtf:>6.3f}")
    stopped = [e for e in session.events if e.get("type") == "status" and e.get("state") == "stopped"][-1]
    print(f"\n{stopped['utterances']} utterances labelled in {wall / 60:.1f} min (RTF {wall / seconds:.3f}); "
          f"{stopped['no_words']} without words, {counts['warnings']} warnings, {stopped['events_dropped']} events dropped; "
          f"events file {events_mb:.1f} MB")
    if len(rows) >= 2:
        print(f"growth first -> last block: RSS {rows[-1][0] - rows[0][0]:+.0f} MB, "
              f"total latency p50 {rows[-1][1] - rows[0][1]:+.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
