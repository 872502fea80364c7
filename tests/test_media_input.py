"""Bad media input: a missing or unreadable clip, features of the wrong width, a video without a face.

* ``python -m train.extract audio|visual``: a clip that is missing or cannot be decoded, or that
  ends before an utterance's span starts, is one line naming the clip (exit 2), and no feature
  file is written (an existing one is untouched);
* features of another width than the model's: refused, naming the modality and both widths, by
  ``train.evaluate`` (torch), the exported backends and the live feature builder;
* a clip without a face: its visual row is NaN (the modality is masked for that utterance); live,
  the utterance's ``face`` is null (tests/test_live.py::test_faceless_video_goes_on_audio_only).
"""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train.common import InputError, run_cli

REPO = Path(__file__).resolve().parents[1]
FACE = REPO / "runtime" / "demo" / "astronaut_320.jpg"


def write_corpus(path: Path) -> Path:
    """A COSMIC-layout IEMOCAP file with two dialogues ``d0`` (train) and ``d1`` (valid), 2 utterances each."""
    speakers = {d: ["M", "F"] for d in ("d0", "d1")}
    labels = {d: [0, 1] for d in ("d0", "d1")}
    sentences = {d: ["hello there", "fine thanks"] for d in ("d0", "d1")}
    with open(path, "wb") as f:
        pickle.dump([speakers, labels, sentences, ["d0"], [], ["d1"]], f, protocol=2)
    return path


def write_clips(folder: Path) -> dict[str, Path]:
    """A spoken wav, a video with the demo face, a video without a face, and a file of garbage."""
    import cv2

    from runtime.tools.make_speech import VOICES, synthesize, write_wav
    from runtime.tools.media import write_video

    folder.mkdir(parents=True, exist_ok=True)
    speech = synthesize("hello there, how are you", VOICES["A"], folder)
    write_wav(folder / "speech.wav", speech)
    rgb = cv2.cvtColor(cv2.imread(str(FACE)), cv2.COLOR_BGR2RGB)
    face = write_video(folder / "face.mp4", None, 2.0, fps=5, size=(320, 320), frame=lambda i: rgb)
    noface = write_video(folder / "noface.mp4", None, 2.0, fps=5, size=(320, 320))
    garbage = folder / "broken.mp4"
    garbage.write_bytes(b"\x00not a media file\x00" * 64)
    return {"speech": folder / "speech.wav", "face": face, "noface": noface, "broken": garbage}


def manifest(path: Path, rows: list[tuple[str, int, str]]) -> Path:
    path.write_text("dialogue_id,utterance_index,path,start,end\n" + "".join(f"{d},{i},{p},,\n" for d, i, p in rows))
    return path


def extract_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.extract", *args, "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The error: exit 2, one ``error:`` line, last, no traceback (progress logs may come before it)."""
    lines = r.stderr.strip().splitlines()
    errors = [l for l in lines if l.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1 and lines[-1] == errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return errors[0]


@pytest.mark.parametrize("modality", ["audio", "visual"])
def test_missing_or_unreadable_clip_is_one_line_and_writes_nothing(tmp_path, modality):
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    if modality == "audio":
        pytest.importorskip("opensmile")
    else:
        pytest.importorskip("ai_edge_litert")
    clips = write_clips(tmp_path / "media")
    data = write_corpus(tmp_path / "iemocap_small.pkl")
    good = clips["speech"] if modality == "audio" else clips["face"]
    out = tmp_path / "feats.npz"

    # a good manifest first: the feature file exists
    ok = manifest(tmp_path / "media" / "ok.csv", [("d0", 0, good.name), ("d1", 1, good.name)])
    r = extract_cli(modality, "--data", str(data), "--media", str(ok), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    before = out.read_bytes()

    # an unreadable clip: one line naming it; the existing file is untouched, no stray temp file
    bad = manifest(tmp_path / "media" / "bad.csv", [("d0", 0, good.name), ("d1", 1, "broken.mp4")])
    line = one_line_error(extract_cli(modality, "--data", str(data), "--media", str(bad), "--out", str(out)))
    assert str(clips["broken"]) in line, line
    assert ("cannot decode audio" if modality == "audio" else "cannot open video") in line, line
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.npz", "iemocap_small.pkl", "media"]

    # a missing clip: one line naming it; nothing written for a new output
    missing = manifest(tmp_path / "media" / "missing.csv", [("d0", 0, good.name), ("d1", 0, "gone.wav")])
    fresh = tmp_path / "fresh.npz"
    line = one_line_error(extract_cli(modality, "--data", str(data), "--media", str(missing), "--out", str(fresh)))
    assert "media file not found" in line and str(tmp_path / "media" / "gone.wav") in line, line
    assert not fresh.exists()


@pytest.mark.parametrize("modality", ["audio", "visual"])
def test_span_past_the_end_of_its_clip_is_one_line_and_writes_nothing(tmp_path, modality):
    """A span that starts after its clip ends (a truncated clip, a wrong file or wrong times) would
    give the utterance no features without a word: one line naming the clip and where it ends."""
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    pytest.importorskip("opensmile" if modality == "audio" else "ai_edge_litert")
    clips = write_clips(tmp_path / "media")
    data = write_corpus(tmp_path / "iemocap_small.pkl")
    good = clips["speech"] if modality == "audio" else clips["face"]  # 2 s of video; the speech is shorter
    m = tmp_path / "media" / "late.csv"
    m.write_text("dialogue_id,utterance_index,path,start,end\n"
                 f"d0,0,{good.name},,\nd1,1,{good.name},0.2,0.9\nd1,0,{good.name},30.0,31.5\n")
    out = tmp_path / "feats.npz"
    line = one_line_error(extract_cli(modality, "--data", str(data), "--media", str(m), "--out", str(out)))
    assert str(good) in line and "span starts at 30.00 s" in line and f"{modality if modality == 'audio' else 'video'} ends at" in line, line
    assert not out.exists()
    # within the clip the same spans extract
    m.write_text("dialogue_id,utterance_index,path,start,end\n"
                 f"d0,0,{good.name},,\nd1,1,{good.name},0.2,0.9\nd1,0,{good.name},0.1,0.5\n")
    r = extract_cli(modality, "--data", str(data), "--media", str(m), "--out", str(out))
    assert r.returncode == 0 and out.exists(), r.stderr[-2000:]


def test_clip_without_a_face_gives_a_masked_visual_row(tmp_path):
    """fer on a clip without a face: a NaN row (masked in the graph), next to a finite one."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("cv2")
    from train.data import load_corpus
    from train.extract import extract_corpus
    from train.features.registry import get_extractor
    from train.graph import present_rows

    clips = write_clips(tmp_path / "media")
    data = write_corpus(tmp_path / "iemocap_small.pkl")
    m = manifest(tmp_path / "media" / "v.csv", [("d0", 0, "face.mp4"), ("d0", 1, "noface.mp4")])
    feats, stats = extract_corpus(load_corpus(data), get_extractor("fer"), tmp_path / "v.npz", media=m, progress=False)
    assert np.isfinite(feats["d0"][0]).all() and np.isnan(feats["d0"][1]).all()
    assert list(present_rows(feats["d0"])) == [True, False]
    assert stats.empty == 3  # the faceless clip + d1's two utterances without media


