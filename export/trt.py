"""TensorRT engines built from the exported ONNX files, cached per GPU and TensorRT version.

TensorRT does not install from PyPI on every platform: it comes with NVIDIA JetPack on Jetson
boards and inside NVIDIA's containers (e.g. ``nvcr.io/nvidia/tensorrt``,
``nvcr.io/nvidia/pytorch``); on an x86 desktop with a CUDA driver ``pip install
'ariigcn[trt]'`` (``tensorrt`` + ``cuda-python``) works.

Engines (FP16, or INT8 from the QDQ ONNX, which carries its own scales) are built with one
optimisation profile that covers every window size 1..max, and stored as
``DIR/<onnx stem>.<precision>.<key>.engine`` with a ``.json`` sidecar. ``key`` hashes the GPU
name, the TensorRT version, the ONNX file's SHA-256, the precision and the profile, so an engine
is rebuilt only when one of those changes (TensorRT engines are not portable across GPUs or
TensorRT versions).

The same engines from the command line, for users who prefer ``trtexec``
(``W`` = max window, ``M`` = number of modalities, ``N = W*M`` nodes, ``R`` relations, ``d``
each modality's feature width; the input names are those in the manifest)::

    trtexec --onnx=graph.onnx --fp16 --saveEngine=graph.fp16.engine \\
        --minShapes=feat_text:1xd,present:1xM,adjacency:Rx(M)x(M) \\
        --optShapes=feat_text:Wxd,present:WxM,adjacency:RxNxN \\
        --maxShapes=feat_text:Wxd,present:WxM,adjacency:RxNxN
    trtexec --onnx=graph.int8.onnx --int8 --fp16 --saveEngine=graph.int8.engine <same shapes>

(``python -m export ... --trt`` prints the exact command for the exported model.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from train.common import BackendUnavailableError, InputError, file_sha256, write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

TENSORRT_MISSING = "TensorRT is not installed (Python module 'tensorrt' not found)"
TENSORRT_ADVICE = (
    "TensorRT comes with NVIDIA JetPack on Jetson and with NVIDIA's containers (nvcr.io/nvidia/tensorrt, "
    "nvcr.io/nvidia/pytorch); on an x86 machine with an NVIDIA GPU: pip install 'ariigcn[trt]'. "
    "Without it use --backend onnx or onnx-int8"
)

PRECISIONS = ("fp16", "int8")

# (min, opt, max) for each named dynamic dimension of the ONNX inputs, e.g.
# {"window": (1, 32, 32), "nodes": (1, 96, 96)}.
DimRanges = Mapping[str, tuple[int, int, int]]


def require_tensorrt():
    """Import and return the ``tensorrt`` module, or raise the InputError that says where it comes from."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(TENSORRT_MISSING, advice=TENSORRT_ADVICE) from None
    return tensorrt


def _cudart():
    """CUDA runtime bindings of ``cuda-python`` (module path changed in cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError:
            raise BackendUnavailableError("cuda-python is not installed (needed to run TensorRT engines)",
                                          advice="pip install cuda-python") from None
    return cudart


def _check(result):
    """cuda-python calls return (err, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:  # cudaError_t.cudaSuccess == 0
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


def gpu_name() -> str:
    """Name of CUDA device 0: cuda-python, else ``nvidia-smi``, else the Jetson device-tree model."""
    try:
        cudart = _cudart()
        props = _check(cudart.cudaGetDeviceProperties(0))
        name = props.name
        return (name.decode() if isinstance(name, bytes) else str(name)).strip("\x00 ").strip()
    except (InputError, RuntimeError):
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    model = Path("/proc/device-tree/model")  # Jetson: "NVIDIA Jetson Orin Nano Developer Kit"
    if model.is_file():
        return model.read_bytes().decode(errors="replace").strip("\x00 \n")
    raise BackendUnavailableError("no NVIDIA GPU found (cuda-python, nvidia-smi and /proc/device-tree/model all failed)")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; a change in any field means a rebuild."""

    gpu: str
    tensorrt: str
    onnx_sha256: str
    precision: str
    profile: dict[str, list[list[int]]]  # input name -> [min shape, opt shape, max shape]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def profile_shapes(onnx_path: str | Path, dims: DimRanges) -> dict[str, list[list[int]]]:
    """Min/opt/max shape of every graph input, replacing each named dynamic dim with ``dims``."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    shapes: dict[str, list[list[int]]] = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        per_level: list[list[int]] = [[], [], []]
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                for lvl in per_level:
                    lvl.append(int(d.dim_value))
            elif d.dim_param in dims:
                for lvl, v in zip(per_level, dims[d.dim_param]):
                    lvl.append(int(v))
            else:
                raise InputError(f"input {inp.name!r} has dynamic dimension {d.dim_param!r} without a range", path=str(onnx_path))
        shapes[inp.name] = per_level
    return shapes


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, precision: str, shapes: Mapping[str, list[list[int]]]) -> str:
    """The ``trtexec`` command line that builds the same engine."""
    def fmt(level: int) -> str:
        return ",".join(f"{name}:{'x'.join(map(str, s[level]))}" for name, s in shapes.items())

    flags = "--fp16" if precision == "fp16" else "--int8 --fp16"
    return (
        f"trtexec --onnx={onnx_path} {flags} --saveEngine={engine_path} "
        f"--minShapes={fmt(0)} --optShapes={fmt(1)} --maxShapes={fmt(2)}"
    )


