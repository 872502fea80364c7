"""Microphone capture through a real PortAudio/ALSA path: an ALSA ``file`` device replays a raw file.

Each capture runs in a subprocess whose HOME holds an ``.asoundrc`` that makes the default ALSA
device read a raw S16_LE 16 kHz mono file, so sounddevice/PortAudio really capture it. (ALSA's
null slave is not paced, so the "microphone" delivers far faster than real time, and after the
end of the file it delivers silence.) Device loss mid-session is simulated with a fake stream.
"""
from __future__ import annotations

import ctypes.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.config import AudioConfig
from tests.live_fixtures import word_error_rate
from train.common import InputError

SR = 16000
REPO = Path(__file__).resolve().parents[1]
ASOUNDRC = (
    'pcm.!default { type plug slave.pcm "filemic" }\n'
    'pcm.filemic { type file slave.pcm "null" file "/dev/null" infile "%s" format "raw" }\n'
)
needs_portaudio = pytest.mark.skipif(
    ctypes.util.find_library("portaudio") is None,
    reason="PortAudio is missing: apt-get install -y libportaudio2 (sounddevice needs it)",
)

CAPTURE = r"""
import json, sys, time, numpy as np
from runtime.audio import MicrophoneSource, AudioOverflowError
from runtime.config import AudioConfig
from train.common import InputError
mode, out, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if mode == "capture":
        got, n = [], 0
        with MicrophoneSource(None, AudioConfig(queue_max_s=120)) as mic:
            for chunk in mic:
                got.append(chunk); n += len(chunk)
                if n >= want:
                    break
        np.save(out, np.concatenate(got))
        print(json.dumps({"device": mic.device_name, "samples": n}))
    elif mode == "overflow":
        mic = MicrophoneSource(None, AudioConfig(queue_max_s=2.0)).start()
        time.sleep(1.0)  # the consumer stalls; the (unpaced) device races ahead
        n = 0
        try:
            for chunk in mic:
                n += len(chunk)
            print(json.dumps({"samples": n, "error": None}))
        except AudioOverflowError as e:
            print(json.dumps({"samples": n, "error": str(e)}))
    else:
        MicrophoneSource(None if mode == "default" else mode)
        print(json.dumps({"error": None}))
except InputError as e:
    print(json.dumps({"error": str(e)}))
"""


