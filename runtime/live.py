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
FILE`` or ``-`` (JSON lines, :mod:`runtime.events`; with ``-`` stdout carries nothing else),
progress and a status line on stderr, ``--window`` (camera + overlay), ``--record DIR`` (audio,
video and events for a later replay). FILE's directory must exist; DIR is created (its parent
must exist); both only once the session starts.

Stopping: Ctrl-C or SIGTERM stops capture and labels what was captured; a second one quits at
once, dropping what is not labelled yet. Either way the outputs end with the ``stopped`` event
(with the counts of anything dropped), and the exit code is 130 (SIGINT) or 143 (SIGTERM).

Faults at start (no camera at that index, no microphone, an unreadable file, a model or backend
that cannot load) are one-line errors. Faults during the session do not end it: a camera that
stops -> a warning and audio-only from there on; a microphone that disappears -> a warning, and
the session ends after labelling everything already captured; an utterance without words -> a
warning event and no label; video without a face -> a warning, the visual modality masked out.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from runtime.config import DEMO_DIR, SAMPLE_RATE, add_settings_args, settings_from_args
from runtime.events import EventWriter, StatusLine
from train.common import InputError, python_m, run_cli

log = logging.getLogger("runtime.live")

DEMO_VIDEO = DEMO_DIR / "demo.mp4"
# --fast: file reading stays at most this far ahead of the segmenter, and waits while an utterance
# is being processed, so each utterance's latency is measured as a live one would be (no queueing
# behind a file that is read faster than it is spoken).
FAST_MAX_BACKLOG_S = 2.0
FAST_WAIT_S = 0.005  # --fast: the reader's nap while the segmenter / model catch up
VIDEO_POLL_S = 0.2  # the video pump re-checks the source's state (lost, ended) this often without frames
THREAD_JOIN_S = 5.0  # at the end, each capture thread gets this long to hand over its last chunk
KEEP_EVENTS = 1000  # Session.events keeps the newest; the outputs (--events, --record) get every one
# The recording's constant frame rate: the video's own rate clamped to 5-30 fps, 10 when it reports
# none (cameras often report 0). Below 5 fps a replay would give the visual features fewer frames
# than the live history keeps (video.history_fps = 5); above 30 the file grows for nothing.
RECORD_FPS_RANGE = (5.0, 30.0)
RECORD_FPS_UNKNOWN = 10.0


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
    add_settings_args(mod)
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
            raise InputError(f"the demo recording is missing; make it with: {python_m('runtime.tools.make_demo')}", path=str(DEMO_VIDEO))
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
    from runtime.audio import FileAudioSource, MicrophoneSource, NoAudioTrackError

    if spec["kind"] == "mic":
        return MicrophoneSource(spec["device"], cfg.audio)
    try:
        return FileAudioSource(spec["path"], cfg.audio.chunk_ms, realtime=realtime)
    except NoAudioTrackError as e:
        raise InputError(f"{e}; give the sound with --audio FILE") from None


def open_video(spec: dict | None, cfg, realtime: bool):
    from runtime.video import VideoSource

    if spec is None:
        return None
    if spec["kind"] == "camera":
        return VideoSource(int(spec["index"]), cfg.video)
    return VideoSource(spec["path"], cfg.video, realtime=realtime)


def record_fps(video) -> float:
    """The recording's constant frame rate: the video's own rate clamped to RECORD_FPS_RANGE,
    RECORD_FPS_UNKNOWN when it reports none (cameras often report 0)."""
    fps = getattr(video, "fps", 0.0) or RECORD_FPS_UNKNOWN
    return max(RECORD_FPS_RANGE[0], min(RECORD_FPS_RANGE[1], fps))


# -- the session ---------------------------------------------------------------------------------


