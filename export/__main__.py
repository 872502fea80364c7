"""``python -m export --model NAME_OR_DIR [--out DIR] [--int8] [--fp16] [--trt] [--calib N]``

Writes the graph model's per-step ONNX (+ INT8 / FP16 variants), the text encoder's ONNX with
its tokenizer, TensorRT engines on request, and ``manifest.json`` (files and hashes,
precisions, opset, labels, feature extractors, parity figures, model version). Default DIR:
MODEL/export, where ``--backend onnx|onnx-int8|trt`` of ``export.evaluate`` and the runtime look.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Sequence

from train.common import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    from export.exporter import DEFAULT_WINDOW, ExportOptions, export_model

    p = argparse.ArgumentParser(prog="python -m export", description="Export a trained model for the runtime: ONNX, INT8/FP16, TensorRT.")
    p.add_argument("--model", required=True, help="model directory, or model name in the model search path ($ARIIGCN_MODEL_PATH)")
    p.add_argument("--out", help="output directory (default: MODEL/export)")
    p.add_argument("--int8", action="store_true", help="also write INT8 models (graph: --int8-method; text encoder: dynamic)")
    p.add_argument("--int8-method", choices=("static", "dynamic"), default="dynamic",
                   help="graph model INT8: dynamic (default, for onnxruntime on CPU) or static QDQ calibrated on --calib "
                        "training conversations (needs the data; TensorRT builds its INT8 engine from it)")
    p.add_argument("--calib", type=int, metavar="N", help="training conversations for static INT8 calibration (default: all)")
    p.add_argument("--calibrate-method", choices=("minmax", "entropy", "percentile"), default="percentile",
                   help="static INT8 activation ranges (default percentile: the 99.999th percentile of |x|)")
    p.add_argument("--fp16", action="store_true", help="also write an FP16 graph model")
    p.add_argument("--trt", action="store_true", help="build TensorRT engines (needs TensorRT: JetPack or NVIDIA containers)")
    p.add_argument("--window", type=int, help=f"largest window of utterances (default max({DEFAULT_WINDOW}, gcn_layers*past+1))")
    p.add_argument("--data", help="corpus for calibration and parity (default: the model config's data.path)")
    p.add_argument("--cache-dir", help="feature cache directory (default: the model config's data.cache_dir)")
    p.add_argument("--no-text", action="store_true", help="skip the text encoder")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check")
    p.add_argument("--parity-dialogues", type=int, default=0, metavar="N",
                   help="parity on the first N validation conversations only (default 0: all)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON at the end")
    args = p.parse_args(argv)
    if args.parity_dialogues < 0:
        p.error(f"--parity-dialogues must be >= 0 (0: all), got {args.parity_dialogues}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("export", "train"):  # our progress at INFO; onnxruntime's per-tensor quantisation chatter stays hidden
        logging.getLogger(name).setLevel(logging.INFO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    opts = ExportOptions(
        int8=args.int8, int8_method=args.int8_method, calib=args.calib, calibrate_method=args.calibrate_method,
        fp16=args.fp16, trt=args.trt, window=args.window, text=not args.no_text, parity=not args.no_parity,
        parity_dialogues=args.parity_dialogues, opset=args.opset, data=args.data, cache_dir=args.cache_dir,
    )
    em = export_model(args.model, args.out, opts)
    if args.json:
        print(json.dumps(em.to_dict(), indent=2))
    else:
        total = sum(e.bytes for e in em.files.values()) / 1e6
        print(f"exported {len(em.files)} files ({total:.1f} MB), model version {em.model_version}: " + ", ".join(sorted(em.files)))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