def build_engine(
    onnx_path: str | Path,
    engine_dir: str | Path,
    *,
    precision: str,
    dims: DimRanges,
    workspace_mb: int = 1024,
    force: bool = False,
) -> Path:
    """Build (or reuse) a TensorRT engine for ``onnx_path``; returns the engine path.

    precision "fp16": FP16 kernels where faster. "int8": the ONNX must be the QDQ-quantised
    model; its Q/DQ scales set the INT8 layers (explicit quantisation, no TensorRT calibrator)
    and FP16 is allowed for the rest. ``dims`` gives (min, opt, max) for each named dynamic
    dimension; the profile covers that whole range. An engine with the same key is reused
    unless ``force``.
    """
    trt = require_tensorrt()
    if precision not in PRECISIONS:
        raise InputError(f"unknown TensorRT precision {precision!r}; expected one of {PRECISIONS}")
    onnx_path, engine_dir = Path(onnx_path), Path(engine_dir)
    if not onnx_path.is_file():
        raise InputError("ONNX file not found", path=str(onnx_path))
    shapes = profile_shapes(onnx_path, dims)
    key = EngineKey(gpu=gpu_name(), tensorrt=trt.__version__, onnx_sha256=file_sha256(onnx_path), precision=precision, profile=shapes)
    engine_path = engine_dir / f"{onnx_path.stem}.{precision}.{key.digest()}.engine"
    sidecar = engine_path.with_suffix(".json")
    if not force and engine_path.is_file() and sidecar.is_file():
        try:
            if json.loads(sidecar.read_text())["key"] == asdict(key):
                log.info("reusing TensorRT engine %s (%s, TensorRT %s)", engine_path.name, key.gpu, key.tensorrt)
                return engine_path
        except (ValueError, KeyError):
            pass  # unreadable sidecar: rebuild
    log.info("building TensorRT %s engine for %s on %s (TensorRT %s)", precision, onnx_path.name, key.gpu, key.tensorrt)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is the only mode from TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT cannot parse the ONNX model: {errors}", path=str(onnx_path))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name not in shapes:
            raise InputError(f"TensorRT network input {name!r} is not a graph input of the ONNX file", path=str(onnx_path))
        lo, opt, hi = shapes[name]
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"TensorRT failed to build a {precision} engine (see the TensorRT log above)", path=str(onnx_path))
    engine_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(engine_path, bytes(serialized))
    write_text_atomic(sidecar, json.dumps({"key": asdict(key), "trtexec": trtexec_command(onnx_path, engine_path, precision, shapes)}, indent=2))
    # Engines for an older GPU / TensorRT / ONNX of this same file and precision are stale now.
    for old in engine_dir.glob(f"{onnx_path.stem}.{precision}.*.engine"):
        if old != engine_path:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    return engine_path


class TrtRunner:
    """Runs a serialized engine on numpy inputs (TensorRT >= 8.6 name-based API + cuda-python).

    Device buffers are allocated once for the profile's maximum shapes and reused every call.
    """

    def __init__(self, engine_path: str | Path):
        trt = require_tensorrt()
        self._cudart = cudart = _cudart()
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise InputError("TensorRT engine not found", path=str(self.path))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise InputError("TensorRT cannot load this engine (built for another GPU or TensorRT version?)", path=str(self.path))
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.inputs, self.outputs = [], []
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
                max_shape = self.engine.get_tensor_profile_shape(name, 0)[2]
            else:
                self.outputs.append(name)
                max_shape = None
            self._buffers[name] = (0, 0)
            if max_shape is not None:
                self._ensure(name, int(np.prod(max_shape)) * dtype.itemsize)
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in self.inputs + self.outputs}

    def _ensure(self, name: str, nbytes: int) -> int:
        ptr, cap = self._buffers[name]
        if nbytes > cap:
            if ptr:
                _check(self._cudart.cudaFree(ptr))
            ptr = _check(self._cudart.cudaMalloc(max(nbytes, 1)))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:
            arr = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            ptr = self._ensure(name, arr.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self.stream))
            self.context.set_input_shape(name, tuple(arr.shape))
            self.context.set_tensor_address(name, ptr)
        shapes = {}
        for name in self.outputs:
            shapes[name] = tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(shapes[name])) * self._dtypes[name].itemsize
            self.context.set_tensor_address(name, self._ensure(name, nbytes))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError(f"TensorRT execution failed for {self.path.name}")
        out = {}
        for name in self.outputs:
            host = np.empty(shapes[name], dtype=self._dtypes[name])
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes, d2h, self.stream))
            out[name] = host
        _check(cudart.cudaStreamSynchronize(self.stream))
        return out

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            if ptr:
                self._cudart.cudaFree(ptr)
        self._buffers = {n: (0, 0) for n in self._buffers}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
