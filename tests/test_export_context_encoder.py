"""``python -m export`` of a model whose text features come from a fine-tuned encoder (the shipped
MELD model: ``minilm-ctx-meld``, which reads 8 past turns; before it ``mpnet-ft-meld``, which read the
utterance alone): the merged encoder goes into the export with its context format, and the
runtime's features from it equal the torch extractor's.

The export is set-up's (``runtime/models/meld/export``, made by ``.ci/setup.sh``) when it is up to
date, as the runtime uses it; otherwise one is made here (a minute or two for mpnet)."""
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
    """``meld`` and its encoder are found by name through the model search path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARIIGCN_MODEL_PATH", str(Path(__file__).resolve().parents[1] / "runtime" / "models"))
        yield


@pytest.fixture(scope="module")
def meld_export(tmp_path_factory):
    """(model_dir, export_dir, encoder name, its context format)."""
    from export.__main__ import main as export_main
    from export.manifest import read_export_manifest
    from train.features.text_context import ContextFormat
    from train.model_dir import read_manifest, resolve_model_dir

    model_dir = resolve_model_dir("meld")
    name = read_manifest(model_dir).extractors["text"].name
    if name in ("minilm", "mpnet"):
        pytest.skip(f"the shipped MELD model uses the frozen encoder {name}")
    out = model_dir / "export"
    current = (out / "manifest.json").is_file() and (out / "manifest.json").stat().st_mtime >= (model_dir / "model.safetensors").stat().st_mtime
    if not current:
        out = tmp_path_factory.mktemp("meld-export")
        assert export_main(["--model", "meld", "--out", str(out), "--int8", "--no-parity"]) == 0
    read_export_manifest(out)  # verified: hashes, files
    fmt = ContextFormat(**json.loads((out / "context.json").read_text())["context"])
    return model_dir, out, name, fmt


def _items():
    return [UtteranceInput(text=t, speaker=s, context=[UtteranceInput(text=pt, speaker=ps) for ps, pt in TURNS[:i]])
            for i, (s, t) in enumerate(TURNS)]


def test_export_holds_the_merged_encoder_and_its_context_format(meld_export):
    from export.manifest import TEXT_CONTEXT, TEXT_ENCODER, read_export_manifest

    from train.features.registry import get_extractor

    _, out, name, fmt = meld_export
    em = read_export_manifest(out)
    assert em.file(TEXT_CONTEXT) == "context.json"
    assert {em.file(TEXT_ENCODER, "fp32"), em.file(TEXT_ENCODER, "int8")} == {"text_encoder.onnx", "text_encoder.int8.onnx"}
    ctx = json.loads((out / "context.json").read_text())
    # the export's identity and context format are the torch extractor's (what the graph trained on)
    assert ctx["identity"] == em.extractors["text"].to_dict() == get_extractor(name, device="cpu").identity.to_dict()


def test_exported_features_equal_the_torch_extractor_and_read_the_context(meld_export):
    from export.backends import OnnxBackend
    from train.features.registry import get_extractor

    model_dir, out, name, fmt = meld_export
    be = OnnxBackend(model_dir, export_dir=out)
    onnx_fp32, onnx_int8 = be.text_extractor("fp32"), be.text_extractor("int8")
    torch_ex = get_extractor(name, device="cpu")
    items = _items()
    ref = torch_ex.extract(items)
    np.testing.assert_allclose(onnx_fp32.extract(items), ref, atol=1e-4)
    int8 = onnx_int8.extract(items)
    cos = (int8 * ref).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.95, cos
    # with its past the same utterance gives another embedding when the encoder reads past turns,
    # and the same one when it reads the utterance alone
    alone = onnx_fp32.extract([UtteranceInput(text=TURNS[-1][1], speaker=TURNS[-1][0])])
    gap = np.abs(alone - onnx_fp32.extract(items[-1:])).max()
    assert gap > 1e-3 if fmt.turns else gap < 1e-6


def test_runtime_feature_builder_passes_the_history(meld_export):
    """The live FeatureBuilder hands the past turns to the encoder exactly as training did."""
    from export.backends import OnnxBackend
    from runtime.features import FeatureBuilder, UtteranceData
    from train.features.registry import get_extractor

    model_dir, out, name, _ = meld_export
    be = OnnxBackend(model_dir, export_dir=out)
    fb = FeatureBuilder(be.manifest, be)
    history = [UtteranceData(text=t, speaker=int(s)) for s, t in TURNS[:-1]]
    rows, _ = fb.build(UtteranceData(text=TURNS[-1][1], speaker=int(TURNS[-1][0])), history)
    ref = get_extractor(name, device="cpu").extract(_items()[-1:])[0]
    np.testing.assert_allclose(rows["text"], ref, atol=1e-4)


def test_tampered_context_file_is_refused(meld_export, tmp_path):
    import shutil

    from export.backends import OnnxBackend

    model_dir, out, _, fmt = meld_export
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    info = json.loads((copy / "context.json").read_text())
    info["context"]["turns"] = fmt.turns + 1
    (copy / "context.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="context.json"):
        OnnxBackend(model_dir, export_dir=copy).text_extractor("fp32")
