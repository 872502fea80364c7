"""The MiniLM text extractor and the extractor registry."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from train.common import InputError
from train.features import registry
from train.features.base import FeatureExtractor, UtteranceInput
from train.features.text import DIM, MiniLMExtractor, default_model_path, model_identity

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def minilm() -> MiniLMExtractor:
    ex = MiniLMExtractor(device="cpu", batch_size=8)
    ex.model  # load once for the module
    return ex


def test_shape_dtype_and_protocol(minilm):
    items = [UtteranceInput(text=t) for t in ["Hello there.", "I can't believe you did that!", "Okay."]]
    out = minilm.extract(items)
    assert isinstance(minilm, FeatureExtractor)
    assert out.shape == (3, DIM) == (3, minilm.identity.dim)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # model ends with Normalize


def test_deterministic_across_calls(minilm):
    texts = ["Why would you say that to me?", "I'm so happy for you!", "Whatever."]
    a = minilm.encode(texts)
    b = minilm.encode(texts)
    np.testing.assert_array_equal(a, b)
    # one sentence alone matches the same sentence inside a batch (padding does not leak in)
    np.testing.assert_allclose(minilm.encode(texts[:1])[0], a[0], atol=1e-5)


def test_similar_sentences_are_closer(minilm):
    a, b, c = minilm.encode(["I am furious with you right now.", "I'm really angry at you.", "The train leaves at seven tomorrow morning."])
    assert float(a @ b) > float(a @ c) + 0.2
    assert float(a @ b) > float(b @ c) + 0.2


def test_blank_text_gives_nan_row(minilm):
    items = [UtteranceInput(text="Fine."), UtteranceInput(text=""), UtteranceInput(text="   \n"), UtteranceInput(text=None)]
    out = minilm.extract(items)
    assert np.isfinite(out[0]).all()
    assert np.isnan(out[1:]).all()
    assert np.isnan(minilm.encode([]).reshape(0, DIM)).size == 0


def test_identity_tracks_weights_and_pipeline(tmp_path):
    base = model_identity()
    assert (base.name, base.modality, base.dim) == ("minilm", "text", 384)
    assert base == MiniLMExtractor.default_identity() == model_identity(default_model_path())

    def copy_model(dst: Path) -> Path:
        # symlinks except the files a test changes: a copy of the layout without 90 MB of copying
        for f in default_model_path().rglob("*"):
            if f.is_file():
                target = dst / f.relative_to(default_model_path())
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(f)
        return dst

    changed_weights = copy_model(tmp_path / "w")
    (changed_weights / "model.safetensors").unlink()
    (changed_weights / "model.safetensors").write_bytes(b"other weights")
    assert model_identity(changed_weights).version != base.version

    changed_pooling = copy_model(tmp_path / "p")
    cfg = changed_pooling / "1_Pooling" / "config.json"
    text = cfg.read_text().replace('"pooling_mode_mean_tokens": true', '"pooling_mode_mean_tokens": false').replace('"pooling_mode_cls_token": false', '"pooling_mode_cls_token": true')
    cfg.unlink()
    cfg.write_text(text)
    assert model_identity(changed_pooling).version != base.version

    same = copy_model(tmp_path / "s")
    assert model_identity(same) == base  # identity follows content, not location


def test_bad_model_directory_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        MiniLMExtractor(tmp_path / "missing")
    with pytest.raises(InputError, match="modules.json"):
        MiniLMExtractor(tmp_path)


def test_imports_stay_torch_free():
    code = (
        "import sys; import train.features.text, train.features.registry, train.features.cache, train.extract; "
        "from train.features.text import MiniLMExtractor; MiniLMExtractor.default_identity(); "
        "from train.features.registry import resolve; resolve('minilm', 'torch'); "
        "bad = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_registry_resolves_and_builds(minilm):
    assert registry.known()["minilm"][:2] == ["torch", "onnx"]
    assert registry.default_backend("minilm") == "torch"
    ex = registry.get_extractor("minilm", batch_size=4)
    assert isinstance(ex, MiniLMExtractor) and ex.identity == minilm.identity and ex.batch_size == 4
    onnx_cls = registry.resolve("minilm", "onnx")
    assert onnx_cls.__name__ == "OnnxMiniLMExtractor"


def test_registry_errors():
    with pytest.raises(InputError, match=r"unknown feature extractor 'nope'.*minilm \(torch\|onnx\)"):
        registry.get_extractor("nope")
    with pytest.raises(InputError, match="has no backend 'tensorrt'"):
        registry.get_extractor("minilm", backend="tensorrt")
    with pytest.raises(InputError, match="takes no option frobnicate; it takes: path, device, batch_size"):
        registry.get_extractor("minilm", frobnicate=1)
    registry.register("ghost", "train.features.no_such_module:Ghost", backend="torch")
    try:
        with pytest.raises(InputError, match="'ghost'.*not available: cannot import 'train.features.no_such_module'"):
            registry.get_extractor("ghost")
    finally:
        registry._REGISTRY.pop("ghost")
    with pytest.raises(ValueError):
        registry.register("x", "no_colon")
