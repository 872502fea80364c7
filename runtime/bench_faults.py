"""Fault benchmark: a microphone that stalls and comes back, a camera that disappears and comes
back, during a live session; prints what the session did (no pass/fail).

``python -m runtime.bench_faults [--model iemocap] [--at 9] [--short 1] [--long 6]``

No devices exist here, so the devices are simulated, in real time, behind the same interfaces as
real ones: a stand-in for the ``sounddevice`` module (PortAudio's callback stream, 32 ms blocks)
plays the shipped demo conversation (29 s, 8 utterances) as if spoken into a microphone; a
stand-in for ``cv2.VideoCapture`` delivers the demo's frames at 10 fps as a camera would. The
rest is the real pipeline (:class:`runtime.live.Session`, :class:`~runtime.audio.MicrophoneSource`,
:class:`~runtime.video.VideoSource`, the recognizer, the shipped model).

Scenarios (the fault starts ``--at`` seconds into the conversation):

1. the microphone delivers nothing for ``--short`` s (under ``audio.stall_timeout_s``), then
   resumes; what was said meanwhile never reached the computer;
2. the microphone delivers nothing for ``--long`` s and cannot be reopened meanwhile (unplugged),
   then can;
3. the camera stops delivering frames for ``--long`` s and cannot be reopened meanwhile, then can.

For each: the utterances labelled out of the 8 spoken (and which were lost), the time from the
device's return to the session using it again, the error of the events' timestamps against the
time the words were spoken (after the fault), and the warnings the session emitted.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from typing import Sequence

import numpy as np

from runtime.config import SAMPLE_RATE, load_runtime_config
from train.common import run_cli


class SimulatedMicrophone:
    """The ``sounddevice`` API over a world clock: block k of the conversation is delivered at
    ``t0 + k * 32 ms``, except during ``[stall_from, stall_to)``, when no block comes (lost) and,
    with ``unplugged``, no stream can be opened either."""

    class PortAudioError(Exception):
        pass

    class CallbackAbort(Exception):
        pass

    def __init__(self, audio: np.ndarray, stall_from: float, stall_to: float, unplugged: bool):
        self.audio, self.stall_from, self.stall_to, self.unplugged = audio, stall_from, stall_to, unplugged
        self.t0: float | None = None  # world clock: the conversation starts when the first stream does
        self.opened = 0

    def world(self) -> float:
        return time.monotonic() - self.t0

    def query_devices(self, device=None, kind=None):
        info = {"name": "simulated microphone", "index": 0, "max_input_channels": 1}
        return info if device is not None or kind is not None else [info]

    def InputStream(self, *, samplerate, channels, dtype, blocksize, device, callback, finished_callback):
        if self.t0 is None:
            self.t0 = time.monotonic()
        if self.unplugged and self.stall_from <= self.world() < self.stall_to:
            raise self.PortAudioError("device unavailable (simulated: unplugged)")
        self.opened += 1
        mic = self

        class Status:
            input_overflow = False

        class Stream:
            active = False

            def start(self):
                self.active = True
                threading.Thread(target=self._run, daemon=True).start()

            def _run(self):
                k = int(mic.world() * SAMPLE_RATE) // blocksize  # the block being spoken now
                while self.active:
                    due = mic.t0 + (k + 1) * blocksize / SAMPLE_RATE
                    time.sleep(max(0.0, due - time.monotonic()))
                    if not self.active:
                        return
                    t = k * blocksize / SAMPLE_RATE
                    k += 1
                    if mic.stall_from <= t < mic.stall_to:
                        continue  # stalled: nothing arrives
                    a = k * blocksize - blocksize
                    block = mic.audio[a : a + blocksize]
                    if len(block) < blocksize:
                        block = np.concatenate([block, np.zeros(blocksize - len(block), np.float32)])
                    pcm = (np.clip(block, -1, 1) * 32767).astype(np.int16)[:, None]
                    try:
                        callback(pcm, blocksize, None, Status())
                    except mic.CallbackAbort:
                        return

            def abort(self):
                self.active = False

            def close(self):
                self.active = False

        return Stream()


class SimulatedCamera:
    """``cv2.VideoCapture`` over the world clock: the demo's frames at 10 fps, none during
    ``[gone_from, gone_to)`` (reads fail, and it cannot be opened)."""

    def __init__(self, frames: list[np.ndarray], fps: float, gone_from: float, gone_to: float):
        self.frames, self.fps, self.gone_from, self.gone_to = frames, fps, gone_from, gone_to
        self.t0: float | None = None
        self.opened = 0

    def world(self) -> float:
        return time.monotonic() - self.t0

    def open(self, index):
        if self.t0 is None:
            self.t0 = time.monotonic()
        camera = self
        gone = self.gone_from <= self.world() < self.gone_to

        class Capture:
            def isOpened(self):
                return not gone

            def set(self, *a):
                return True

            def get(self, prop):
                return 0.0

            def read(self):
                t = camera.world()
                k = int(t * camera.fps) + 1
                time.sleep(max(0.0, k / camera.fps - t))  # a camera delivers at its frame rate
                t = camera.world()
                if camera.gone_from <= t < camera.gone_to or gone:
                    return False, None
                return True, camera.frames[int(t * 5) % len(camera.frames)]  # the demo's frames are 5 fps

            def release(self):
                pass

        self.opened += 1
        return Capture()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.bench_faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="iemocap")
    p.add_argument("--backend", default=None)
    p.add_argument("--at", type=float, default=9.0, help="seconds into the conversation the fault starts (default 9)")
    p.add_argument("--short", type=float, default=1.0, help="short microphone stall, s (default 1)")
    p.add_argument("--long", type=float, default=6.0, help="long outage, s (default 6)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from runtime.asr import Transcriber
    from runtime.audio import FileAudioSource, MicrophoneSource, load_audio
    from runtime.live import DEMO_DIR, DEMO_VIDEO, Session
    from runtime.recognizer import Recognizer
    from runtime.speakers import SpeakerTracker, VoiceEncoder
    from runtime.video import VideoSource

    cfg = load_runtime_config(None)
    script = json.loads((DEMO_DIR / "script.json").read_text())
    spoken = script["utterances"]
    demo = load_audio(DEMO_VIDEO)
    frames = [f.image for f in VideoSource(DEMO_VIDEO, realtime=False).frames()]
    transcriber, encoder = Transcriber(cfg.asr), VoiceEncoder(cfg.speakers.cache_dir)
    print(f"faults: the demo conversation ({len(demo) / SAMPLE_RATE:.1f} s, {len(spoken)} utterances) in real time; "
          f"audio.stall_timeout_s {cfg.audio.stall_timeout_s:g}, audio.reconnect_s {cfg.audio.reconnect_s:g}, "
          f"video.reconnect_s {cfg.video.reconnect_s:g}\n", flush=True)

    def recognizer(video: bool, marks: list):
        return Recognizer(args.model, args.backend, cfg, realtime=True, video=video, transcriber=transcriber,
                          speakers=SpeakerTracker(cfg.speakers, encoder=encoder),
                          on_event=lambda ev: marks.append((time.monotonic(), ev)))

    def report(title, marks, world_t0, fault_from, fault_to, back_word):
        """What the session made of it. Event times are on the audio clock, which the microphone
        keeps on the wall (world) clock: an utterance is heard where events cover it."""
        events = [ev for _, ev in marks]
        utts = [e for e in events if e["type"] == "utterance"]
        cover = []
        for u in spoken:
            heard = sum(max(0.0, min(e["end"], u["end"]) - max(e["start"], u["start"])) for e in utts)
            cover.append(heard / (u["end"] - u["start"]))
        during = [u["index"] for u in spoken if u["end"] > fault_from and u["start"] < fault_to]
        whole = [u["index"] for u, c in zip(spoken, cover) if c >= 0.8]
        part = [u["index"] for u, c in zip(spoken, cover) if 0 < c < 0.8]
        lost = [u["index"] for u, c in zip(spoken, cover) if c == 0]
        print(f"== {title}")
        print(f"   {len(utts)} events for {len(spoken)} spoken utterances: heard whole {whole}, in part {part}, "
              f"not at all {lost}; spoken during the fault [{fault_from:.1f}, {fault_to:.1f}) s: {during}")
        for t, ev in marks:
            if ev.get("type") == "warning":
                print(f"   warning at {t - world_t0:5.1f} s: {ev['message']}")
        back = [t - world_t0 for t, ev in marks if ev.get("type") == "warning" and back_word in ev["message"]]
        if back:
            print(f"   back in use {back[0] - fault_to:.1f} s after the device returned")
        after = [(e, u) for u in spoken if u["start"] >= fault_to for e in utts
                 if min(e["end"], u["end"]) - max(e["start"], u["start"]) > 0.5 * (u["end"] - u["start"])]
        if after:
            err = [e["start"] - u["start"] for e, u in after]
            print(f"   after the fault: event start - spoken start mean {np.mean(err):+.2f} s (|max| {np.max(np.abs(err)):.2f} s) "
                  f"over {len(after)} utterances")
        stopped = events[-1]
        print(f"   session: {stopped['state']} ({stopped['reason']}), {stopped['utterances']} labelled, "
              f"{stopped['warnings']} warnings\n", flush=True)

    at, short, long = args.at, args.short, args.long

    # 1. a short microphone stall: what was said meanwhile is lost; its time becomes silence
    marks: list = []
    sim = SimulatedMicrophone(demo, at, at + short, unplugged=False)
    mic = MicrophoneSource(None, cfg.audio, sounddevice=sim)
    rec = recognizer(False, marks)
    Session(rec, _until(mic, sim, len(demo) / SAMPLE_RATE + 1.0), None, realtime=True).run()
    print(f"   (microphone: {mic.silence_filled_s:.1f} s filled with silence, {sim.opened} stream opened)")
    report(f"microphone stalls for {short:g} s at {at:g} s (under stall_timeout_s)", marks, sim.t0, at, at + short,
           "delivered nothing")

    # 2. a long microphone outage, unplugged meanwhile: reopened, the gap becomes silence
    marks = []
    sim = SimulatedMicrophone(demo, at, at + long, unplugged=True)
    mic = MicrophoneSource(None, cfg.audio, sounddevice=sim)
    rec = recognizer(False, marks)
    Session(rec, _until(mic, sim, len(demo) / SAMPLE_RATE + 1.0), None, realtime=True).run()
    print(f"   (microphone: {mic.reconnects} reconnect, {mic.silence_filled_s:.1f} s filled with silence, "
          f"{sim.opened} streams opened)")
    report(f"microphone gone for {long:g} s at {at:g} s (unplugged, then back)", marks, sim.t0, at, at + long,
           "is back")

    # 3. the camera disappears and comes back (audio from the file, in real time)
    marks = []
    cam = SimulatedCamera(frames, 10.0, at, at + long)
    video = VideoSource(0, cfg.video, open_capture=cam.open)
    rec = recognizer(True, marks)
    frames_at: list[float] = []
    push = rec.push_frame
    rec.push_frame = lambda image, t: (frames_at.append(time.monotonic()), push(image, t))[1]
    Session(rec, FileAudioSource(DEMO_VIDEO, cfg.audio.chunk_ms, realtime=True), video, realtime=True).run()
    gaps = np.diff([t - cam.t0 for t in frames_at])
    worst = int(np.argmax(gaps)) if len(gaps) else 0
    print(f"   (camera: {video.reconnects} reconnect, {cam.opened} opens; frames reached the recognizer "
          f"{len(frames_at)}; longest gap {gaps[worst]:.1f} s from {frames_at[worst] - cam.t0:.1f} s)")
    report(f"camera gone for {long:g} s at {at:g} s, then back", marks, cam.t0, at, at + long, "video back")
    return 0


class _until:
    """A microphone iterated until the conversation (on the simulated world clock) is over."""

    def __init__(self, mic, sim, seconds: float):
        self.mic, self.sim, self.seconds = mic, sim, seconds

    def __getattr__(self, name):
        return getattr(self.mic, name)

    def __setattr__(self, name, value):
        if name in ("mic", "sim", "seconds"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.mic, name, value)

    def __iter__(self):
        for chunk in self.mic:
            yield chunk
            if self.sim.t0 is not None and self.sim.world() > self.seconds:
                self.mic.close()


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
