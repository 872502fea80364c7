"""``python -m export.evaluate --model NAME_OR_DIR --data PATH --split valid --backend onnx-int8 [--json]``

``python -m train.evaluate`` with every backend: train's torch and the exported ones
(:data:`export.backends.BACKENDS`: onnx, onnx-int8, onnx-fp16, trt, trt-int8). The scoring is
train's (:func:`train.evaluate.evaluate`); only the table of backends differs.
"""
from __future__ import annotations

from typing import Sequence

from train.common import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    from export.backends import BACKENDS
    from train.evaluate import main as evaluate_main

    return evaluate_main(argv, backends=BACKENDS, prog="python -m export.evaluate")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