class Tally:
    """Running figures for the end-of-session summary; bounded however long the session runs
    (latency percentiles over the newest LATENCY_SAMPLES final utterances). Speakers merged by a
    ``speaker_update`` event are no longer counted."""

    LATENCY_SAMPLES = 10000
    LATENCY_KEYS = ("asr", "features", "model", "total")

    def __init__(self):
        self.utterances = 0  # final events
        self.provisional = 0
        self.warnings = 0
        self.speakers: set = set()
        self.latency = {k: collections.deque(maxlen=self.LATENCY_SAMPLES) for k in self.LATENCY_KEYS}

    def add(self, event: dict) -> None:
        if event.get("type") == "warning":
            self.warnings += 1
        elif event.get("type") == "speaker_update":
            self.speakers -= set(event["merged"])
        elif event.get("type") == "utterance" and not event["final"]:
            self.provisional += 1
        elif event.get("type") == "utterance":
            self.utterances += 1
            self.speakers.add(event.get("speaker"))
            for k in self.LATENCY_KEYS:
                if k in event.get("latency_ms", {}):
                    self.latency[k].append(event["latency_ms"][k])

    def summary(self) -> str:
        if not self.utterances:
            return f"no utterances labelled ({self.warnings} warnings)"
        lat_s = ", ".join(f"{k} p50 {np.percentile(v, 50):.0f} / p95 {np.percentile(v, 95):.0f} ms"
                          for k, v in self.latency.items() if v)
        return (f"{self.utterances} utterances labelled ({self.provisional} provisional labels before them), "
                f"{len(self.speakers)} speakers, {self.warnings} warnings; {lat_s}")


def summary(events: Iterable[dict]) -> str:
    """One line: utterances, speakers, warnings and latency percentiles of ``events``."""
    tally = Tally()
    for ev in events:
        tally.add(ev)
    return tally.summary()


