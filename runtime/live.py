"""``python -m runtime.live``: label the emotion of each utterance of a conversation, live.

Sources (one audio source, at most one video source)::

    --camera 0                 camera 0 + the default microphone
    --camera 0 --mic 2         camera 0 + input device 2 (index or name)
    --mic [DEVICE]             microphone only
    --video talk.mp4           a recording: its frames and its sound track
    --video v.mp4 --audio a.wav   frames from one file, sound from another
    --audio talk.wav           sound only
    --demo                     the sample conversation shipped in runtime/demo/

Files replay in real time unless ``--fast`` (as fast as the machine can). Outputs: ``--events
FILE`` or ``-`` (JSON lines, :mod:`runtime.events`), a status line on the terminal, ``--window``
(camera + overlay), ``--record DIR`` (audio, video and events for a later replay).

Faults at start (no camera at that index, no microphone, an unreadable file, a model or backend
that cannot load) are one-line errors. Faults during the session do not end it: a camera that
stops -> a warning and audio-only from there on; a microphone that disappears -> a warning, and
the session ends after labelling everything already captured; an utterance without words -> a
warning event and no label; video without a face -> a warning, the visual modality masked out.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from runtime.config import DEMO_DIR, SAMPLE_RATE, load_runtime_config
from runtime.events import EventWriter, StatusLine
from train.common import InputError, run_cli

log = logging.getLogger("runtime.live")

DEMO_VIDEO = DEMO_DIR / "demo.mp4"
# --fast: file reading stays at most this far ahead of the segmenter, and waits while an utterance
# is being processed, so each utterance's latency is measured as a live one would be (no queueing
# behind a file that is read faster than it is spoken).
FAST_MAX_BACKLOG_S = 2.0


def build_parser() -> argparse.ArgumentParser:
    examples = __doc__.split("::")[1].split("\n\n")[1]
    p = argparse.ArgumentParser(prog="python -m runtime.live",
                                description="Label the emotion of each utterance of a conversation, live.",
                                epilog="sources:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("sources")
    src.add_argument("--camera", type=int, metavar="INDEX", help="OpenCV camera index (audio: the microphone unless --audio)")
    src.add_argument("--mic", nargs="?", const="default", metavar="DEVICE", help="microphone (default input, or a device index / name)")
    src.add_argument("--video", metavar="FILE", help="video file to replay (its sound track too, unless --audio)")
    src.add_argument("--audio", metavar="FILE", help="audio file (or a video's sound track) to replay")
    src.add_argument("--demo", action="store_true", help="replay the sample conversation shipped with the package")
    src.add_argument("--fast", action="store_true", help="process files as fast as possible instead of in real time")
    mod = p.add_argument_group("model")
    mod.add_argument("--model", default="iemocap", help="shipped model name (iemocap, meld) or model directory (default iemocap)")
    mod.add_argument("--backend", choices=("onnx", "onnx-int8", "trt", "torch"),
                     help="inference backend (default: the fastest available: trt, onnx-int8, onnx, torch)")
    mod.add_argument("--asr-model", metavar="PATH", help="CTranslate2 Whisper model directory (default: tiny.en)")
    mod.add_argument("--speakers", type=int, metavar="N", help="fix the number of speakers (default: open set)")
    mod.add_argument("--config", metavar="YAML", help="runtime settings (default: configs/runtime.yaml values)")
    out = p.add_argument_group("outputs")
    out.add_argument("--events", metavar="FILE", help="JSON-lines events to FILE, or - for stdout")
    out.add_argument("--window", action="store_true", help="show the camera with a live overlay (needs a display)")
    out.add_argument("--record", metavar="DIR", help="save audio, video and events for replay")
    out.add_argument("--quiet", action="store_true", help="no status line and no summary on the terminal")
    p.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    return p


# -- sources -------------------------------------------------------------------------------------


def resolve_sources(args) -> tuple[dict, dict | None]:
    """(audio spec, video spec) from the arguments; InputError for combinations that make no sense."""
    if args.demo:
        if args.camera is not None or args.video or args.audio or args.mic:
            raise InputError("--demo replays the shipped sample; it takes no other source")
        if not DEMO_VIDEO.is_file():
            raise InputError("the demo recording is missing; make it with: python -m runtime.tools.make_demo", path=str(DEMO_VIDEO))
        args.video = str(DEMO_VIDEO)
    if args.camera is not None and args.video:
        raise InputError("choose one video source: --camera or --video")
    if args.mic and args.audio:
        raise InputError("choose one audio source: --mic or --audio")
    video = None
    if args.camera is not None:
        video = {"kind": "camera", "index": args.camera}
    elif args.video:
        video = {"kind": "file", "path": args.video}
    if args.audio:
        audio = {"kind": "file", "path": args.audio}
    elif args.mic or args.camera is not None:
        dev = None if args.mic in (None, "default") else (int(args.mic) if str(args.mic).isdigit() else args.mic)
        audio = {"kind": "mic", "device": dev}
    elif args.video:
        audio = {"kind": "file", "path": args.video}
    else:
        raise InputError("no source: give --camera INDEX, --mic, --video FILE, --audio FILE or --demo")
    return audio, video


def open_audio(spec: dict, cfg, realtime: bool):
    from runtime.audio import FileAudioSource, MicrophoneSource

    if spec["kind"] == "mic":
        return MicrophoneSource(spec["device"], cfg.audio)
    try:
        return FileAudioSource(spec["path"], cfg.audio.chunk_ms, realtime=realtime)
    except InputError as e:
        if "no audio track" in str(e) and spec["path"]:
            raise InputError(f"{e}; give the sound with --audio FILE") from None
        raise


def open_video(spec: dict | None, cfg, realtime: bool):
    from runtime.video import VideoSource

    if spec is None:
        return None
    if spec["kind"] == "camera":
        return VideoSource(int(spec["index"]), cfg.video)
    return VideoSource(spec["path"], cfg.video, realtime=realtime)


def file_frames(source) -> Iterator[tuple[float, np.ndarray]]:
    """(t, frame) of a video file in order, read on the caller's thread (for --fast)."""
    cap, first = source._cap, source._first  # already opened and checked by VideoSource
    index, image = 0, first
    try:
        while image is not None:
            yield source._time_of(index), image
            ok, image = cap.read()
            image = image if ok else None
            index += 1
    finally:
        cap.release()


