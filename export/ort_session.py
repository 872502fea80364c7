"""One place that opens onnxruntime sessions for every ONNX artifact the project runs.

Torch-free; used by the ONNX text extractor and the ONNX model backends.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from train.errors import BackendUnavailableError, InputError

# Order of preference when the caller names no providers. TensorRT's EP is left out on purpose:
# the project builds its own TensorRT engines (export.trt) and caches them.
_PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in _PREFERRED if p in available] or ["CPUExecutionProvider"]


def make_session(path: str | Path, *, providers: Sequence[str] | None = None, threads: int | None = None,
                 what: str | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path`` with full graph optimisation.

    ``threads``: intra-op threads (None: onnxruntime's default, one per physical core).
    ``what``: the artifact's name for error messages ("VAD model"). A missing or unreadable file
    is an :class:`InputError` naming it.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed", advice="pip install 'ariigcn[export]'") from None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what or 'ONNX file'} not found", path=str(path))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: onnxruntime's warnings about unused initializers are noise here
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), opts, providers=list(providers or default_providers()))
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        reason = f"cannot load the {what}" if what else "onnxruntime cannot load it"
        raise InputError(f"{reason}: {str(e).splitlines()[0]}", path=str(path)) from None
