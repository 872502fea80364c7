"""INT8 and FP16 variants of an exported ONNX model, with onnxruntime's own tooling.

* :func:`quantize_static_int8` — static quantisation in QDQ format (QuantizeLinear /
  DequantizeLinear pairs around each quantised op). Activations and weights are signed int8 and
  symmetric (zero point 0), weights per output channel, biases float: this is the
  explicit-quantisation form TensorRT consumes, and onnxruntime's recommended S8S8 QDQ setting. Activation ranges
  come from a :class:`~onnxruntime.quantization.CalibrationDataReader` (``calibration_reader``
  turns a list of input feeds into one).
* :func:`quantize_dynamic_int8` — weights int8 ahead of time, activation scales computed per
  call; no calibration data. The usual choice for transformer encoders on CPU.
* :func:`convert_fp16` — float16 weights and compute with float32 inputs/outputs kept, using
  onnxconverter-common when installed, else onnxruntime's copy of the same converter.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from train.common import InputError, atomic_file

log = logging.getLogger(__name__)

Feed = Mapping[str, np.ndarray]

REDUCE_RANGE_WHY = """Weights are quantised to 7 bits ([-63, 63]) by default: onnxruntime's integer
GEMM on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiplies u8 activations by s8
weights with VPMADDUBSW, which adds pairs of products in int16 and saturates once a pair
exceeds 32767 (255*127*2 = 64770 can). Per-channel scales put many weights near +-127, so the
sums saturate often. On such a CPU (an AVX2 AMD EPYC, onnxruntime 1.32) a 2-layer MLP's INT8
probabilities were off by up to 0.098 (dynamic) / 0.085 (static QDQ) with 8-bit weights, and
0.009 / 0.033 with 7-bit ones; the static model's float emulation (no integer kernels) is off by
0.034, so the rest was saturation. The small synthetic graph model of tests/test_export_model.py
agreed with torch on 94.5% (static) / 98.2% (dynamic) of labels with 8 bits, 99.5% / 100% with 7.
CPUs with VNNI, ARM and TensorRT do not saturate; there 7 bits cost one bit of weight precision."""
REDUCE_RANGE = True
WEIGHT_BITS = 7 if REDUCE_RANGE else 8  # recorded in the export manifest


def calibration_reader(feeds: Iterable[Feed]):
    """A CalibrationDataReader over ready input feeds (one dict of input name -> array per call)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _FeedReader(CalibrationDataReader):
        def __init__(self, items: list[dict[str, np.ndarray]]):
            self.items = items
            self._it = iter(items)

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter(self.items)

        def __len__(self):
            return len(self.items)

    items = [dict(f) for f in feeds]
    if not items:
        raise InputError("no calibration samples: INT8 calibration needs at least one input")
    return _FeedReader(items)