class Session:
    """Runs sources into a :class:`~runtime.recognizer.Recognizer` and its events to the outputs.

    ``audio``: an iterable audio source (FileAudioSource / MicrophoneSource); ``video``: a
    VideoSource or None. ``realtime=False`` (files, --fast) reads both in one thread, frames
    interleaved with the audio by time, never more than FAST_MAX_BACKLOG_S ahead of the segmenter.

    Outputs (the events writer, the recorder) are created when the session starts, not before.
    :attr:`events` keeps the newest KEEP_EVENTS events (the outputs get every one) and
    :attr:`tally` the figures of the whole session, so memory stays flat however long it runs.

    Stopping (:meth:`run` on the main thread): the first SIGINT (Ctrl-C) or SIGTERM stops capture
    and labels what was captured; a second one drops what is not labelled yet
    (:meth:`Recognizer.abort`). Either way the outputs get the final ``stopped`` event, with the
    counts of what was dropped, and :attr:`signals` lists the signals received (the CLI exits with
    128 + the first one: 130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, recognizer, audio, video=None, *, realtime: bool = True, events: EventWriter | None = None,
                 status: StatusLine | None = None, recorder=None, say: Callable[[str], None] | None = None,
                 ready: Callable[[], str] | None = None):
        self.rec = recognizer
        self.audio = audio
        self.video = video
        self.realtime = realtime
        self.writer = events or EventWriter(None)
        self.status = status or StatusLine(force=False)
        self.recorder = recorder
        self.say = say or (lambda message: None)
        self.ready = ready  # the line said once the session is ready (models warm, outputs open)
        self.latest_event: dict | None = None
        self.events: collections.deque[dict] = collections.deque(maxlen=KEEP_EVENTS)
        self.tally = Tally()
        self.signals: list[int] = []
        self.frames_shown = 0  # by the --window overlay
        self._stop = threading.Event()
        self._stop_reason: str | None = None
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

    def _end_audio(self, reason: str) -> None:
        self.rec.end_audio(self._stop_reason or reason)

    def _source_warnings(self) -> None:
        """What the audio source found wrong when it opened (already logged), as warning events."""
        truncated = getattr(self.audio, "truncated", None)
        if truncated:
            self.rec.warn(f"{getattr(self.audio, 'path', 'audio')}: {truncated}", source="audio", log=False)

    def _audio_pump(self) -> None:
        self._source_warnings()
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
        self._end_audio(reason)

    def _video_pump(self) -> None:
        video, lost = self.video, False
        while not self._stop.is_set():
            f = video.latest.get(timeout=VIDEO_POLL_S)
            if video.lost and not lost:
                self.rec.video_lost(video.lost)
            elif lost and not video.lost:
                self.rec.video_back()
            lost = bool(video.lost)
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
        self._source_warnings()
        frames = self.video.frames() if self.video is not None else None
        pending = next(frames, None) if frames is not None else None
        pushed = 0
        try:
            for chunk in self.audio:
                while (self.rec.backlog_s > FAST_MAX_BACKLOG_S or self.rec.busy) and not self.rec.finished:
                    time.sleep(FAST_WAIT_S)
                self._push_audio(chunk)
                pushed += len(chunk)
                while pending is not None and pending.t <= pushed / SAMPLE_RATE:
                    self._push_frame(pending.image, pending.t)
                    pending = next(frames, None)
        except InputError as e:
            self.rec.warn(str(e), source="audio")
        finally:
            if frames is not None:
                frames.close()  # releases the file
        self._end_audio(getattr(self.audio, "ended_reason", None) or "end of audio")

    # -- run ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the recognizer, then create the outputs, then start capture."""
        self.rec.start()
        self.writer.open()
        if self.recorder is not None:
            self.recorder.open()
            if self.recorder.created_dir:
                self.say(f"recording into {self.recorder.dir} (created the directory)")
            else:
                self.say(f"recording into {self.recorder.dir}")
        if hasattr(self.audio, "notify"):  # a microphone says when it is lost and back
            self.audio.notify = lambda message: self.rec.warn(message, source="audio", log=False)
        if self.realtime:
            targets = [self._audio_pump]
            if self.video is not None:
                self.video.start()
                targets.append(self._video_pump)
        else:
            targets = [self._fast_pump]
        if self.ready is not None:
            self.say(self.ready())
        for fn in targets:
            th = threading.Thread(target=fn, name=fn.__name__.strip("_"), daemon=True)
            th.start()
            self._threads.append(th)

    def consume(self) -> None:
        """Take events until the recognizer ends; each goes to every output at once."""
        for ev in self.rec.events():
            self.latest_event = ev if ev.get("type") == "utterance" else self.latest_event
            self.events.append(ev)
            self.tally.add(ev)
            self.writer.write(ev)
            if self.recorder is not None:
                self.recorder.event(ev)
            self.status.show(ev)

    def stop(self, reason: str = "stopped") -> None:
        """Stop capture; what was captured is still labelled (the pump hands the source's last
        chunks over and then ends the recognizer's audio; consume() drains the events)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()
        close = getattr(self.audio, "close", None)
        if close:
            close()
        else:
            self.rec.end_audio(reason)

    def _on_signal(self, signum, frame) -> None:
        """First SIGINT/SIGTERM: stop capture and label what was captured; second: drop the rest."""
        self.signals.append(signum)
        name = signal.Signals(signum).name
        why = "interrupted" if signum == signal.SIGINT else "terminated"
        if len(self.signals) == 1:
            again = "Ctrl-C" if signum == signal.SIGINT else name
            log.warning("%s (%s): stopping capture, labelling what was captured (%s again to drop it and quit now)",
                        why, name, again)
            self.stop(f"{why} ({name})")
        elif len(self.signals) == 2:
            log.warning("%s again: quitting now; what is not labelled yet is dropped (counted in the stopped event)", name)
            self.rec.abort(f"{why} ({name})")
            self.stop(f"{why} ({name})")
        else:
            log.warning("%s: already quitting (finishing the utterance being labelled)", name)

    def run(self, window: bool = False) -> list[dict]:
        """Start, deliver every event to the outputs until the session ends, close the outputs;
        returns the newest KEEP_EVENTS events."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start()
            if window:
                from runtime.overlay import Overlay

                consumer = threading.Thread(target=self.consume, name="events", daemon=True)
                consumer.start()
                self.frames_shown = Overlay().run(
                    latest_frame=lambda: (f.image if (f := self.rec.latest.peek()) is not None else None),
                    latest_event=lambda: self.latest_event,
                    running=lambda: consumer.is_alive(),
                )
                if consumer.is_alive():  # the user closed the window: stop, keep what was captured
                    self.stop("window closed")
                    consumer.join()
            else:
                self.consume()
        finally:
            self._stop.set()
            self.rec.close(timeout=THREAD_JOIN_S)  # the pipeline has ended: joins its threads
            for th in self._threads:
                th.join(THREAD_JOIN_S)
            if self.video is not None:
                self.video.close()
            self.status.close()
            if self.recorder is not None:
                self.recorder.close()
            self.writer.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return list(self.events)


