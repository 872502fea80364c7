"""Random and truncated bytes fed to every reader: each gives a one-line InputError or a clean
result, never another exception and never a hang.

Readers: each pickle layout, the MELD CSV, audio (the live source and the extraction decoder),
video (the live source and the extraction frame reader), a model directory (weights, config,
manifest), an export directory (its manifest), the media manifest CSV and the YAML configs
(training, encoder, runtime). Each starts from a valid file and gets seeded mutations: empty,
random bytes of the same length, truncations at random points and a few changed bytes. Bounded:
CASES mutations per reader, each within CASE_LIMIT_S (a watchdog ends the run if one hangs).
"""
from __future__ import annotations

import faulthandler
import shutil
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests import synthetic_pickles as sp
from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap
from train.common import InputError, run_cli

REPO = Path(__file__).resolve().parents[1]
SEED = 20240613
CASES = 12  # mutations per reader: empty, random, 5 truncations, 5 byte changes
CASE_LIMIT_S = 20.0  # a generous bound on this loaded 2-core machine; cases take milliseconds
WATCHDOG_S = 300.0  # a hung case ends the test run with every thread's traceback instead of hanging CI


def mutations(data: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Seeded mutations of a valid file's bytes."""
    out = [("empty", b""), ("random bytes", rng.bytes(len(data)))]
    n_each = (CASES - 2) // 2
    for cut in sorted(rng.integers(1, max(2, len(data)), size=n_each)):
        out.append((f"truncated to {cut} of {len(data)} bytes", data[:cut]))
    for _ in range(n_each):
        b = bytearray(data)
        where = rng.integers(0, len(b), size=int(rng.integers(1, 9)))
        for i in where:
            b[i] = int(rng.integers(0, 256))
        out.append((f"{len(where)} bytes changed at {sorted(int(i) for i in where)[:4]}...", bytes(b)))
    return out


def fuzz(name: str, original: Path, read: Callable[[Path], object], tmp_path: Path, seed_offset: int = 0) -> dict:
    """Feed every mutation of ``original`` (written in its place, so the file keeps its name and
    directory) to ``read``; returns counts of clean results and InputErrors."""
    rng = np.random.default_rng(SEED + seed_offset)
    data = original.read_bytes()
    counts = {"clean": 0, "InputError": 0}
    try:
        for label, mutated in mutations(data, rng):
            original.write_bytes(mutated)
            t0 = time.monotonic()
            try:
                read(original)
                counts["clean"] += 1
            except InputError as e:
                message = str(e)
                assert "\n" not in message and message.strip(), f"{name}, {label}: not one line: {message!r}"
                assert len(message) < 800, f"{name}, {label}: {len(message)} characters: {message[:300]}..."
                counts["InputError"] += 1
            except Exception as e:  # noqa: BLE001 - the failure this test exists to find
                pytest.fail(f"{name}, {label}: {type(e).__name__}: {e}")
            elapsed = time.monotonic() - t0
            assert elapsed < CASE_LIMIT_S, f"{name}, {label}: took {elapsed:.1f} s"
    finally:
        original.write_bytes(data)
    read(original)  # the restored original still reads
    print(f"{name}: {counts}")  # pytest -s shows how deep the mutations got
    return counts


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# -- corpora -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(sp.MAKERS) + ["mmgcn-iemocap"])
def test_pickle_layouts(tmp_path, layout):
    from train.data.load import load_corpus

    writer = sp.write_mmgcn_iemocap if layout == "mmgcn-iemocap" else sp._writer(sp.MAKERS[layout])
    path = writer(tmp_path / f"{layout}.pkl", n_dialogues=6).path
    counts = fuzz(layout, path, load_corpus, tmp_path, seed_offset=zlib.crc32(layout.encode()) % 1000)  # hash() of a str differs per process
    assert counts["InputError"] >= 2  # at least the empty and the random file are refused


def test_meld_csv(tmp_path):
    from tests.test_data_loaders import GOOD, _csv
    from train.data.load import load_corpus

    rows = [(text, who, emotion, sentiment, dialogue + 10 * k, utt) for k in range(3)
            for text, who, emotion, sentiment, dialogue, utt in GOOD]
    fuzz("MELD CSV", _csv(tmp_path / "dev_sent_emo.csv", rows), load_corpus, tmp_path)


# -- media ---------------------------------------------------------------------------------------


def _speech(tmp_path: Path) -> Path:
    path = tmp_path / "speech.wav"
    shutil.copy(REPO / "tests" / "assets" / "speech_happy.wav", path)
    return path


def test_audio_live_source(tmp_path):
    from runtime.audio import FileAudioSource

    def read(path):
        return sum(len(c) for c in FileAudioSource(path))

    fuzz("audio (live)", _speech(tmp_path), read, tmp_path)


def test_audio_extraction(tmp_path):
    from train.extract.media import MediaSpan, _decode_audio, load_audio

    def read(path):
        _decode_audio.cache_clear()  # the decoder caches by path; each mutation is a new file
        return load_audio(MediaSpan(path, 0.2, 1.0))

    fuzz("audio (extraction)", _speech(tmp_path), read, tmp_path)


def _video(tmp_path: Path) -> Path:
    from runtime.tools.media import write_video
    from runtime.tools.make_speech import read_wav

    audio = read_wav(REPO / "tests" / "assets" / "speech_happy.wav")
    return write_video(tmp_path / "clip.mp4", audio[:16000], 1.0, fps=10, size=(64, 48))


def test_video_live_source(tmp_path):
    from runtime.video import VideoSource

    def read(path):
        return sum(1 for _ in VideoSource(path, realtime=False).frames())

    fuzz("video (live)", _video(tmp_path), read, tmp_path)


def test_video_extraction(tmp_path):
    from train.extract.media import MediaSpan, load_frames

    fuzz("video (extraction)", _video(tmp_path), lambda p: load_frames(MediaSpan(p, 0.0, 1.0)), tmp_path)


def test_media_manifest(tmp_path):
    from train.extract.media import read_manifest

    _speech(tmp_path)
    manifest = tmp_path / "media.csv"
    manifest.write_text("dialogue_id,utterance_index,path,start,end\n" +
                        "".join(f"d{k},{i},speech.wav,{i * 0.5},{i * 0.5 + 0.4}\n" for k in range(3) for i in range(4)))
    fuzz("media manifest", manifest, read_manifest, tmp_path)


# -- models and configs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny trained model on precomputed features, exported to ONNX (no text encoder)."""
    from export.__main__ import main as export_main
    from train.__main__ import main as train_main

    tmp = tmp_path_factory.mktemp("fuzz-model")
    data = write_dialoguernn_iemocap(tmp / "feats.pkl", n_train=10, n_test=2, dims={"text": 8, "audio": 4, "visual": 4})
    out = tmp / "model"
    assert run_cli(train_main, ["--config", str(write_config(tmp / "cfg.yaml", tiny_config(train={"epochs": 1}))),
                                "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert run_cli(export_main, ["--model", str(out), "--no-parity", "--no-text"]) == 0
    return out


@pytest.mark.parametrize("name", ["model.safetensors", "config.yaml", "manifest.json"])
def test_model_directory(model_dir, tmp_path, name):
    from export.backends import load_backend

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)

    def read(path):
        return load_backend(model, "torch").manifest

    fuzz(f"model directory ({name})", model / name, read, tmp_path)


def test_export_directory(model_dir, tmp_path):
    from export.backends import load_backend

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)

    def read(path):
        backend = load_backend(model, "onnx")
        return backend.step({"text": np.zeros((1, 8), np.float32)}, [0])

    fuzz("export manifest", model / "export" / "manifest.json", read, tmp_path)


@pytest.mark.parametrize("config,loader", [
    ("iemocap.yaml", "train.config:load_config"),
    ("meld-encoder.yaml", "train.finetune_config:load_encoder_config"),
    ("runtime.yaml", "runtime.config:load_runtime_config"),
])
def test_yaml_configs(tmp_path, config, loader):
    import importlib

    module, fn = loader.split(":")
    load = getattr(importlib.import_module(module), fn)
    path = tmp_path / config
    shutil.copy(REPO / "configs" / config, path)
    fuzz(config, path, load, tmp_path)
