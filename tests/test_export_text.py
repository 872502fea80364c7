"""Text encoder export: ONNX FP32 parity with sentence-transformers, INT8 variant, torch-free use."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")
pytest.importorskip("sentence_transformers")

from export.text_encoder import PARITY_TEXTS, export_text_encoder, quantize_text_encoder  # noqa: E402
from train.common import InputError  # noqa: E402
from train.features.base import UtteranceInput  # noqa: E402
from train.features.text_onnx import ENCODER_FILE, ENCODER_INT8_FILE, TOKENIZER_FILE, OnnxMiniLMExtractor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Longer than the encoder's 256-token limit: both sides must truncate the same way.
LONG = " ".join(["we talked about it again and again and nobody listened"] * 40)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("text_encoder")
    files = quantize_text_encoder(export_text_encoder(out))
    return out, files


@pytest.fixture(scope="module")
def torch_extractor():
    from train.features.text import MiniLMExtractor

    return MiniLMExtractor()


def _items(texts):
    return [UtteranceInput(text=t) for t in texts]


def test_files_and_tokenizer_copied(exported):
    out, files = exported
    from train.features.text import default_model_path

    assert files.onnx == out / ENCODER_FILE and files.int8 == out / ENCODER_INT8_FILE
    assert (out / TOKENIZER_FILE).read_bytes() == (default_model_path() / TOKENIZER_FILE).read_bytes()
    assert files.dim == 384 and files.max_length == 256


def test_fp32_matches_sentence_transformers(exported, torch_extractor):
    out, _ = exported
    texts = PARITY_TEXTS + [LONG, "", "   ", None, "Yes!"]
    onnx_ext = OnnxMiniLMExtractor(out)
    assert onnx_ext.identity == torch_extractor.identity
    ref = torch_extractor.extract(_items(texts))
    got = onnx_ext.extract(_items(texts))
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    blank = np.isnan(ref).all(1)
    assert blank.tolist() == np.isnan(got).all(1).tolist() == [False] * (len(PARITY_TEXTS) + 1) + [True, True, True, False]
    assert np.abs(got[~blank] - ref[~blank]).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got[~blank], axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_embeddings(exported):
    out, _ = exported
    one = OnnxMiniLMExtractor(out, batch_size=1).extract(_items(PARITY_TEXTS))
    many = OnnxMiniLMExtractor(out, batch_size=8).extract(_items(PARITY_TEXTS))
    assert np.abs(one - many).max() < 1e-5


def test_int8_close_to_fp32_and_smaller(exported):
    out, files = exported
    fp32 = OnnxMiniLMExtractor(out).extract(_items(PARITY_TEXTS))
    int8_ext = OnnxMiniLMExtractor(out, precision="int8")
    assert int8_ext.identity == OnnxMiniLMExtractor(out).identity
    int8 = int8_ext.extract(_items(PARITY_TEXTS))
    cos = (fp32 * int8).sum(1) / np.linalg.norm(int8, axis=1)
    assert cos.min() > 0.93, cos  # measured: mean ~0.98, min ~0.96
    assert files.int8.stat().st_size < files.onnx.stat().st_size / 3


def test_smoothed_int8_keeps_the_embedding_and_what_the_runtime_needs(exported, tmp_path):
    """The smoothed INT8 method (mpnet's; here on MiniLM, which is quick to export): smoothing Muls,
    integer MatMuls and 8-bit blocks in the file, the metadata the extractor loads (identity,
    sequence limit), and embeddings close to FP32 on sentences that were not its calibration."""
    import shutil
    from dataclasses import replace

    import onnx

    from export.text_encoder import CALIBRATION_TEXTS

    out, files = exported
    for f in (ENCODER_FILE, TOKENIZER_FILE):
        shutil.copy(out / f, tmp_path / f)
    files = quantize_text_encoder(replace(files, onnx=tmp_path / ENCODER_FILE, tokenizer=tmp_path / TOKENIZER_FILE, int8=None), "smoothed")
    assert files.int8 == tmp_path / ENCODER_INT8_FILE
    ops = [n.op_type for n in onnx.load(str(files.int8)).graph.node]
    assert ops.count("MatMulNBits") == 6 and ops.count("MatMulInteger") == 6 * 5 and "Mul" in ops  # per layer: q/k/v/o/up; down
    fp32_ext, int8_ext = OnnxMiniLMExtractor(tmp_path), OnnxMiniLMExtractor(tmp_path, precision="int8")
    assert int8_ext.identity == fp32_ext.identity and int8_ext.max_length == fp32_ext.max_length == 256
    assert not set(PARITY_TEXTS) & set(CALIBRATION_TEXTS)
    fp32, int8 = fp32_ext.extract(_items(PARITY_TEXTS)), int8_ext.extract(_items(PARITY_TEXTS))
    cos = (fp32 * int8).sum(1) / np.linalg.norm(int8, axis=1)
    assert cos.min() > 0.97, cos
    assert files.int8.stat().st_size < files.onnx.stat().st_size / 3


def test_int8_method_by_encoder(exported):
    from export.text_encoder import int8_method

    assert int8_method("minilm") == "dynamic" and int8_method("minilm-ctx-meld") == "smoothed"
    assert int8_method("mpnet") == "smoothed" and int8_method("mpnet-ft-iemocap") == "smoothed"
    with pytest.raises(InputError, match="unknown text encoder INT8 method"):
        quantize_text_encoder(exported[1], "int4")


def test_registry_maps_minilm_onnx(exported):
    from train.features.registry import get_extractor

    ext = get_extractor("minilm", backend="onnx", path=exported[0])
    assert isinstance(ext, OnnxMiniLMExtractor)


def test_runs_without_torch(exported):
    """The live runtime imports and runs the ONNX extractor with torch unavailable."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['sentence_transformers'] = None\n"
        "from train.features.text_onnx import OnnxMiniLMExtractor\n"
        "from train.features.base import UtteranceInput\n"
        f"e = OnnxMiniLMExtractor({str(exported[0])!r}, precision='int8')\n"
        "print(e.extract([UtteranceInput(text='hello there')]).shape)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(1, 384)" in r.stdout


def test_bad_directories(tmp_path, exported):
    with pytest.raises(InputError, match="no text_encoder.onnx"):
        OnnxMiniLMExtractor(tmp_path)
    with pytest.raises(InputError, match="unknown text encoder precision"):
        OnnxMiniLMExtractor(exported[0], precision="int4")
    # An ONNX file without the encoder metadata (not written by export.text_encoder).
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input_ids"], ["embedding"])],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("embedding", TensorProto.INT64, [None, None])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / ENCODER_FILE))
    (tmp_path / TOKENIZER_FILE).write_bytes((exported[0] / TOKENIZER_FILE).read_bytes())
    with pytest.raises(InputError, match="lacks the text encoder metadata"):
        OnnxMiniLMExtractor(tmp_path)
    (tmp_path / ENCODER_FILE).write_bytes(b"not an onnx file")
    with pytest.raises(InputError, match="onnxruntime cannot load it"):
        OnnxMiniLMExtractor(tmp_path)


def test_export_refuses_non_sentence_transformers_dir(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(InputError):
        export_text_encoder(tmp_path / "out", source=tmp_path / "src")
    assert not (tmp_path / "out" / ENCODER_FILE).exists()
