"""``python -m runtime.live`` end to end: generated speech, the demo, record/replay, the microphone
path, and faults (no camera, no microphone, unreadable files, face-less video, a camera that dies).

The model is a tiny one trained and exported with the project's own commands
(tests/live_fixtures.py); the shipped default models are used where they are installed.
"""
from __future__ import annotations

import ctypes.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("onnxruntime")
if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
    pytest.skip("espeak-ng and sox are needed for test speech: apt-get install -y espeak-ng sox", allow_module_level=True)

from runtime import live  # noqa: E402
from tests import live_fixtures as fx  # noqa: E402
from train.common import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FACE = REPO / "runtime" / "demo" / "astronaut_320.jpg"  # the demo video's face


@pytest.fixture(scope="module")
def env():
    """Environment for CLI subprocesses: offline, and the voice encoder's ONNX cache already built."""
    enc = fx.voice_encoder()
    e = dict(os.environ, HF_HUB_OFFLINE="1", ARIIGCN_CACHE=str(Path(enc.path).parent), PYTHONPATH=str(REPO))
    return e


def run_live(args, env, timeout=180) -> tuple[list[dict], subprocess.CompletedProcess]:
    r = subprocess.run([sys.executable, "-m", "runtime.live", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
    events = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    return events, r


def utterances(events):
    """Final utterance events (provisional ones come before them, with the same index)."""
    return [e for e in events if e["type"] == "utterance" and e["final"]]


def labels_of(model) -> list[str]:
    from train.model_dir import read_manifest

    return read_manifest(model).labels


def check_session(events, script, model):
    from tests.test_recognizer import check_speakers

    utts = utterances(events)
    assert len(utts) == len(script["utterances"]), [e.get("text") for e in utts]
    assert fx.wer_of(events, script) <= 0.25
    assert {e["emotion"] for e in utts} <= set(labels_of(model))
    check_speakers(utts, script)
    for e in utts:
        assert {"type", "index", "start", "end", "speaker", "text", "emotion", "probs", "latency_ms"} <= set(e)


def test_end_to_end_generated_speech(env):
    """espeak-ng two voices, 8 utterances with gaps: one event each, WER <= 25%, speakers apart."""
    wav, script = fx.speech()
    model = fx.text_model()
    events, r = run_live(["--audio", str(wav), "--fast", "--model", str(model), "--events", "-"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    check_session(events, script, model)
    start = events[0]
    assert start["type"] == "status"
    fx.check_fastest_exported_backend(start["backend"], start["backends_skipped"])
    assert re.search(r"8 utterances labelled \(\d+ provisional labels before them\), 2 speakers", r.stderr), r.stderr[-500:]
    assert events[-1]["state"] == "stopped" and events[-1]["early_decodes"] >= 1


def test_set_overrides_a_runtime_setting(env):
    """--set reaches the pipeline: the old segmentation gives no provisional labels and no early
    decodes (the default gives both, test above)."""
    wav, _ = fx.speech()
    events, r = run_live(["--audio", str(wav), "--fast", "--model", str(fx.text_model()), "--events", "-",
                          "--set", "segmentation.mode=pause"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(utterances(events)) >= 8
    assert not [e for e in events if e["type"] == "utterance" and not e["final"]]
    assert events[-1]["early_decodes"] == 0 and events[-1]["provisional"] == 0


def test_demo_runs_without_torch(env):
    """--demo end to end with --backend onnx: every event, and torch never imported."""
    model = fx.text_model()
    code = ("import sys; from runtime.live import main; from train.common import run_cli; "
            f"rc = run_cli(main, ['--demo', '--fast', '--backend', 'onnx', '--model', {str(model)!r}, '--events', '-', '--quiet']); "
            "print('TORCH', 'torch' in sys.modules, file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "TORCH False" in r.stderr
    events = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    script = json.loads((live.DEMO_DIR / "script.json").read_text())
    check_session(events, script, model)
    assert events[0]["backend"] == "onnx"
    # face evidence on every utterance, from the face model (the demo shows a smiling face)
    for e in utterances(events):
        assert e["face"]["frames"] > 0 and abs(sum(e["face"]["probs"].values()) - 1) < 1e-3
        assert max(e["face"]["probs"], key=e["face"]["probs"].get) == "happy"


@pytest.mark.skipif(not (REPO / "runtime" / "models" / "iemocap" / "manifest.json").is_file(),
                    reason="the shipped iemocap model is not installed yet (runtime/models/iemocap)")
def test_demo_with_the_shipped_model(env):
    events, r = run_live(["--demo", "--fast", "--events", "-"], env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    script = json.loads((live.DEMO_DIR / "script.json").read_text())
    check_session(events, script, "iemocap")


def test_record_then_replay(env, tmp_path):
    """--record saves audio, video and events; replaying them gives the same session."""
    model = fx.text_model()
    rec_dir = tmp_path / "rec"
    events, r = run_live(["--demo", "--fast", "--backend", "onnx", "--model", str(model), "--events", "-", "--record", str(rec_dir)], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in rec_dir.iterdir()) == ["audio.wav", "events.jsonl", "video.mp4"]
    assert f"recording into {rec_dir} (created the directory)" in r.stderr
    recorded = [json.loads(l) for l in (rec_dir / "events.jsonl").read_text().splitlines()]
    assert [e["text"] for e in utterances(recorded)] == [e["text"] for e in utterances(events)]
    import av

    with av.open(str(rec_dir / "video.mp4")) as c:
        v = c.streams.video[0]
        assert v.frames > 100 and (v.width, v.height) == (320, 320)
    replay, r2 = run_live(["--video", str(rec_dir / "video.mp4"), "--audio", str(rec_dir / "audio.wav"), "--fast",
                           "--backend", "onnx", "--model", str(model), "--events", "-"], env)
    assert r2.returncode == 0, r2.stderr[-3000:]
    # a video source took ~12 s to start with nothing printed: each slow step is said before "ready"
    said = r2.stderr.splitlines()
    steps = ["opening video: " + str(rec_dir / "video.mp4"), "loading the emotion model", "loading speech recognition",
             "loading speaker recognition", "warming up", "ready in "]
    at = [next((i for i, line in enumerate(said) if line.startswith(s)), None) for s in steps]
    assert None not in at and at == sorted(at), r2.stderr[-3000:]
    a, b = utterances(events), utterances(replay)
    assert len(a) == len(b) == 8
    assert fx.word_error_rate(" ".join(e["text"] for e in a), " ".join(e["text"] for e in b)) <= 0.1
    assert all(abs(x["start"] - y["start"]) < 0.1 and x["speaker"] == y["speaker"] for x, y in zip(a, b))


def test_faceless_video_goes_on_audio_only(env, tmp_path):
    """A model with a visual modality on a video without a face: warning, visual masked, all labelled."""
    from runtime.tools.media import write_video
    from runtime.tools.make_speech import read_wav

    wav, script = fx.speech()
    audio = read_wav(wav)
    video = write_video(tmp_path / "noface.mp4", audio, len(audio) / 16000, fps=5, size=(160, 120))
    model = fx.visual_model()
    events, r = run_live(["--video", str(video), "--fast", "--backend", "onnx", "--model", str(model), "--events", "-"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    check_session(events, script, model)
    assert all(e["modalities"] == ["text"] for e in utterances(events))
    assert all(e["face"] is None for e in utterances(events))
    warns = [e for e in events if e["type"] == "warning" and "no face" in e["message"]]
    assert warns and "visual modality masked out" in warns[0]["message"]


class Paced:
    """An audio source delivered at ``speed`` x real time (keeps a fake camera alive a while)."""

    def __init__(self, inner, speed):
        self.inner, self.speed = inner, speed

    @property
    def start_time(self):
        return self.inner.start_time

    @property
    def ended_reason(self):
        return self.inner.ended_reason

    def close(self):
        self.inner.close()

    def __iter__(self):
        for chunk in self.inner:
            time.sleep(len(chunk) / 16000 / self.speed)
            yield chunk


class SlowCapture:
    """cv2.VideoCapture stand-in delivering frames at a camera's pace."""

    def __init__(self, cap, period):
        self.cap, self.period = cap, period

    def read(self):
        time.sleep(self.period)
        return self.cap.read()

    def __getattr__(self, name):
        return getattr(self.cap, name)


def test_camera_dies_mid_session(tmp_path):
    """The camera stops after 2 s: one warning, then audio-only; no utterance lost."""
    import cv2

    from runtime.audio import FileAudioSource
    from runtime.config import RuntimeConfig
    from runtime.events import EventWriter
    from runtime.recognizer import Recognizer
    from runtime.speakers import SpeakerTracker
    from runtime.tools.media import write_video
    from runtime.video import VideoSource

    wav, script = fx.speech()
    face = cv2.cvtColor(cv2.imread(str(FACE)), cv2.COLOR_BGR2RGB)
    clip = write_video(tmp_path / "cam.mp4", None, 2.0, fps=10, size=(320, 320), frame=lambda i: face)
    opened = []

    def open_camera(index):
        """Camera 0 is a clip whose frames stop after 2 s, like an unplugged camera, and that
        cannot be reopened (it stays unplugged)."""
        opened.append(index)
        return SlowCapture(cv2.VideoCapture(str(clip)) if len(opened) == 1 else Unplugged(), 0.1)

    cfg = RuntimeConfig()
    cfg.video.reconnect_s = 0.2
    camera = VideoSource(0, cfg.video, open_capture=open_camera)
    rec = Recognizer(fx.visual_model(), "onnx", cfg, realtime=True, video=True, transcriber=fx.transcriber(),
                     speakers=SpeakerTracker(cfg.speakers, encoder=fx.voice_encoder()))
    out = tmp_path / "events.jsonl"
    session = live.Session(rec, Paced(FileAudioSource(wav), speed=4.0), camera, realtime=True, events=EventWriter(out))
    events = session.run()
    utts = utterances(events)
    assert len(utts) == 8 and fx.wer_of(events, script) <= 0.25
    lost = [e for e in events if e["type"] == "warning" and "video lost" in e["message"]]
    assert len(lost) == 1 and "camera" in lost[0]["message"] and "stopped delivering frames" in lost[0]["message"]
    assert utts[0]["modalities"] == ["text", "visual"]  # the face was seen while the camera lived
    assert all(e["modalities"] == ["text"] for e in utts[2:])
    assert len([json.loads(l) for l in out.read_text().splitlines()]) == len(events)  # all written, line by line
    assert len(opened) > 3 and camera.reconnects == 0  # it kept trying to reopen the camera


class Unplugged:
    def isOpened(self):
        return False

    def release(self):
        pass


def test_camera_that_comes_back_is_used_again(tmp_path):
    """The camera stops after 2 s and is back ~1 s later: a "video lost" then a "video back"
    warning, and the utterance spoken after its return sees the face again. Real time (the
    camera's clock is the wall clock), on the first two utterances of the conversation."""
    import cv2

    from runtime.audio import FileAudioSource
    from runtime.config import RuntimeConfig
    from runtime.events import EventWriter
    from runtime.recognizer import Recognizer
    from runtime.speakers import SpeakerTracker
    from runtime.tools.make_speech import read_wav, write_wav
    from runtime.tools.media import write_video
    from runtime.video import VideoSource

    wav, script = fx.speech()
    two = tmp_path / "two.wav"  # utterances 0 (0.6-2.9 s) and 1 (4.0-6.7 s)
    write_wav(two, read_wav(wav)[: int(7.5 * 16000)])
    face = cv2.cvtColor(cv2.imread(str(FACE)), cv2.COLOR_BGR2RGB)
    first = write_video(tmp_path / "cam1.mp4", None, 2.0, fps=10, size=(320, 320), frame=lambda i: face)
    later = write_video(tmp_path / "cam2.mp4", None, 20.0, fps=10, size=(320, 320), frame=lambda i: face)
    opened = []

    def open_camera(index):  # 2 s of frames, two failed reopenings, then frames for good
        opened.append(index)
        n = len(opened)
        return SlowCapture(cv2.VideoCapture(str(first if n == 1 else later)), 0.1) if n == 1 or n > 3 else Unplugged()

    cfg = RuntimeConfig()
    cfg.video.reconnect_s = 0.3
    camera = VideoSource(0, cfg.video, open_capture=open_camera)
    rec = Recognizer(fx.visual_model(), "onnx", cfg, realtime=True, video=True, transcriber=fx.transcriber(),
                     speakers=SpeakerTracker(cfg.speakers, encoder=fx.voice_encoder()))
    session = live.Session(rec, FileAudioSource(two, realtime=True), camera, realtime=True,
                           events=EventWriter(tmp_path / "events.jsonl"))
    events = session.run()
    utts = utterances(events)
    assert len(utts) == 2, events
    video = [e["message"] for e in events if e["type"] == "warning" and e.get("source") == "video"]
    lost = [i for i, m in enumerate(video) if m.startswith("video lost")]
    back = [i for i, m in enumerate(video) if m.startswith("video back")]
    assert len(lost) == 1 and len(back) == 1 and lost[0] < back[0], video
    assert camera.reconnects == 1 and len(opened) == 4
    assert utts[0]["modalities"] == ["text", "visual"]  # seen while the camera lived
    assert utts[1]["modalities"] == ["text", "visual"]  # seen again after it came back


@pytest.mark.skipif(ctypes.util.find_library("portaudio") is None, reason="PortAudio is missing: apt-get install -y libportaudio2")
def test_microphone_through_alsa_file_device(env, tmp_path):
    """--mic really captures through sounddevice/PortAudio/ALSA: an ALSA ``file`` device replays the
    speech. That device is not paced: it delivers the 29 s of speech, then silence, far faster than
    real time, so the pipeline falls behind it -- and must say so loudly (exit 2, one error line)
    after labelling every utterance captured before the bound (audio.queue_max_s = 60 s)."""
    from runtime.tools.make_speech import read_wav

    wav, script = fx.speech()
    raw = tmp_path / "speech.raw"
    (np.clip(read_wav(wav), -1, 1) * 32767).astype("<i2").tofile(raw)
    (tmp_path / ".asoundrc").write_text(
        'pcm.!default { type plug slave.pcm "filemic" }\n'
        f'pcm.filemic {{ type file slave.pcm "null" file "/dev/null" infile "{raw}" format "raw" }}\n')
    cfg = tmp_path / "runtime.yaml"
    cfg.write_text("audio:\n  queue_max_s: 60\n")
    events, r = run_live(["--mic", "--model", str(fx.text_model()), "--backend", "onnx", "--config", str(cfg), "--events", "-"],
                         dict(env, HOME=str(tmp_path)))
    check_session(events, script, fx.text_model())
    assert r.returncode == 2
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "behind capture" in errors[0], r.stderr[-2000:]
    assert events[-1]["type"] == "status" and events[-1]["state"] == "stopped"


def test_ctrl_c_stops_capture_and_keeps_what_was_said(env):
    """SIGINT during a real-time replay: capture stops, what was said is processed, exit 130."""
    wav, script = fx.speech()
    p = subprocess.Popen([sys.executable, "-m", "runtime.live", "--audio", str(wav), "--model", str(fx.text_model()),
                          "--backend", "onnx", "--events", "-"], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []
    try:
        for line in p.stdout:
            events.append(json.loads(line))
            if len(utterances(events)) == 1:
                time.sleep(2.0)  # into the second utterance (3.9-6.7 s): event 0 comes >= 3.2 s in
                p.send_signal(signal.SIGINT)
                break
        rest, err = p.communicate(timeout=60)
    finally:
        p.kill()
    events += [json.loads(l) for l in rest.splitlines() if l.startswith("{")]
    assert p.returncode == 130, err[-2000:]
    assert "interrupted (SIGINT)" in err
    utts = utterances(events)
    # The utterance being spoken at Ctrl-C is processed too: cut mid-word, it is labelled or (when
    # the ASR's guards reject the truncated audio) reported as having no words -- never dropped.
    second = [e for e in utts + [e for e in events if e["type"] == "warning"] if abs((e.get("start") or 0) - 3.9) < 0.3]
    assert len(utts) < 8 and len(second) == 1, (events, err[-2000:])
    assert events[-1]["type"] == "status" and events[-1]["state"] == "stopped"
    assert events[-1]["reason"] == "interrupted (SIGINT)" and events[-1]["dropped_utterances"] == 0


@pytest.mark.parametrize("signals,code", [
    ([signal.SIGINT, signal.SIGINT], 130),
    ([signal.SIGTERM], 143),
    ([signal.SIGTERM, signal.SIGTERM], 143),
])
def test_signals_close_the_outputs_with_a_stopped_event(env, tmp_path, signals, code):
    """Real signals to a session replaying a file, as a person (Ctrl-C twice) or a service manager
    (SIGTERM) sends them. Ctrl-C twice once aborted (exit 134, "terminate called without an active
    exception", no stopped event) and SIGTERM exited without a word. Now: the outputs end with the
    stopped event, which counts what was dropped, and the exit code is 128 + the first signal."""
    wav, _ = fx.speech()
    out = tmp_path / "events.jsonl"
    rec_dir = tmp_path / "rec"
    p = subprocess.Popen([sys.executable, "-m", "runtime.live", "--audio", str(wav), "--model", str(fx.text_model()),
                          "--backend", "onnx", "--events", str(out), "--record", str(rec_dir)], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_file() and '"utterance"' in out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # into the second utterance
        for sig in signals:
            p.send_signal(sig)
            time.sleep(0.05)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == code, err[-2000:]
    assert "terminate called" not in err and "Traceback" not in err, err[-2000:]
    events = [json.loads(l) for l in out.read_text().splitlines()]
    stopped = events[-1]
    name = signal.Signals(signals[0]).name
    assert stopped["type"] == "status" and stopped["state"] == "stopped" and name in stopped["reason"], stopped
    assert stopped["utterances"] >= 1 and stopped["utterances"] == len(utterances(events))
    assert stopped["utterances"] + stopped["no_words"] + stopped["dropped_utterances"] == stopped["segments"]
    assert "dropped_audio_s" in stopped
    # the recording is closed too: final names, the same events
    assert sorted(f.name for f in rec_dir.iterdir()) == ["audio.wav", "events.jsonl"]
    assert (rec_dir / "events.jsonl").read_text() == out.read_text()


def test_events_on_stdout_stay_pure_jsonl_on_a_terminal(env):
    """``--events -`` with stdout and stderr on one terminal: every JSON event on a line of its own.
    The status line used to be rewritten in place without a newline, and the next event was
    appended to it (``...total 544]{"type":"utterance",...``)."""
    import pty

    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "runtime.live", "--demo", "--fast", "--backend", "onnx",
                          "--model", str(fx.text_model()), "--events", "-"], cwd=REPO, env=env,
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    lines = text.replace("\r\n", "\n").split("\n")
    json_lines = [l for l in lines if '{"type"' in l]
    utterance_lines = [l for l in json_lines if '"utterance"' in l]
    assert len([l for l in utterance_lines if '"final":true' in l]) == 8, text[-3000:]
    for line in json_lines:
        assert line.startswith("{") and json.loads(line), line
    status = [l for l in lines if l.startswith("#")]
    assert len(status) == len(utterance_lines)  # the status line, one whole line per event (provisional too)


def test_outputs_are_created_only_when_the_session_starts(env, tmp_path, capsys):
    """A model that cannot load leaves no events file and no recording directory behind; a missing
    directory for the events file is refused, not created."""
    wav, _ = fx.speech()
    out, rec_dir = tmp_path / "events.jsonl", tmp_path / "rec"
    assert run_cli(live.main, ["--audio", str(wav), "--model", str(tmp_path / "nonexistent"), "--events", str(out),
                               "--record", str(rec_dir)]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert not out.exists() and not rec_dir.exists()
    missing = tmp_path / "no" / "such" / "dir" / "e.jsonl"
    assert run_cli(live.main, ["--audio", str(wav), "--events", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"the directory {missing.parent} does not exist; create it first" in err
    assert not (tmp_path / "no").exists()
    assert run_cli(live.main, ["--audio", str(wav), "--record", str(tmp_path / "no" / "rec")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err and not (tmp_path / "no").exists()


# -- faults at start: one clear line, exit code 2 ---------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["--camera", "7", "--audio", "{wav}"], "no camera at index 7"),
    (["--mic", "no-such-microphone-xyz"], "no microphone 'no-such-microphone-xyz'"),
    (["--audio", "{garbage}"], "cannot read as audio/video"),
    (["--audio", "{missing}"], "audio file not found"),
    (["--video", "{garbage}"], "cannot read as video"),
    (["--audio", "{wav}", "--window"], "--window needs"),
    ([], "no source"),
    (["--demo", "--audio", "{wav}"], "--demo replays the shipped sample"),
    (["--audio", "{wav}", "--model", "{missing}"], "no such model directory"),
    (["--audio", "{wav}", "--backend", "trt", "--model", "{model}"], "TensorRT"),
    (["--audio", "{wav}", "--speakers", "0"], "--speakers must be >= 1"),
    (["--audio", "{wav}", "--set", "segmentation.provisional_pause_ms=400"], "provisional_pause_ms"),
    (["--audio", "{wav}", "--set", "segmentation.no_such_key=1"], "no_such_key"),
])
def test_start_faults_are_one_line_errors(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x01 this is not audio" * 50)
    wav = fx.speech()[0]
    fill = {"wav": str(wav), "garbage": str(garbage), "missing": str(tmp_path / "missing.wav"),
            "model": str(fx.text_model()) if "{model}" in args else ""}
    argv = [a.format(**fill) for a in args]
    rc = run_cli(live.main, argv)
    err = capsys.readouterr().err
    assert rc == 2
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_session_memory_is_bounded_however_long_it_runs():
    """Session.events once kept every event of the session; now the newest KEEP_EVENTS, while the
    tally (the end-of-session summary) counts them all with bounded latency samples."""
    session = live.Session(recognizer=None, audio=None)
    tally = session.tally
    for k in range(3 * live.KEEP_EVENTS):
        ev = {"type": "utterance", "final": True, "speaker": k % 3, "latency_ms": {"total": float(k), "asr": 1.0, "model": 1.0,
                                                                     "features": 1.0}}
        session.events.append(ev)
        tally.add(ev)
    tally.add({"type": "warning", "message": "x"})
    tally.add({"type": "utterance", "final": False, "speaker": 0, "latency_ms": {"total": -1.0}})
    assert len(session.events) == live.KEEP_EVENTS and session.events[-1]["latency_ms"]["total"] == 3 * live.KEEP_EVENTS - 1
    assert tally.utterances == 3 * live.KEEP_EVENTS and len(tally.speakers) == 3 and tally.warnings == 1
    assert all(len(v) <= live.Tally.LATENCY_SAMPLES for v in tally.latency.values())
    assert max(tally.latency["total"]) == 3 * live.KEEP_EVENTS - 1  # a provisional label's latency is not counted
    assert tally.summary().startswith(f"{3 * live.KEEP_EVENTS} utterances labelled (1 provisional labels before them), "
                                      "3 speakers, 1 warnings")
    tally.add({"type": "speaker_update", "merged": [2], "into": 0, "indices": [2, 5]})
    assert len(tally.speakers) == 2


def test_model_loading_errors_are_one_short_line(tmp_path, capsys):
    """--model nonexistent once repeated the same sentence per backend, and a truncated
    model.safetensors advised re-running the export. Now: one short line with the reason."""
    wav = fx.speech()[0]
    assert run_cli(live.main, ["--audio", str(wav), "--model", "nonexistent"]) == 2
    err = capsys.readouterr().err
    line = [l for l in err.splitlines() if l.startswith("error:")][0]
    assert line.count("no such model directory") == 1 and len(line) < 200, line
    broken = tmp_path / "broken"
    shutil.copytree(fx.text_model(), broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    for backend in ([], ["--backend", "onnx"], ["--backend", "torch"]):
        assert run_cli(live.main, ["--audio", str(wav), "--model", str(broken), *backend]) == 2
        lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
        assert len(lines) == 1 and "model.safetensors is truncated: the file has 5000 bytes" in lines[0], lines
        assert "export" not in lines[0] and "TensorRT" not in lines[0] and len(lines[0]) < 300, lines[0]


def test_stale_export_warns_loudly_when_falling_back(tmp_path, caplog):
    """An export made from another version of the model: the runtime runs on torch and says so on
    stderr (it used to say so only in the start event's backends_skipped)."""
    from runtime.recognizer import select_backend

    model = tmp_path / "model"
    shutil.copytree(fx.text_model(), model)
    with open(model / "config.yaml", "a") as f:
        f.write("# edited after the export\n")
    with caplog.at_level("WARNING"):
        backend, notes = select_backend(model)
    assert backend.name == "torch"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "running on the slower torch backend" in warned[0] and "re-export" in warned[0], warned
    assert any(n.startswith("onnx-int8: the export was made from model version") for n in notes), notes
    caplog.clear()
    with caplog.at_level("WARNING"):
        backend, notes = select_backend(fx.text_model())  # a faster backend missing here: expected, not warned about
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    fx.check_fastest_exported_backend(backend.name, notes)  # onnx-int8 on this CPU, trt where TensorRT is


def test_damaged_int8_export_warns_naming_what_cannot_run(tmp_path, caplog):
    """An INT8 graph that no longer matches the export manifest: the runtime runs on the FP32 ONNX
    export and the warning names onnx-int8 (it used to say "the fast ONNX path is unusable" while
    running on ONNX) and a re-export command that names the model."""
    from runtime.recognizer import select_backend

    model = tmp_path / "model"
    shutil.copytree(fx.text_model(), model)
    int8 = next((model / "export").glob("graph*int8*.onnx"))
    int8.write_bytes(int8.read_bytes()[:5000])
    with caplog.at_level("WARNING"):
        backend, notes = select_backend(model)
    assert backend.name == "onnx"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1, warned
    assert warned[0].startswith("running on the slower onnx backend: onnx-int8 cannot run (graph"), warned[0]
    assert "ONNX path is unusable" not in warned[0] and f"python -m export --model {model} --int8" in warned[0], warned[0]


def test_window_on_the_headless_opencv_build_names_the_build(monkeypatch, capsys):
    """The server set-up (ARIIGCN_HEADLESS=1) installs OpenCV without its GUI: --window says so in
    one line, before any model loads, instead of OpenCV's traceback at the first frame."""
    from runtime import overlay

    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(overlay, "opencv_has_gui", lambda: False)
    assert run_cli(live.main, ["--demo", "--window"]) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "the headless build" in lines[0] and "ARIIGCN_HEADLESS" in lines[0], err
    assert "loading" not in err and "Traceback" not in err


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run is missing (bash .ci/setup.sh installs xvfb)")
def test_window_shows_the_overlay_under_a_virtual_display(env):
    """``--window`` after the one set-up command: the GUI OpenCV build draws the overlay on an X
    display (here xvfb's), and the session labels every utterance meanwhile."""
    from runtime.overlay import opencv_has_gui

    if not opencv_has_gui():
        pytest.skip("this environment has the headless OpenCV build (ARIIGCN_HEADLESS=1); bash .ci/setup.sh installs the GUI one")
    r = subprocess.run(["xvfb-run", "-a", sys.executable, "-m", "runtime.live", "--demo", "--fast", "--window",
                        "--backend", "onnx", "--model", str(fx.text_model()), "--events", "-"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(utterances(events)) == 8
    drawn = re.search(r"window: (\d+) frames drawn", r.stderr)
    assert drawn and int(drawn.group(1)) >= 10, r.stderr[-2000:]


def test_overlay_keeps_drawing_while_the_model_is_busy():
    """The --window display loop draws frames (with face boxes, label, transcript) at its own pace
    while the model thread is blocked; OpenCV's GUI calls are stubbed (no display here)."""
    import types

    import cv2

    from runtime.overlay import Overlay
    from tests.test_recognizer import GatedTranscriber, make_recognizer
    from runtime.tools.make_speech import read_wav

    face = cv2.imread(str(FACE))
    shown = []
    gui = dict(namedWindow=lambda *a: None, destroyWindow=lambda *a: None, waitKey=lambda ms: (time.sleep(ms / 1000), -1)[1],
               getWindowProperty=lambda *a: 1.0, imshow=lambda title, img: shown.append(img))
    fake_cv2 = types.SimpleNamespace(**{**{k: getattr(cv2, k) for k in dir(cv2) if not k.startswith("__")}, **gui})
    gated = GatedTranscriber(fx.transcriber())
    rec = make_recognizer(fx.text_model(), "onnx", transcriber=gated, video=True).start()
    audio = read_wav(fx.speech()[0])
    for i in range(0, 16000 * 8, 512):  # two utterances' worth; the model thread blocks on the first
        rec.push_audio(audio[i : i + 512])
    rec.push_frame(face, 0.0)
    overlay = Overlay()
    overlay.cv2 = fake_cv2
    event = {"emotion": "happy", "probs": {"happy": 0.9}, "speaker": 0, "text": "I finally got the job offer this morning."}
    t0 = time.monotonic()
    overlay.run(lambda: (f.image if (f := rec.latest.peek()) is not None else None), lambda: event,
                running=lambda: time.monotonic() - t0 < 1.0, fps=30)
    assert gated.calls == 0 and not [e for e in rec.poll() if e["type"] == "utterance"]  # model still blocked
    # ~30 fps requested; a loaded 2-core machine drew 3-4 a second even without a model: the point
    # is that it keeps drawing while the model thread is blocked, not its speed (a benchmark's job)
    assert len(shown) >= 2
    last = shown[-1]
    assert last.shape == face.shape and not np.array_equal(last, face)  # label/transcript drawn
    assert overlay.boxes and all(w > 60 for _, _, w, _ in overlay.boxes)  # the astronaut's face boxed
    gated.gate.set()
    rec.end_audio()
    assert len(utterances(rec.events(timeout=60))) == 2
