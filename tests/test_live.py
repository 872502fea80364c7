"""``python -m runtime.live`` end to end: generated speech, the demo, record/replay, the microphone
path, and faults (no camera, no microphone, unreadable files, face-less video, a camera that dies).

The model is a tiny one trained and exported with the project's own commands
(tests/live_fixtures.py); the shipped default models are used where they are installed.
"""
from __future__ import annotations

import ctypes.util
import json
import os
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
    assert "8 utterances labelled, 2 speakers" in r.stderr


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
    recorded = [json.loads(l) for l in (rec_dir / "events.jsonl").read_text().splitlines()]
    assert [e["text"] for e in utterances(recorded)] == [e["text"] for e in utterances(events)]
    import av

    with av.open(str(rec_dir / "video.mp4")) as c:
        v = c.streams.video[0]
        assert v.frames > 100 and (v.width, v.height) == (320, 320)
    replay, r2 = run_live(["--video", str(rec_dir / "video.mp4"), "--audio", str(rec_dir / "audio.wav"), "--fast",
                           "--backend", "onnx", "--model", str(model), "--events", "-"], env)
    assert r2.returncode == 0, r2.stderr[-3000:]
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
    camera = VideoSource(clip, realtime=True)
    camera.is_camera = True  # a "camera" whose frames stop after 2 s, like an unplugged one
    camera._cap = SlowCapture(camera._cap, 0.1)  # a camera delivers 10 frames a second
    cfg = RuntimeConfig()
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
    """SIGINT during a real-time replay: capture stops, what was said is processed, exit 0."""
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
    assert p.returncode == 0, err[-2000:]
    assert "interrupted" in err
    utts = utterances(events)
    # The utterance being spoken at Ctrl-C is processed too: cut mid-word, it is labelled or (when
    # the ASR's guards reject the truncated audio) reported as having no words -- never dropped.
    second = [e for e in utts + [e for e in events if e["type"] == "warning"] if abs((e.get("start") or 0) - 3.9) < 0.3]
    assert len(utts) < 8 and len(second) == 1, (events, err[-2000:])
    assert events[-1]["type"] == "status" and events[-1]["state"] == "stopped"


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
    assert len(shown) >= 15  # ~30 fps requested; at least half of that on a loaded machine
    last = shown[-1]
    assert last.shape == face.shape and not np.array_equal(last, face)  # label/transcript drawn
    assert overlay.boxes and all(w > 60 for _, _, w, _ in overlay.boxes)  # the astronaut's face boxed
    gated.gate.set()
    rec.end_audio()
    assert len(utterances(rec.events(timeout=60))) == 2