def _preprocess(src: Path, dst: Path) -> None:
    """Shape inference + graph optimisation that onnxruntime recommends before quantising."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src).resolve(), Path(dst).resolve()
    # onnxruntime's symbolic shape inference saves "sym_shape_infer_temp.onnx" plus a uuid-named
    # external-data file into the current directory: run it from a scratch directory instead.
    with tempfile.TemporaryDirectory(prefix="shape-infer-") as scratch:
        cwd = os.getcwd()
        os.chdir(scratch)
        try:
            try:
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
            except Exception as e:  # symbolic inference gives up on some traced graphs; ONNX's own suffices
                # Harmless: said only under --debug (setup once printed it 4 times, alarmingly).
                log.debug("symbolic shape inference does not cover this graph (%s); ONNX shape inference is enough", e)
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        finally:
            os.chdir(cwd)


def quantize_static_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    reader,
    *,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    op_types: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] | None = None,
    keep_float: Sequence[str] = (),
    weights_only: bool = True,
    reduce_range: bool = REDUCE_RANGE,
) -> Path:
    """Static QDQ INT8 copy of ``fp32_path`` calibrated with ``reader``; returns ``out_path``.

    ``calibrate_method``: "minmax" (default), "entropy" or "percentile" (the histogram methods
    need every calibration sample to have the same shapes).
    ``op_types`` default: every op onnxruntime can quantise.
    ``keep_float``: initializer-name prefixes; nodes reading such a weight stay float (e.g. a
    classifier head, where int8 rounding flips near-tie labels).
    ``reduce_range``: 7-bit weights (see :data:`REDUCE_RANGE_WHY`).
    ``weights_only``: quantise only products with a constant weight; products of two activations
    (the GCN's ``Â_r @ X``, with the 0..1 normalised adjacency) stay float: they hold no weights to
    shrink, and quantising both operands cost label agreement (IEMOCAP valid 98.76% -> 98.92%
    with them float; MELD 99.64% -> 99.91%).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise InputError(f"unknown calibration method {calibrate_method!r}; expected one of {sorted(methods)}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    with tempfile.TemporaryDirectory(prefix="calib-") as tmpdir, atomic_file(out_path) as tmp:
        pre = Path(tmpdir) / "pre.onnx"
        _preprocess(fp32_path, pre)
        exclude = list(nodes_to_exclude or []) + _nodes_reading(pre, keep_float) + (_activation_products(pre) if weights_only else [])
        log.info("static INT8 (QDQ, %s, per_channel=%s, reduce_range=%s, %d nodes kept float) %s -> %s", calibrate_method, per_channel, reduce_range, len(exclude), fp32_path.name, out_path.name)
        quantize_static(
            str(pre),
            str(tmp),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude or None,
            calibrate_method=methods[calibrate_method],
            # Symmetric ranges (zero point 0) are what TensorRT's explicit INT8 expects, and it takes
            # biases in float (no int32 DequantizeLinear); on onnxruntime CPU float biases measured
            # the same speed and label agreement.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
    return out_path


def _nodes_reading(path: Path, prefixes: Sequence[str]) -> list[str]:
    """Names of the nodes of ``path`` that take an initializer whose name starts with a prefix."""
    if not prefixes:
        return []
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer if i.name.startswith(tuple(prefixes))}
    return [n.name for n in model.graph.node if inits.intersection(n.input)]


def _activation_products(path: Path) -> list[str]:
    """MatMul / Gemm nodes of ``path`` with no constant operand (activation x activation)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and not inits.intersection(n.input)]


def _batched_weight_matmuls(path: Path) -> list[str]:
    """MatMul nodes whose constant B has rank > 2."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1 and ranks.get(n.input[1], 0) > 2]


def quantize_dynamic_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    per_channel: bool = True,
    op_types: Sequence[str] = ("MatMul", "Gemm"),
    reduce_range: bool = REDUCE_RANGE,
) -> Path:
    """Dynamic INT8 copy of ``fp32_path``; returns ``out_path``. ``reduce_range``: 7-bit weights
    (see :data:`REDUCE_RANGE_WHY`).

    Per-channel weight scales matter: on all-MiniLM-L6-v2 per-tensor scales give a mean cosine
    of ~0.90 to the FP32 embedding, per-channel ~0.98. Add "Gather" to ``op_types`` to store
    embedding tables as int8 too (MiniLM: 90 MB -> 23 MB).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    with tempfile.TemporaryDirectory(prefix="dynq-") as tmpdir, atomic_file(out_path) as tmp:
        pre = Path(tmpdir) / "pre.onnx"
        _preprocess(fp32_path, pre)
        # onnxruntime's integer MatMul kernels take per-channel scales only for 2-D weights; a
        # batched weight (e.g. the GCN's (R, H, H) relation weights) stays float.
        exclude = _batched_weight_matmuls(pre) if per_channel else []
        log.info("dynamic INT8 (%s, per_channel=%s, reduce_range=%s, %d nodes kept float) %s -> %s", "/".join(op_types), per_channel, reduce_range, len(exclude), fp32_path.name, out_path.name)
        quantize_dynamic(str(pre), str(tmp), op_types_to_quantize=list(op_types), per_channel=per_channel, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude or None)
    return out_path


def quantize_blockwise_int8(fp32_path: str | Path, out_path: str | Path, *, block_size: int = 32) -> Path:
    """INT8 copy of a transformer encoder whose activations defeat per-tensor dynamic INT8.

    MatMul weights become symmetric 8-bit blocks of ``block_size`` along the input dimension
    (onnxruntime ``MatMulNBits``, accuracy level 4: activations are quantised per block at run
    time, so one token's outlier dimensions do not crush the rest); embedding tables become int8
    (``Gather``). all-mpnet-base-v2: dynamic per-tensor INT8 gives a mean cosine of 0.07 to FP32
    (massive activations after layers 0-1), this 0.999 at 120 of 436 MB.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits
    except ImportError as e:  # onnxruntime's quantizer imports onnx_ir
        raise InputError(f"blockwise INT8 needs {e.name}: pip install 'ariigcn[export]'") from None
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    with tempfile.TemporaryDirectory(prefix="blockq-") as tmpdir, atomic_file(out_path) as tmp:
        tables = Path(tmpdir) / "tables.onnx"
        quantize_dynamic(str(fp32_path), str(tables), op_types_to_quantize=["Gather"], per_channel=False, weight_type=QuantType.QInt8)
        cfg = nbits.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4, bits=8)
        q = nbits.MatMulNBitsQuantizer(onnx.load(str(tables)), algo_config=cfg)
        q.process()
        log.info("blockwise INT8 (MatMulNBits 8-bit, block %d, accuracy level 4; int8 Gather) %s -> %s", block_size, fp32_path.name, out_path.name)
        q.model.save_model_to_file(str(tmp), use_external_data_format=False)
    return out_path


def _float16_converter():
    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    return convert_float_to_float16


def convert_fp16(fp32_path: str | Path, out_path: str | Path, *, op_block_list: Sequence[str] | None = None) -> Path:
    """Float16 copy of ``fp32_path`` with float32 inputs and outputs; returns ``out_path``.

    Ops in ``op_block_list`` stay float32 (the converter's default list keeps ops without
    float16 kernels). Mainly for GPUs (TensorRT, CUDA EP); CPUs run most float16 ops slower.
    """
    import onnx

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    model = onnx.load(str(fp32_path))
    kwargs = {"keep_io_types": True}
    if op_block_list is not None:
        kwargs["op_block_list"] = list(op_block_list)
    fp16 = _float16_converter()(model, **kwargs)
    with atomic_file(out_path) as tmp:
        onnx.save(fp16, str(tmp))
    log.info("FP16 %s -> %s", fp32_path.name, out_path.name)
    return out_path


SMOOTH_ALPHA = 0.6  # chosen on IEMOCAP validation utterances (mean / min cosine to FP32), see smooth_int8's docstring


def _weight_matmuls(model) -> list:
    """MatMul nodes of ``model`` (an onnx.ModelProto) whose B is a 2-D initializer."""
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and ranks.get(n.input[1]) == 2]


