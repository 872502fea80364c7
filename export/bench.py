"""Benchmark of the exported artifacts on this machine (prints figures; not a test).

``python -m export.bench [--model NAME_OR_DIR] [--export DIR] [--data PATH] [--n 200] [--skip-text | --skip-graph] [--json]``

* text encoder latency per utterance (one utterance per call, as the live runtime embeds
  them), p50/p95 in ms, for sentence-transformers (torch) vs ONNX FP32 vs ONNX INT8, the model
  sizes, and the INT8 embeddings' cosine to FP32;
* with ``--model``: per-step latency p50/p95 of the graph model at window sizes 1, 8, 32 for
  torch / ONNX FP32 / ONNX INT8, file sizes, and the parity figures on the validation split
  (FP32 max |Δ prob|, INT8 label agreement, weighted-F1 drop).

Without ``--export``, ``--model`` benchmarks the model's own export (``<model dir>/export``, what the
runtime loads) when it holds the INT8 text encoder; otherwise the artifacts are exported into a
temporary directory first (the graph only: no whole-INT8-path line then).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from export.timing import timeit
from train.common import InputError, run_cli

log = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "iemocap" / "iemocap_trainval.pkl"
WINDOWS = (1, 8, 32)


def _items(data: Path | None, n: int) -> list:
    """Up to ``n`` real validation utterances with speaker and past turns (as the runtime passes
    them), else the parity sentences without context."""
    from export.exporter import parity_items
    from export.text_encoder import PARITY_TEXTS
    from train.features.base import UtteranceInput

    if data is not None and Path(data).is_file():
        from train.data import load_corpus

        items = parity_items(load_corpus(data).split("valid"), n)
        if items:
            return items
    return [UtteranceInput(text=t) for t in (PARITY_TEXTS * (n // len(PARITY_TEXTS) + 1))[:n]]


def _torch_size_mb(name: str) -> float:
    """Weights the torch extractor loads: the frozen encoder's (+ the LoRA adapter of a fine-tune)."""
    from export.exporter import FROZEN_TEXT
    from export.text_encoder import base_of
    from train.features.registry import resolve
    from train.features.text_context import get_base

    base = resolve(name).default_path() if name in FROZEN_TEXT else get_base(base_of(name)).path()
    size = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    if name not in FROZEN_TEXT:
        from train.features.registry import resolve
        from train.features.text_context import ADAPTER_WEIGHTS, resolve_encoder_dir

        size += (resolve_encoder_dir(resolve(name).shipped) / ADAPTER_WEIGHTS).stat().st_size
    return size / 1e6


def bench_text_encoder(export_dir: Path, items: Sequence, n: int, name: str = "minilm") -> dict:
    """Latency per utterance and size of text extractor ``name``: torch vs ONNX FP32 vs ONNX INT8.

    ``items``: UtteranceInput, one per call as the live runtime embeds them (with ``context``
    for a context encoder, whose input then holds the past turns too).
    """
    from train.features.registry import get_extractor
    from train.features.text_onnx import ENCODER_FILE, ENCODER_INT8_FILE

    extractors = {
        "torch": get_extractor(name, backend="torch", device="cpu"),
        "onnx": get_extractor(name, backend="onnx", path=export_dir, precision="fp32"),
        "onnx-int8": get_extractor(name, backend="onnx", path=export_dir, precision="int8"),
    }
    sizes = {
        "torch": _torch_size_mb(name),
        "onnx": (export_dir / ENCODER_FILE).stat().st_size / 1e6,
        "onnx-int8": (export_dir / ENCODER_INT8_FILE).stat().st_size / 1e6,
    }
    rows = {}
    for backend, ext in extractors.items():
        it = iter(range(10**9))
        stats = timeit(lambda: ext.extract([items[next(it) % len(items)]]), n)
        rows[backend] = {**stats, "size_mb": sizes[backend]}
    ref = extractors["torch"].extract(items)
    fp32 = extractors["onnx"].extract(items)
    int8 = extractors["onnx-int8"].extract(items)
    cos = (int8 * fp32).sum(1) / (np.linalg.norm(int8, axis=1) * np.linalg.norm(fp32, axis=1))
    parity = {
        "n_texts": len(items),
        "fp32_max_abs_diff_vs_torch": float(np.abs(fp32 - ref).max()),
        "int8_cosine_to_fp32_mean": float(cos.mean()),
        "int8_cosine_to_fp32_min": float(cos.min()),
    }
    return {"extractor": name, "identity": extractors["onnx"].identity.version, "latency": rows, "parity": parity}


def _print_text(res: dict) -> None:
    name = res["extractor"]
    what = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}.get(name) or (
        f"{name}, all-mpnet-base-v2 fine-tuned, the utterance alone" if name.startswith("mpnet-ft-") else f"{name}, fine-tuned MiniLM reading speaker + past turns")
    print(f"Text encoder ({what}), one utterance per call, this CPU:")
    print(f"  {'backend':<10} {'p50 ms':>8} {'p95 ms':>8} {'size MB':>8}")
    for name, r in res["latency"].items():
        print(f"  {name:<10} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['size_mb']:8.1f}")
    p = res["parity"]
    print(
        f"  parity on {p['n_texts']} texts: ONNX FP32 max |Δ| vs torch {p['fp32_max_abs_diff_vs_torch']:.2e}; "
        f"INT8 cosine to FP32 mean {p['int8_cosine_to_fp32_mean']:.4f}, min {p['int8_cosine_to_fp32_min']:.4f}"
    )