# -- the session ---------------------------------------------------------------------------------


class Session:
    """Runs sources into a :class:`~runtime.recognizer.Recognizer` and its events to the outputs.

    ``audio``: an iterable audio source (FileAudioSource / MicrophoneSource); ``video``: a
    VideoSource or None. ``realtime=False`` (files, --fast) reads both in one thread, frames
    interleaved with the audio by time, never more than FAST_MAX_BACKLOG_S ahead of the segmenter.
    """

    def __init__(self, recognizer, audio, video=None, *, realtime: bool = True, events: EventWriter | None = None,
                 status: StatusLine | None = None, recorder=None):
        self.rec = recognizer
        self.audio = audio
        self.video = video
        self.realtime = realtime
        self.writer = events or EventWriter(None)
        self.status = status or StatusLine(force=False)
        self.recorder = recorder
        self.latest_event: dict | None = None
        self.events: list[dict] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- pumps (capture side: they only push, never wait for the model) --------------------------
    def _push_audio(self, chunk: np.ndarray) -> None:
        self.rec.push_audio(chunk)
        if self.recorder is not None:
            self.recorder.audio(chunk)

    def _push_frame(self, image: np.ndarray, t: float) -> None:
        if t < 0:
            return
        self.rec.push_frame(image, t)
        if self.recorder is not None:
            self.recorder.frame(image, t)

    def _audio_pump(self) -> None:
        try:
            for chunk in self.audio:  # after stop() the source still yields what it had captured
                self._push_audio(chunk)
        except InputError as e:  # e.g. AudioOverflowError: capture had to stop
            self.rec.warn(str(e), source="audio")
        finally:
            close = getattr(self.audio, "close", None)
            if close:
                close()
        reason = getattr(self.audio, "ended_reason", None) or "end of audio"
        if reason not in ("end of file", "stopped") and not self._stop.is_set():
            self.rec.warn(f"audio source ended: {reason}; labelling what was captured", source="audio")
        self.rec.end_audio(reason)

    def _video_pump(self) -> None:
        video = self.video
        while not self._stop.is_set():
            f = video.latest.get(timeout=0.2)
            if f is not None:
                if video.is_camera:  # camera time -> audio clock (both time.monotonic based)
                    a0 = getattr(self.audio, "start_time", None)
                    if a0 is None:
                        continue
                    t = video.start_time + f.t - a0
                else:
                    t = f.t
                self._push_frame(f.image, t)
            elif not video.running:
                if video.ended_reason not in ("end of file", "stopped"):
                    self.rec.video_lost(video.ended_reason or "the video source stopped")
                return

    def _fast_pump(self) -> None:
        """Files as fast as possible: audio and frames in time order, one thread."""
        frames = file_frames(self.video) if self.video is not None else iter(())
        pending = next(frames, None)
        pushed = 0
        try:
            for chunk in self.audio:
                while (self.rec.backlog_s > FAST_MAX_BACKLOG_S or self.rec.busy) and not self.rec.finished:
                    time.sleep(0.005)
                self._push_audio(chunk)
                pushed += len(chunk)
                while pending is not None and pending[0] <= pushed / SAMPLE_RATE:
                    self._push_frame(pending[1], pending[0])
                    pending = next(frames, None)
        except InputError as e:
            self.rec.warn(str(e), source="audio")
        self.rec.end_audio(getattr(self.audio, "ended_reason", None) or "end of audio")

    # -- run ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.rec.start()
        if self.realtime:
            targets = [self._audio_pump]
            if self.video is not None:
                self.video.start()
                targets.append(self._video_pump)
        else:
            targets = [self._fast_pump]
        for fn in targets:
            th = threading.Thread(target=fn, name=fn.__name__.strip("_"), daemon=True)
            th.start()
            self._threads.append(th)

    def consume(self) -> None:
        """Take events until the recognizer ends; each goes to every output at once."""
        for ev in self.rec.events():
            self.latest_event = ev if ev.get("type") == "utterance" else self.latest_event
            self.events.append(ev)
            self.writer.write(ev)
            if self.recorder is not None:
                self.recorder.event(ev)
            self.status.show(ev)

    def stop(self) -> None:
        """Stop capture; what was captured is still labelled (the pump hands the source's last
        chunks over and then ends the recognizer's audio; consume() drains the events)."""
        self._stop.set()
        close = getattr(self.audio, "close", None)
        if close:
            close()
        else:
            self.rec.end_audio("stopped")

    def _on_sigint(self, signum, frame) -> None:
        """First Ctrl-C: stop capture and finish labelling what was captured; second: give up."""
        if self._stop.is_set():
            raise KeyboardInterrupt
        log.warning("interrupted: stopping capture, labelling what was captured (Ctrl-C again to quit now)")
        self.stop()

    def run(self, window: bool = False) -> list[dict]:
        import signal

        self.start()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            if window:
                from runtime.overlay import Overlay

                consumer = threading.Thread(target=self.consume, name="events", daemon=True)
                consumer.start()
                Overlay().run(
                    latest_frame=lambda: (f.image if (f := self.rec.latest.peek()) is not None else None),
                    latest_event=lambda: self.latest_event,
                    running=lambda: consumer.is_alive(),
                )
                if consumer.is_alive():  # the user closed the window: stop, keep what was captured
                    self.stop()
                    consumer.join()
            else:
                self.consume()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self._stop.set()
            if self.video is not None:
                self.video.close()
            self.status.close()
            if self.recorder is not None:
                self.recorder.close()
            self.writer.close()
        return self.events


