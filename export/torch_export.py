"""The one call into ``torch.onnx.export`` used by every exporter here.

Uses the TorchScript-based exporter (``dynamo=False``): it needs no onnxscript, handles BERT and
the dense graph model, and honours ``dynamic_axes``. Its trace warnings about Python booleans
in transformers' mask code are expected (the exported encoders are checked for parity by
tests), so they are silenced here rather than shown to every user.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

from train.common import atomic_file


def export_onnx(
    module,
    args: tuple,
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``module(*args)`` to ``path`` atomically, checked by ``onnx.checker``; returns ``path``."""
    import onnx
    import torch

    path = Path(path)
    with atomic_file(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")
        warnings.filterwarnings("ignore", message=".*The feature will be removed.*", category=DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            args,
            str(tmp),
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
            opset_version=opset,
            do_constant_folding=True,
        )
        model = onnx.load(str(tmp))
        if metadata:
            existing = {p.key: p for p in model.metadata_props}
            for key, value in metadata.items():
                prop = existing.get(key) or model.metadata_props.add()
                prop.key, prop.value = key, str(value)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return path
