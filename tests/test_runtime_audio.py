"""Audio/video sources, the never-dropping audio queue, the latest-frame buffer, the config."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from runtime.tools.media import write_video
from train.common import InputError

SR = 16000
REPO = Path(__file__).resolve().parents[1]


def tone(seconds: float, sr: int = SR, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f * t) * np.linspace(0.2, 1.0, len(t))).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sr: int, channels: int = 1) -> Path:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


# -- AudioQueue ------------------------------------------------------------------------------


def test_queue_keeps_everything_in_order_across_threads():
    from runtime.audio import AudioQueue

    q = AudioQueue(max_samples=SR * 60)
    chunks = [np.full(512, i, np.float32) for i in range(500)]

    def produce():
        for c in chunks:
            assert q.put(c)
        q.close("done")

    th = threading.Thread(target=produce)
    th.start()
    got = []
    while (c := q.get(timeout=1.0)) is not None:
        got.append(int(c[0]))
        if len(got) % 50 == 0:
            time.sleep(0.01)  # a consumer slower than the producer
    th.join()
    assert got == list(range(500))
    assert q.finished() and q.reason == "done" and q.total_samples == 500 * 512


def test_queue_overflow_fails_loudly_after_delivering_what_it_holds():
    from runtime.audio import AudioOverflowError, AudioQueue

    q = AudioQueue(max_samples=4 * 512)
    for i in range(4):
        assert q.put(np.full(512, i, np.float32))
    assert not q.put(np.zeros(512, np.float32))  # refused: never blocks, never drops silently
    assert [int(q.get()[0]) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(AudioOverflowError, match="fell .* behind"):
        q.get()
    assert not q.put(np.zeros(10, np.float32))  # stays stopped


def test_queue_get_times_out_without_data():
    from runtime.audio import AudioQueue

    q = AudioQueue(1000)
    t = time.monotonic()
    assert q.get(timeout=0.05) is None and not q.finished()
    assert time.monotonic() - t >= 0.04


# -- files -----------------------------------------------------------------------------------


def test_file_source_resamples_stereo_44k_to_16k_mono(tmp_path):
    from runtime.audio import FileAudioSource, load_audio

    src = write_wav(tmp_path / "stereo44.wav", tone(2.0, sr=44100), 44100, channels=2)
    chunks = list(FileAudioSource(src, chunk_ms=32))
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    assert all(len(c) == 512 for c in chunks[:-1])
    audio = np.concatenate(chunks)
    assert abs(len(audio) - 2 * SR) <= 64
    ref = tone(2.0)
    n = min(len(ref), len(audio))
    assert np.corrcoef(ref[:n], audio[:n])[0, 1] > 0.99
    assert np.array_equal(load_audio(src), audio)


def test_file_source_reads_the_sound_track_of_a_video(tmp_path):
    from runtime.audio import load_audio

    ref = tone(3.0, f=300.0)
    video = write_video(tmp_path / "clip.mp4", ref, seconds=3.0)
    audio = load_audio(video)
    assert audio.dtype == np.float32 and abs(len(audio) - len(ref)) < SR // 10
    # AAC may delay by its priming samples; find the lag, then compare
    lag = int(np.argmax(np.correlate(audio[: SR], ref[: SR // 2], "valid")))
    n = min(len(ref), len(audio) - lag)
    assert np.corrcoef(ref[:n], audio[lag : lag + n])[0, 1] > 0.99


def test_file_source_realtime_paces_delivery(tmp_path):
    from runtime.audio import FileAudioSource

    src = write_wav(tmp_path / "short.wav", tone(0.5), SR)
    t = time.monotonic()
    n = sum(len(c) for c in FileAudioSource(src, realtime=True))
    elapsed = time.monotonic() - t
    assert n == SR // 2
    assert elapsed >= 0.45  # not faster than real time (the last chunk is due at 0.468 s)


def test_file_source_errors(tmp_path):
    from runtime.audio import FileAudioSource

    with pytest.raises(InputError, match="audio file not found"):
        FileAudioSource(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(InputError, match="junk.wav: cannot read as audio/video"):
        FileAudioSource(junk)
    silent_video = write_video(tmp_path / "silent.mp4", None, seconds=1.0)
    with pytest.raises(InputError, match="has no audio track"):
        FileAudioSource(silent_video)
    with pytest.raises(InputError, match="not a file"):
        FileAudioSource(tmp_path)


def test_truncated_wav_says_it_ends_before_its_header_length(tmp_path, caplog):
    """The first 1000 bytes of a 2 s WAV once replayed without a word (exit 0, "no utterances
    labelled"). Now the source says the file ends before its header's length, and what it holds."""
    import struct

    from runtime.audio import FileAudioSource
    from train.extract.media import wav_truncation

    whole = write_wav(tmp_path / "whole.wav", tone(2.0), SR)
    assert wav_truncation(whole) is None and FileAudioSource(whole).truncated is None
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:1000])
    with caplog.at_level("WARNING"):
        src = FileAudioSource(cut)
        audio = np.concatenate(list(src))
    said = "the file ends before its header's length: the header declares 2.00 s of audio, the file holds 0.03 s"
    assert src.truncated.startswith(said) and "(956 of 64000 bytes)" in src.truncated
    assert f"cut.wav: {said}" in caplog.text and "replaying the audio that is there" in caplog.text
    assert len(audio) == 478  # what is there is still delivered
    streamed = bytearray(whole.read_bytes())  # a streaming writer's "length unknown" is not a truncation
    streamed[40:44] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    assert wav_truncation(tmp_path / "streamed.wav") is None
    assert "ends inside its WAV header" in wav_truncation(_write(tmp_path / "head.wav", whole.read_bytes()[:30]))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_file_source_damaged_file_keeps_decoded_audio(tmp_path, caplog):
    """Corrupt bytes part-way through: the audio before the damage is delivered, then a warning."""
    from runtime.audio import FileAudioSource

    ref = tone(4.0, f=250.0)
    data = bytearray(write_video(tmp_path / "full.mkv", ref, seconds=4.0).read_bytes())
    mid = len(data) // 2
    data[mid : mid + 2000] = b"\xff" * 2000
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    src = FileAudioSource(bad)
    with caplog.at_level("WARNING"):
        audio = np.concatenate(list(src))
    assert src.ended_reason.startswith("decoding failed")
    assert "bad.mkv" in caplog.text and "keeping the audio decoded so far" in caplog.text
    assert SR <= len(audio) < len(ref)
    lag = int(np.argmax(np.correlate(audio[:SR], ref[: SR // 2], "valid")))
    n = len(audio) - lag - 1024
    assert np.corrcoef(ref[:n], audio[lag : lag + n])[0, 1] > 0.99


# -- video -----------------------------------------------------------------------------------


def test_video_file_frames_timestamps_and_latest_wins(tmp_path):
    from runtime.video import VideoSource

    video = write_video(tmp_path / "v.mp4", None, seconds=4.0, fps=10)
    src = VideoSource(video, realtime=False).start()
    src._thread.join(10)
    assert src.ended_reason == "end of file" and src.frames_read == 40
    # nobody consumed: one frame is held, the other 39 were dropped, not queued
    f = src.latest.get(timeout=0.1)
    assert f.index == 39 and abs(f.t - 3.9) < 1e-6 and f.image.shape == (48, 64, 3)
    assert src.latest.dropped == 39
    assert src.latest.get(timeout=0.01) is None  # nothing newer
    # history: bounded, sub-sampled to history_fps, timestamps from the file
    ts = [fr.t for fr in src.history.between(0.0, 10.0)]
    assert len(ts) == len(src.history) <= src.history._ring.maxlen
    assert np.allclose(np.diff(ts), 0.2)


def test_video_history_is_bounded(tmp_path):
    from runtime.config import VideoConfig
    from runtime.video import VideoSource

    video = write_video(tmp_path / "v.mp4", None, seconds=6.0, fps=10)
    src = VideoSource(video, VideoConfig(history_s=2.0, history_fps=5.0), realtime=False).start()
    src._thread.join(10)
    frames = src.history.between(0, 100)
    assert len(frames) == 10 and frames[-1].index == 58 and frames[0].t >= 3.9


def test_video_realtime_consumer_sees_increasing_frames(tmp_path):
    from runtime.video import VideoSource

    video = write_video(tmp_path / "v.mp4", None, seconds=1.0, fps=20)
    seen = []
    with VideoSource(video, realtime=True) as src:
        while (f := src.latest.get(timeout=1.0)) is not None:
            seen.append(f.index)
            time.sleep(0.12)  # slower than 20 fps: must skip frames, never lag behind
    assert seen == sorted(seen) and len(seen) < 20 and seen[-1] == 19


def test_video_errors(tmp_path):
    from runtime.video import VideoSource

    with pytest.raises(InputError, match="no camera at index 9"):
        VideoSource(9)
    with pytest.raises(InputError, match="video file not found"):
        VideoSource(tmp_path / "none.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"garbage" * 200)
    with pytest.raises(InputError, match="junk.mp4"):
        VideoSource(junk)


def test_camera_that_dies_mid_session_ends_cleanly(monkeypatch, caplog):
    import cv2

    from runtime import video as video_mod

    class DyingCamera:
        def __init__(self, index):
            self.n = 0

        def isOpened(self):
            return True

        def set(self, *a):
            return True

        def get(self, prop):
            return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

        def read(self):
            self.n += 1
            if self.n > 5:
                return False, None  # unplugged
            time.sleep(0.01)
            return True, np.zeros((4, 4, 3), np.uint8)

        def release(self):
            pass

    from runtime.config import VideoConfig

    monkeypatch.setattr(cv2, "VideoCapture", DyingCamera)
    with caplog.at_level("WARNING"):
        src = video_mod.VideoSource(0, VideoConfig(reconnect_s=0)).start()  # 0: do not try to reopen it
        src._thread.join(5)
    assert src.frames_read == 5 and "stopped delivering frames" in src.ended_reason
    assert "continuing without video" in caplog.text
    assert src.latest.peek().index == 4 and len(src.history) >= 1  # frames already captured are kept


# -- config ----------------------------------------------------------------------------------


def test_runtime_yaml_equals_defaults_and_rejects_unknown_keys(tmp_path):
    from runtime.config import RuntimeConfig, load_runtime_config

    assert load_runtime_config(REPO / "configs" / "runtime.yaml") == RuntimeConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("vad:\n  min_silence: 300\n")
    with pytest.raises(InputError, match="unknown config key 'vad.min_silence'"):
        load_runtime_config(bad)
    bad.write_text("vad:\n  speech_pad_ms: 500\n")
    with pytest.raises(InputError, match="speech_pad_ms must not exceed"):
        load_runtime_config(bad)
    bad.write_text("speakers:\n  n_speakers: 0\n")
    with pytest.raises(InputError, match="n_speakers"):
        load_runtime_config(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text("speakers:\n  n_speakers: 2\nvad:\n  min_silence_ms: 500\n")
    cfg = load_runtime_config(ok)
    assert cfg.speakers.n_speakers == 2 and cfg.vad.min_silence_ms == 500


def test_runtime_modules_do_not_import_torch():
    code = (
        "import sys, runtime, runtime.config, runtime.audio, runtime.video, runtime.vad, runtime.asr, runtime.speakers;"
        "import runtime.tools.make_speech, runtime.tools.media;"
        "from runtime.vad import UtteranceSegmenter; import numpy as np;"
        "list(UtteranceSegmenter().run([np.zeros(16000, np.float32)]));"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