def summary(events: Sequence[dict]) -> str:
    utts = [e for e in events if e.get("type") == "utterance" and e["final"]]
    provisional = sum(1 for e in events if e.get("type") == "utterance" and not e["final"])
    warns = [e for e in events if e.get("type") == "warning"]
    if not utts:
        return f"no utterances labelled ({len(warns)} warnings)"
    lat = {k: np.percentile([e["latency_ms"][k] for e in utts if k in e["latency_ms"]], [50, 95])
           for k in ("asr", "features", "model", "total") if any(k in e["latency_ms"] for e in utts)}
    lat_s = ", ".join(f"{k} p50 {v[0]:.0f} / p95 {v[1]:.0f} ms" for k, v in lat.items())
    speakers = {e["speaker"] for e in utts}
    for upd in (e for e in events if e.get("type") == "speaker_update"):
        speakers -= set(upd["merged"])
    return (f"{len(utts)} utterances labelled ({provisional} provisional labels before them), {len(speakers)} speakers, "
            f"{len(warns)} warnings; {lat_s}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or "--debug" in sys.argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.speakers is not None and args.speakers < 1:
        raise InputError(f"--speakers must be >= 1, got {args.speakers}")
    if args.window:
        from runtime.overlay import check_display

        check_display()
    cfg = load_runtime_config(args.config)
    if args.asr_model:
        cfg.asr.model = args.asr_model
    if args.speakers:
        cfg.speakers.n_speakers = args.speakers
    audio_spec, video_spec = resolve_sources(args)
    realtime = not args.fast or audio_spec["kind"] == "mic" or (video_spec or {}).get("kind") == "camera"
    if args.fast and realtime:
        log.warning("--fast applies to files only; live devices run in real time")
    # Open the sources first: a missing device or file is reported before any model loads.
    video = open_video(video_spec, cfg, realtime)
    audio = open_audio(audio_spec, cfg, realtime)
    writer = EventWriter(args.events)
    recorder = None
    if args.record:
        from runtime.record import Recorder

        recorder = Recorder(args.record, video_fps=max(5.0, min(30.0, getattr(video, "fps", 0) or 10.0)))
    from runtime.recognizer import Recognizer

    rec = Recognizer(args.model, args.backend, cfg, realtime=realtime, video=video is not None)
    status = StatusLine(force=False) if not args.quiet else StatusLine(stream=open(os.devnull, "w"))
    session = Session(rec, audio, video, realtime=realtime, events=writer, status=status, recorder=recorder)
    events = session.run(window=args.window)
    if not args.quiet:
        print(summary(events), file=sys.stderr)
    stopped = [e for e in events if e.get("type") == "status" and e.get("state") == "stopped"]
    if stopped and stopped[-1].get("error"):
        raise InputError(f"the session stopped early: {stopped[-1]['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