# -- features of the wrong width ---------------------------------------------------------------


@pytest.fixture(scope="module")
def precomputed_model(tmp_path_factory):
    """A tiny text+audio+visual model on precomputed features (16/12/8-d), and data with 9-d visual."""
    from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap
    from train.__main__ import main as train_main

    d = tmp_path_factory.mktemp("dims")
    good = write_dialoguernn_iemocap(d / "IEMOCAP_features_raw.pkl", n_train=8, n_test=2)
    (d / "wide").mkdir()
    wide = write_dialoguernn_iemocap(d / "wide" / "IEMOCAP_features_raw.pkl", n_train=8, n_test=2,
                                     dims={"text": 16, "audio": 12, "visual": 9})
    cfg = write_config(d / "cfg.yaml", tiny_config(modalities=("text", "audio", "visual"), train={"epochs": 1}))
    assert train_main(["--config", str(cfg), "--data", str(good), "--out", str(d / "model"), "--no-progress"]) == 0
    return d / "model", wide


def test_evaluate_refuses_features_of_another_width(precomputed_model, capsys):
    from train.evaluate import main as evaluate_main

    model, wide = precomputed_model
    assert run_cli(evaluate_main, ["--model", str(model), "--data", str(wide), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "visual features are 9-d but the model expects 8-d" in err[0], err


def test_exported_backends_refuse_features_of_another_width():
    pytest.importorskip("onnxruntime")
    from export.backends import load_backend
    from tests import live_fixtures as fx
    from train.data.corpus import Dialogue

    model = fx.visual_model()  # text 384-d (minilm) + visual 128-d (fer embedding), exported
    for name in ("torch", "onnx"):
        backend = load_backend(model, name)
        dims = dict(backend.manifest.dims)
        assert dims == {"text": 384, "visual": 128}
        feats = {"text": np.zeros((3, 384), np.float32), "visual": np.zeros((3, 7), np.float32)}
        d = Dialogue("d0", "test", ["A", "B", "A"], np.zeros(3, np.int64), features=feats)
        with pytest.raises(InputError, match="visual features are 7-d but the model expects 128-d"):
            backend.predict([d])


def test_live_feature_builder_refuses_another_width():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("ai_edge_litert")
    from export.backends import load_backend
    from runtime.features import FeatureBuilder, UtteranceData
    from tests import live_fixtures as fx
    from train.features.visual import FerExtractor

    backend = load_backend(fx.visual_model(), "onnx")
    # an extractor of another width (fer's 7 probabilities instead of its 128-d embedding): refused at start
    with pytest.raises(InputError, match=r"the visual extractor here \(fer .*7-d\) is not the one .*128-d"):
        FeatureBuilder(backend.manifest, backend, extractors={"visual": FerExtractor(output="probs")})

    class Narrow:  # claims the model's identity but returns rows of another width
        identity = backend.manifest.extractors["visual"]

        def extract(self, items):
            return np.zeros((len(items), 7), np.float32)

    fb = FeatureBuilder(backend.manifest, backend, extractors={"visual": Narrow()})
    with pytest.raises(InputError, match="visual features are 7-d but the model expects 128-d"):
        fb.build(UtteranceData(text="hi", speaker=0, frames=[np.zeros((8, 8, 3), np.uint8)]))