def run_capture(home: Path, mode: str, out: Path | None = None, want: int = 0) -> dict:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", CAPTURE, mode, str(out or home / "x.npy"), str(want)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def file_mic(tmp_path_factory):
    """(home with .asoundrc, raw int16 samples, script) for generated two-voice speech."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to generate test speech: apt-get install -y espeak-ng sox")
    from runtime.tools.make_speech import make_conversation

    home = tmp_path_factory.mktemp("home")
    meta = make_conversation(home / "speech")
    raw = home / "mic.raw"
    subprocess.run(["sox", str(home / "speech" / "speech.wav"), "-t", "raw", "-e", "signed", "-b", "16",
                    "-r", str(SR), "-c", "1", str(raw)], check=True)
    (home / ".asoundrc").write_text(ASOUNDRC % raw)
    return home, np.fromfile(raw, "<i2"), meta["utterances"]


@needs_portaudio
def test_microphone_captures_the_alsa_file_device_exactly(file_mic):
    home, raw, script = file_mic
    out = home / "captured.npy"
    info = run_capture(home, "capture", out, want=len(raw) + SR)
    captured = np.load(out)
    assert captured.dtype == np.float32 and len(captured) >= len(raw)
    # every sample arrives, in order, none dropped or duplicated
    np.testing.assert_array_equal(np.round(captured[: len(raw)] * 32768).astype(np.int16), raw)
    assert info["device"]

    # and the captured stream goes through VAD and ASR like live speech
    from runtime.asr import Transcriber
    from runtime.vad import UtteranceSegmenter

    utts = list(UtteranceSegmenter().run(captured[i : i + 512] for i in range(0, len(captured), 512)))
    assert len(utts) == len(script)
    asr = Transcriber()
    hyp = " ".join((t.text if (t := asr.transcribe(u.audio)) else "") for u in utts)
    assert word_error_rate(" ".join(u["text"] for u in script), hyp) <= 0.25


@needs_portaudio
def test_microphone_overflow_is_an_error_not_a_silent_drop(file_mic):
    home, _, _ = file_mic
    r = run_capture(home, "overflow")
    assert r["error"] and "behind capture" in r["error"] and "queue_max_s" in r["error"]
    # everything queued before the bound was hit is still delivered
    assert 1.9 * SR <= r["samples"] <= 2 * SR


@needs_portaudio
def test_no_microphone_is_a_clear_error(tmp_path, file_mic):
    empty_home = tmp_path / "nohome"
    empty_home.mkdir()
    assert run_capture(empty_home, "default")["error"].startswith("no microphone found")
    home, _, _ = file_mic
    err = run_capture(home, "no-such-mic")["error"]
    assert err.startswith("no microphone 'no-such-mic'") and "input devices:" in err


class FakeSoundDevice:
    """Stands in for the sounddevice module: a stream that delivers ``blocks`` then fails."""

    class PortAudioError(Exception):
        pass

    class CallbackAbort(Exception):
        pass

    period = 0.002  # seconds between blocks (a real device: blocksize / 16000)

    def __init__(self, blocks: int, ending: str):
        self.blocks, self.ending = blocks, ending

    def query_devices(self, device=None, kind=None):
        return {"name": "fake mic", "index": 0, "max_input_channels": 1}

    def InputStream(self, **kw):
        fake = self

        class Status:
            input_overflow = False

        class Stream:
            active = False

            def start(self):
                import threading

                self.active = True

                def run():
                    # On a schedule, as a device's own clock delivers: a late thread (a loaded
                    # machine) catches up instead of drifting behind the wall clock.
                    t0 = time.monotonic()
                    for i in range(fake.blocks):
                        block = np.full((kw["blocksize"], 1), i + 1, np.int16)
                        try:
                            kw["callback"](block, kw["blocksize"], None, Status())
                        except fake.CallbackAbort:  # PortAudio stops the stream
                            self.active = False
                            return
                        time.sleep(max(0.0, t0 + (i + 1) * fake.period - time.monotonic()))
                    if fake.ending == "error":  # PortAudio ends the stream (device gone)
                        self.active = False
                        kw["finished_callback"]()
                    # "stall": stays active, delivers nothing more

                threading.Thread(target=run, daemon=True).start()

            def abort(self):
                self.active = False

            def close(self):
                pass

        return Stream()


@pytest.mark.parametrize("ending", ["error", "stall"])
def test_microphone_that_disappears_keeps_captured_audio(monkeypatch, caplog, ending):
    from runtime import audio

    monkeypatch.setattr(audio, "_sounddevice", lambda: FakeSoundDevice(30, ending))
    mic = audio.MicrophoneSource(None, AudioConfig(stall_timeout_s=0.3, reconnect_s=0))  # 0: do not reopen it
    t = time.monotonic()
    with caplog.at_level("WARNING"):
        chunks = list(mic)
    assert time.monotonic() - t < 5
    assert len(chunks) == 30 and [int(round(c[0] * 32768)) for c in chunks] == list(range(1, 31))
    assert "keeping the 1.0 s captured" in caplog.text
    assert ("device removed" in mic.ended_reason)
    if ending == "stall":
        assert mic.ended_reason.startswith("no audio from the microphone")


class StallingSoundDevice(FakeSoundDevice):
    """A device delivering in real time whose first stream delivers ``blocks`` blocks (numbered
    1..) and then nothing; it cannot be reopened ``refusals`` times, then a new stream delivers
    blocks numbered 1001.. again."""

    period = 512 / 16000

    def __init__(self, blocks: int, refusals: int):
        super().__init__(blocks, "stall")
        self.refusals, self.opened = refusals, 0

    def InputStream(self, **kw):
        self.opened += 1
        if 1 < self.opened <= 1 + self.refusals:
            raise self.PortAudioError("device unavailable")
        if self.opened > 1:
            callback = kw["callback"]
            kw["callback"] = lambda block, *a: callback(block + 1000, *a)
        return super().InputStream(**kw)


def test_microphone_that_stalls_comes_back_with_the_gap_as_silence(monkeypatch):
    """The microphone stops delivering, cannot be reopened twice, then is back: capture goes on,
    the time it was gone is silence (the audio clock keeps to the wall clock), and notify hears
    "lost" and "back"."""
    from runtime import audio

    fake = StallingSoundDevice(blocks=20, refusals=2)
    monkeypatch.setattr(audio, "_sounddevice", lambda: fake)
    mic = audio.MicrophoneSource(None, AudioConfig(stall_timeout_s=0.3, reconnect_s=0.2))
    told = []
    mic.notify = told.append
    chunks = []
    for chunk in mic:
        chunks.append(chunk)
        if len(chunks) > 5 and chunk[0] * 32768 > 1000.5 + 15:  # 15 blocks after it came back
            break
    elapsed = time.monotonic() - mic.start_time
    mic.close()
    values = np.concatenate(chunks) * 32768
    first = values[: 20 * mic.chunk]
    assert np.allclose(first, np.repeat(np.arange(1, 21), mic.chunk))  # nothing lost before the stall
    silence = values[20 * mic.chunk :]
    silence = silence[: np.argmax(silence > 0.5)]
    assert len(silence) > 0.3 * 16000 and not silence.any()
    assert mic.reconnects == 1 and fake.opened == 4 and mic.silence_filled_s == pytest.approx(len(silence) / 16000)
    assert len(values) / 16000 == pytest.approx(elapsed, abs=0.3)  # sample k sits at start_time + k / 16000
    assert len(told) == 2 and "lost (no audio from the microphone" in told[0] and "is back after" in told[1]


def test_a_short_stall_becomes_silence_and_is_said(monkeypatch):
    """A device that delivers nothing for 0.8 s (under stall_timeout_s) and resumes: no loss is
    declared, but the 0.8 s are silence (the audio clock stays on the wall clock) and said."""
    from runtime import audio

    class ShortStall(FakeSoundDevice):
        period = 512 / 16000

        def InputStream(self, **kw):
            callback = kw["callback"]
            calls = []

            def late(block, *a):
                calls.append(1)
                if len(calls) == 11:
                    time.sleep(0.8)  # the device stalls before block 11
                callback(block, *a)
            kw["callback"] = late
            return super().InputStream(**kw)

    mic = audio.MicrophoneSource(None, AudioConfig(stall_timeout_s=2.0), sounddevice=ShortStall(20, "stall"))
    told = []
    mic.notify = told.append
    chunks = []
    for chunk in mic:
        chunks.append(chunk)
        if sum(len(c) for c in chunks) >= 20 * 512 + 0.7 * 16000:
            break
    mic.close()
    values = np.concatenate(chunks) * 32768
    gap = values[10 * 512 :][: np.argmax(values[10 * 512 :] > 0.5)]
    assert 0.7 * 16000 < len(gap) < 0.9 * 16000 and not gap.any()
    assert mic.reconnects == 0 and len(told) == 1 and "delivered nothing for 0.8 s" in told[0], told


def test_missing_portaudio_is_a_clear_error(monkeypatch):
    import builtins

    from runtime import audio

    real_import = builtins.__import__

    def no_portaudio(name, *a, **kw):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    with pytest.raises(InputError, match="apt-get install -y libportaudio2"):
        audio.MicrophoneSource()