def per_utterance(text: dict, graph: dict) -> dict:
    """What the runtime's model stage costs per utterance: embed the transcript, then one graph
    step over the largest window; ONNX INT8 against ONNX FP32 (p50 sums, sizes, whole-path wF1)."""
    w = max(graph["latency"]["onnx"], key=int)
    out = {"window": int(w)}
    for name in ("torch", "onnx", "onnx-int8"):
        out[name] = {"p50_ms": text["latency"][name]["p50_ms"] + graph["latency"][name][w]["p50_ms"],
                     "size_mb": text["latency"][name]["size_mb"] + graph["size_mb"][name]}
    out["int8_speedup"] = out["onnx"]["p50_ms"] / out["onnx-int8"]["p50_ms"]
    out["int8_size_ratio"] = out["onnx-int8"]["size_mb"] / out["onnx"]["size_mb"]
    pipe = graph.get("int8_pipeline")
    out["int8_weighted_f1_drop"] = pipe["weighted_f1_drop"] if pipe else None
    return out


def _print_per_utterance(r: dict) -> None:
    print(f"Per utterance (text encoder + one graph step at W={r['window']}), p50 ms and size:")
    for name in ("torch", "onnx", "onnx-int8"):
        print(f"  {name:<10} {r[name]['p50_ms']:8.2f} ms {r[name]['size_mb']:8.1f} MB")
    drop = r["int8_weighted_f1_drop"]
    print(f"  INT8 vs FP32: {r['int8_speedup']:.2f}x faster, {r['int8_size_ratio']:.2f} of the size"
          + (f", wF1 drop {drop:+.2f} (whole INT8 path vs torch)" if drop is not None else "")
          + "  [goal: >= 1.5x, <= 0.33, <= 0.5]")


def own_export(model_dir: Path, need_text: bool) -> str | None:
    """The model's own export directory when it can be benchmarked as shipped (with its INT8 text
    encoder unless ``need_text`` is False, and a window as wide as the widest timed), else None."""
    from export.manifest import EXPORT_SUBDIR, is_export_dir, read_export_manifest
    from train.features.text_onnx import ENCODER_INT8_FILE

    own = model_dir / EXPORT_SUBDIR
    if not is_export_dir(own) or (need_text and not (own / ENCODER_INT8_FILE).is_file()):
        return None
    if read_export_manifest(own).window < max(WINDOWS):
        return None
    print(f"benchmarking the model's own export {own} (--export DIR for another)", file=sys.stderr)
    return str(own)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model name or directory: also benchmark the graph model")
    p.add_argument("--export", help="an export directory (default: the model's own export when it has the INT8 text "
                                    "encoder, else export into a temporary directory)")
    p.add_argument("--data", help="corpus for texts, calibration and parity (validation split; default: the model's data, else IEMOCAP)")
    p.add_argument("--n", type=int, default=200, help="timed calls per measurement")
    p.add_argument("--skip-text", action="store_true", help="skip the text encoder benchmark")
    p.add_argument("--skip-graph", action="store_true", help="with --model: benchmark only its text encoder")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = p.parse_args(argv)
    if args.skip_text and args.skip_graph:
        raise InputError("--skip-text and --skip-graph leave nothing to benchmark")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name = "minilm"
    if args.model:  # the model's own text encoder and data
        from train.model_dir import read_config, read_manifest, resolve_model_dir

        model_dir = resolve_model_dir(args.model)
        text = read_manifest(model_dir).extractors.get("text")
        name = text.name if text is not None else name
        args.data = args.data or read_config(model_dir).data.path
        if not args.export:
            args.export = own_export(model_dir, need_text=not args.skip_text)
    data = Path(args.data or DEFAULT_DATA)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        export_dir = Path(args.export) if args.export else Path(tmp)
        if not args.skip_text:
            from train.features.text_onnx import ENCODER_INT8_FILE

            if not (export_dir / ENCODER_INT8_FILE).is_file():
                if args.export:
                    raise InputError(f"no {ENCODER_INT8_FILE} here: export with --int8", path=str(export_dir))
                from export.exporter import write_text_encoder

                write_text_encoder(name, export_dir, int8=True)
            result["text_encoder"] = bench_text_encoder(export_dir, _items(data, max(args.n, 50)), args.n, name)
            if not args.json:
                _print_text(result["text_encoder"])
        result["export"] = args.export  # None: a temporary export
        if args.model and not args.skip_graph:
            from export.bench_graph import bench_graph, print_graph

            result["graph"] = bench_graph(args.model, export_dir if args.export else Path(tmp) / "graph", data, args.n, windows=WINDOWS)
            if not args.json:
                print_graph(result["graph"])
            if "text_encoder" in result:
                result["per_utterance"] = per_utterance(result["text_encoder"], result["graph"])
                if not args.json:
                    _print_per_utterance(result["per_utterance"])
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