def _channel_absmax(model, tensors: Sequence[str], feeds: Iterable[Feed]) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of each of ``tensors`` over the calibration ``feeds``."""
    feeds = list(feeds)
    if not feeds:
        raise InputError("no calibration samples: smoothed INT8 needs at least one input")
    if not tensors:
        return {}
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the tensors must survive as named
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="smooth-calib-") as tmp:
        path = Path(tmp) / "probe.onnx"  # external data: the model may exceed protobuf's 2 GB in memory
        onnx.save(probe, str(path), save_as_external_data=True, location="probe.data")
        del probe
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        amax: dict[str, np.ndarray] = {}
        for feed in feeds:
            for t, x in zip(tensors, session.run(list(tensors), dict(feed))):
                m = np.abs(x).reshape(-1, x.shape[-1]).max(0)
                amax[t] = np.maximum(amax[t], m) if t in amax else m
    return amax


def smooth_int8(fp32_path: str | Path, out_path: str | Path, feeds: Iterable[Feed], *, alpha: float = SMOOTH_ALPHA,
                block_size: int = 32, reduce_range: bool = REDUCE_RANGE) -> Path:
    """INT8 copy of a transformer encoder with outlier activation channels, fast on CPUs without VNNI.

    1. **Smoothing** (SmoothQuant, Xiao et al. 2023): each input channel j of a weight MatMul is
       divided by ``s_j = max|x_j|^alpha / max|W_j|^(1-alpha)`` (a ``Mul`` node; MatMuls sharing an
       input share it) and the weight's row j multiplied by it: the same product in exact arithmetic,
       but the activation's outlier channels shrink so one per-tensor scale no longer crushes the
       rest. ``max|x_j|`` comes from ``feeds`` (calibration inputs). onnxruntime offers this only in
       static quantisation through neural-compressor's ONNX adaptor, hence this small pass.
    2. **Dynamic INT8** (``MatMulInteger``, per-channel 7-bit weights, ``reduce_range``) on the
       smoothed MatMuls whose output is at least as wide as their input (attention q/k/v/o and
       the feed-forward up-projection) and on the embedding tables (``Gather``).
    3. **8-bit blocks** (``MatMulNBits``, :func:`quantize_blockwise_int8`'s setting) on the
       MatMuls that narrow (the feed-forward down-projection): their input, the GELU output,
       carries token-and-channel outliers that smoothing does not tame (all-mpnet-base-v2:
       smoothing everything gave cosine 0.972 mean, 0.90 min on validation utterances).
    Products of two activations (attention scores) stay float.

    all-mpnet-base-v2 (alpha 0.6, 16 calibration sentences), on 100 IEMOCAP validation
    utterances, one per call: mean cosine to FP32 0.997, min 0.992; 114 of 436 MB; p50 0.56-0.75x
    FP32's time per utterance on an AVX2 CPU without VNNI (blockwise alone: 0.87-1.0x).
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits
    except ImportError as e:  # onnxruntime's quantizer imports onnx_ir
        raise InputError(f"smoothed INT8 needs {e.name}: pip install 'ariigcn[export]'") from None
    if not 0.0 < alpha < 1.0:
        raise InputError(f"smoothing alpha must be in (0, 1), got {alpha}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    model = onnx.load(str(fp32_path))
    weights = {i.name: i for i in model.graph.initializer}
    wide = [n for n in _weight_matmuls(model) if weights[n.input[1]].dims[0] <= weights[n.input[1]].dims[1]]
    groups: dict[str, list] = {}
    for n in wide:
        groups.setdefault(n.input[0], []).append(n)
    amax = _channel_absmax(model, list(groups), feeds)
    smooth_nodes = {}
    for x, users in groups.items():
        ws = [numpy_helper.to_array(weights[n.input[1]]) for n in users]
        wmax = np.max([np.abs(w).max(1) for w in ws], axis=0)  # (in,)
        s = (np.maximum(amax[x], 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)).astype(np.float32)
        for n, w in zip(users, ws):
            weights[n.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), n.input[1]))
            n.input[0] = x + "/smoothed"
        model.graph.initializer.append(numpy_helper.from_array(1.0 / s, x + "/smooth_scale"))
        smooth_nodes[x] = helper.make_node("Mul", [x, x + "/smooth_scale"], [x + "/smoothed"], name=x + "/smooth")
    # each Mul right after its input's producer (graph inputs: first), so the order stays topological
    nodes = [smooth_nodes[i.name] for i in model.graph.input if i.name in smooth_nodes]
    for n in model.graph.node:
        nodes.append(n)
        nodes.extend(smooth_nodes[o] for o in n.output if o in smooth_nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    narrow = {n.name for n in _weight_matmuls(model)} - {n.name for n in wide}
    with tempfile.TemporaryDirectory(prefix="smoothq-") as tmpdir, atomic_file(out_path) as tmp:
        smoothed, pre, dyn = (Path(tmpdir) / f for f in ("smoothed.onnx", "pre.onnx", "dyn.onnx"))
        onnx.save(model, str(smoothed))  # inline: onnxruntime's pre-processing moves it to its own scratch folder
        del model
        _preprocess(smoothed, pre)
        exclude = _activation_products(pre) + [n.name for n in onnx.load(str(pre), load_external_data=False).graph.node if n.name in narrow]
        quantize_dynamic(str(pre), str(dyn), op_types_to_quantize=["MatMul", "Gather"], per_channel=True, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
        cfg = nbits.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4, bits=8)
        q = nbits.MatMulNBitsQuantizer(onnx.load(str(dyn)), algo_config=cfg)
        q.process()
        log.info("smoothed INT8 (alpha %.2f; %d MatMuls dynamic per channel, reduce_range=%s; %d in 8-bit blocks of %d; int8 Gather) %s -> %s",
                 alpha, len(wide), reduce_range, len(narrow), block_size, fp32_path.name, out_path.name)
        q.model.save_model_to_file(str(tmp), use_external_data_format=False)
    return out_path