class StopRequested(Exception):
    """SIGINT or SIGTERM before the session started (while sources open and models load)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_requested(signum, frame):
    raise StopRequested(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or "--debug" in sys.argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet = args.quiet

    def say(message: str) -> None:
        """Progress for a person, on stderr (stdout may carry the events)."""
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    if args.speakers is not None and args.speakers < 1:
        raise InputError(f"--speakers must be >= 1, got {args.speakers}")
    if args.window:
        from runtime.overlay import check_display

        check_display()
    cfg = settings_from_args(args)
    if args.asr_model:
        cfg.asr.model = args.asr_model
    if args.speakers:
        cfg.speakers.n_speakers = args.speakers
    audio_spec, video_spec = resolve_sources(args)
    realtime = not args.fast or audio_spec["kind"] == "mic" or (video_spec or {}).get("kind") == "camera"
    if args.fast and realtime:
        log.warning("--fast applies to files only; live devices run in real time")
    # Outputs are checked now and created once the session starts (nothing is left behind when a
    # source or the model fails to open).
    writer = EventWriter(args.events)
    on_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stop_requested) for sig in (signal.SIGINT, signal.SIGTERM)} if on_main else {}
    try:
        # Open the sources first: a missing device or file is reported before any model loads.
        what = {"camera": lambda v: f"camera {v['index']}", "file": lambda v: v["path"]}
        if video_spec is not None:
            say(f"opening video: {what[video_spec['kind']](video_spec)}")
        video = open_video(video_spec, cfg, realtime)
        audio = open_audio(audio_spec, cfg, realtime)
        recorder = None
        if args.record:
            from runtime.record import Recorder

            recorder = Recorder(args.record, video_fps=record_fps(video))
        from runtime.recognizer import Recognizer

        t0 = time.monotonic()
        rec = Recognizer(args.model, args.backend, cfg, realtime=realtime, video=video is not None, progress=say)
    except StopRequested as e:
        print(f"stopped ({e}) before the session started; nothing was written", file=sys.stderr)
        return 128 + e.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    source = {"mic": "the microphone", "file": audio_spec.get("path")}[audio_spec["kind"]]
    pace = "in real time" if realtime else "as fast as possible"

    def ready() -> str:
        return (f"ready in {time.monotonic() - t0:.1f} s: listening to {source} {pace}; each utterance is labelled "
                "once its speaker stops (Ctrl-C to stop)")
    status = StatusLine(force=False, whole_lines=args.events == "-" and sys.stdout.isatty()) if not quiet \
        else StatusLine(stream=open(os.devnull, "w"))
    session = Session(rec, audio, video, realtime=realtime, events=writer, status=status, recorder=recorder, say=say,
                      ready=ready)
    session.run(window=args.window)
    extra = f"; window: {session.frames_shown} frames drawn" if args.window else ""
    say(session.tally.summary() + extra)
    stopped = [e for e in session.events if e.get("type") == "status" and e.get("state") == "stopped"]
    if stopped and (stopped[-1].get("dropped_utterances") or stopped[-1].get("dropped_audio_s")):
        s = stopped[-1]
        say(f"dropped before labelling: {s['dropped_utterances']} utterances, {s['dropped_audio_s']:.1f} s of audio")
    if session.signals:
        return 128 + session.signals[0]
    if stopped and stopped[-1].get("error"):
        raise InputError(f"the session stopped early: {stopped[-1]['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
