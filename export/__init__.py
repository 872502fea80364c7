"""Deployment artifacts: ONNX exports, INT8/FP16 variants, TensorRT engines, inference backends.

``python -m export --model NAME_OR_DIR --out DIR [--int8] [--fp16] [--trt] [--calib N]`` writes
the graph model's per-step ONNX, the text encoder's ONNX + tokenizer and a manifest to DIR.
Importing this package is cheap and torch-free: the live runtime uses :mod:`export.backends`
and :func:`train.common.make_session` without torch; only the exporters import torch, lazily.
"""
