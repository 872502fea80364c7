"""``python -m export`` of a model whose text features come from a fine-tuned context encoder
(the shipped MELD model, ``minilm-ctx-meld``): the merged encoder goes into the export with its
context format, and the runtime's features from it equal the torch extractor's."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("onnxruntime")

from train.common import InputError
from train.features.base import UtteranceInput

TURNS = [("0", "I finally got the job."), ("1", "That is wonderful news!"), ("0", "Thank you, I was so nervous."),
         ("1", "Why did you not tell me before?"), ("0", "I did not want you to worry.")]


@pytest.fixture(scope="module", autouse=True)
def _shipped_models_by_name():
    """``meld`` and ``minilm-ctx-meld`` are found by name through the model search path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARIIGCN_MODEL_PATH", str(Path(__file__).resolve().parents[1] / "runtime" / "models"))
        yield


@pytest.fixture(scope="module")
def meld_export(tmp_path_factory):
    from export.__main__ import main as export_main
    from train.model_dir import read_manifest, resolve_model_dir

    model_dir = resolve_model_dir("meld")
    if read_manifest(model_dir).extractors["text"].name != "minilm-ctx-meld":
        pytest.skip("the shipped MELD model does not use the fine-tuned encoder")
    out = tmp_path_factory.mktemp("meld-export")
    assert export_main(["--model", "meld", "--out", str(out), "--int8", "--int8-method", "dynamic", "--no-parity"]) == 0
    return model_dir, out


def _items():
    return [UtteranceInput(text=t, speaker=s, context=[UtteranceInput(text=pt, speaker=ps) for ps, pt in TURNS[:i]])
            for i, (s, t) in enumerate(TURNS)]


def test_export_holds_the_merged_encoder_and_its_context_format(meld_export):
    from export.manifest import TEXT_CONTEXT, TEXT_ENCODER, read_export_manifest

    _, out = meld_export
    em = read_export_manifest(out)
    assert em.file(TEXT_CONTEXT) == "context.json"
    assert {em.file(TEXT_ENCODER, "fp32"), em.file(TEXT_ENCODER, "int8")} == {"text_encoder.onnx", "text_encoder.int8.onnx"}
    ctx = json.loads((out / "context.json").read_text())
    assert ctx["identity"] == em.extractors["text"].to_dict() and ctx["context"]["turns"] == 3


def test_exported_features_equal_the_torch_extractor_and_read_the_context(meld_export):
    from export.backends import OnnxBackend
    from train.features.registry import get_extractor

    model_dir, out = meld_export
    be = OnnxBackend(model_dir, export_dir=out)
    onnx_fp32, onnx_int8 = be.text_extractor("fp32"), be.text_extractor("int8")
    torch_ex = get_extractor("minilm-ctx-meld", device="cpu")
    items = _items()
    ref = torch_ex.extract(items)
    np.testing.assert_allclose(onnx_fp32.extract(items), ref, atol=1e-4)
    int8 = onnx_int8.extract(items)
    cos = (int8 * ref).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.95, cos
    # the same utterance with another past gives another embedding (the encoder reads the turns)
    alone = onnx_fp32.extract([UtteranceInput(text=TURNS[-1][1], speaker=TURNS[-1][0])])
    assert np.abs(alone - onnx_fp32.extract(items[-1:])).max() > 1e-3


def test_runtime_feature_builder_passes_the_history(meld_export):
    """The live FeatureBuilder hands the past turns to the encoder exactly as training did."""
    from export.backends import OnnxBackend
    from runtime.features import FeatureBuilder, UtteranceData
    from train.features.registry import get_extractor

    model_dir, out = meld_export
    be = OnnxBackend(model_dir, export_dir=out)
    fb = FeatureBuilder(be.manifest, be)
    history = [UtteranceData(text=t, speaker=int(s)) for s, t in TURNS[:-1]]
    rows, _ = fb.build(UtteranceData(text=TURNS[-1][1], speaker=int(TURNS[-1][0])), history)
    ref = get_extractor("minilm-ctx-meld", device="cpu").extract(_items()[-1:])[0]
    np.testing.assert_allclose(rows["text"], ref, atol=1e-4)


def test_tampered_context_file_is_refused(meld_export, tmp_path):
    import shutil

    from export.backends import OnnxBackend

    model_dir, out = meld_export
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    info = json.loads((copy / "context.json").read_text())
    info["context"]["turns"] = 1
    (copy / "context.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="context.json"):
        OnnxBackend(model_dir, export_dir=copy).text_extractor("fp32")
