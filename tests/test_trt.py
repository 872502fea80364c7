"""TensorRT engine builder: the no-TensorRT error always; the real builder where tensorrt imports."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from export import trt as trt_mod
from train.common import InputError


def _tiny_onnx(path, d_in=8, d_out=3):
    """y = x @ W + b with a dynamic 'window' axis: (window, d_in) -> (window, d_out)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((d_in, d_out)).astype(np.float32)
    b = rng.standard_normal(d_out).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["window", d_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["window", d_out])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return w, b


def test_missing_tensorrt_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(InputError) as e:
        trt_mod.require_tensorrt()
    msg = str(e.value)
    assert "TensorRT is not installed" in msg and "JetPack" in msg and "nvcr.io/nvidia" in msg and "ariigcn[trt]" in msg
    assert "\n" not in msg


def test_build_without_tensorrt_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    _tiny_onnx(tmp_path / "tiny.onnx")
    with pytest.raises(InputError, match="JetPack"):
        trt_mod.build_engine(tmp_path / "tiny.onnx", tmp_path / "engines", precision="fp16", dims={"window": (1, 4, 8)})
    assert not (tmp_path / "engines").exists()


def test_profile_shapes_and_trtexec_command(tmp_path):
    _tiny_onnx(tmp_path / "tiny.onnx")
    shapes = trt_mod.profile_shapes(tmp_path / "tiny.onnx", {"window": (1, 16, 32)})
    assert shapes == {"x": [[1, 8], [16, 8], [32, 8]]}
    cmd = trt_mod.trtexec_command("tiny.onnx", "tiny.engine", "int8", shapes)
    assert cmd == (
        "trtexec --onnx=tiny.onnx --int8 --fp16 --saveEngine=tiny.engine "
        "--minShapes=x:1x8 --optShapes=x:16x8 --maxShapes=x:32x8"
    )
    with pytest.raises(InputError, match="dynamic dimension 'window' without a range"):
        trt_mod.profile_shapes(tmp_path / "tiny.onnx", {})


def test_engine_key_changes_with_gpu_and_version():
    base = dict(gpu="NVIDIA Orin", tensorrt="10.3.0", onnx_sha256="ab" * 32, precision="fp16", profile={"x": [[1, 8], [8, 8], [8, 8]]})
    k = trt_mod.EngineKey(**base).digest()
    assert trt_mod.EngineKey(**base).digest() == k
    assert trt_mod.EngineKey(**{**base, "gpu": "NVIDIA H100"}).digest() != k
    assert trt_mod.EngineKey(**{**base, "tensorrt": "10.4.0"}).digest() != k
    assert trt_mod.EngineKey(**{**base, "precision": "int8"}).digest() != k


def test_builder_builds_caches_and_runs(tmp_path):
    """Real TensorRT (only where it imports and a GPU is present)."""
    pytest.importorskip("tensorrt")
    try:
        trt_mod.gpu_name()
    except InputError as e:
        pytest.skip(str(e))
    w, b = _tiny_onnx(tmp_path / "tiny.onnx")
    dims = {"window": (1, 4, 8)}
    engine = trt_mod.build_engine(tmp_path / "tiny.onnx", tmp_path / "engines", precision="fp16", dims=dims)
    assert engine.is_file() and engine.with_suffix(".json").is_file()
    mtime = engine.stat().st_mtime_ns
    again = trt_mod.build_engine(tmp_path / "tiny.onnx", tmp_path / "engines", precision="fp16", dims=dims)
    assert again == engine and engine.stat().st_mtime_ns == mtime  # cached, not rebuilt
    runner = trt_mod.TrtRunner(engine)
    for n in (1, 5, 8):  # every window size of the profile
        x = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
        y = runner({"x": x})["y"]
        np.testing.assert_allclose(y, x @ w + b, atol=2e-2, rtol=2e-2)  # FP16
    runner.close()
