"""Graph-model part of ``python -m export.bench``: per-step latency and parity per backend.

A *step* is what the live runtime does per utterance: build the window's graph from features
and speakers and run the model on it. For torch that is :func:`train.batch.collate` +
``predict_proba``; for ONNX :func:`export.graph_inputs.step_feeds` + onnxruntime. Windows are
cut from real validation conversations (cycled), so features and speakers are realistic.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from export.graph_inputs import step_feeds
from train.common import InputError


def _window_dialogues(dialogues, modalities, w: int, count: int = 64):
    """Up to ``count`` windows of exactly ``w`` consecutive utterances (dialogues shorter are tiled)."""
    from train.data.corpus import Dialogue

    out = []
    for d in dialogues:
        n = len(d)
        idx = np.arange(max(0, n - w), n) if n >= w else np.resize(np.arange(n), w)
        out.append(Dialogue(id=f"{d.id}[{w}]", split=d.split, speakers=[d.speakers[i] for i in idx], labels=np.asarray(d.labels)[idx],
                            features={m: np.asarray(d.features[m])[idx] for m in modalities}))
        if len(out) >= count:
            break
    return out


def bench_graph(model: str, export_dir: Path, data: Path | None, n: int, windows: Sequence[int] = (1, 8, 32)) -> dict:
    """Export (unless ``export_dir`` already holds an export of ``model``) and time every backend."""
    import torch

    from export.backends import OnnxBackend, OnnxInt8Backend
    from export.timing import timeit
    from export.exporter import ExportOptions, export_model
    from export.manifest import check_export, is_export_dir
    from train.batch import collate
    from train.model_dir import WEIGHTS_FILE, load_model, resolve_model_dir

    model_dir = resolve_model_dir(model)
    if not is_export_dir(export_dir):
        export_model(model_dir, export_dir, ExportOptions(int8=True, window=max(windows), data=str(data) if data else None, text=False))
    em = check_export(export_dir, model_dir=model_dir)
    if em.window < max(windows):
        raise InputError(f"the export's window is {em.window}; re-export with --window {max(windows)}", path=str(export_dir))
    net, manifest, cfg = load_model(model_dir, "cpu")
    onnx_be, int8_be = OnnxBackend(model_dir, export_dir=export_dir), OnnxInt8Backend(model_dir, export_dir=export_dir)
    int8_method = em.files[int8_be.file].details.get("method", "?")
    other_method = "dynamic" if int8_method == "static-qdq" else "static"

    from export.exporter import load_export_data, synthetic_dialogues
    from export.parity import graph_parity

    # training conversations too when the comparison INT8 is static (it calibrates on them)
    load_opts = ExportOptions(data=str(data) if data else None, int8=other_method == "static", int8_method="static")
    corpus = load_export_data(model_dir, manifest, cfg, load_opts, need=False)
    source = corpus.split("valid") if corpus is not None else synthetic_dialogues(onnx_be.spec, manifest.labels)
    # The other INT8 method, for comparison, in a scratch copy of the export.
    scratch = tempfile.TemporaryDirectory(prefix="bench-int8-")
    other_be = _other_int8(export_dir, Path(scratch.name), em, other_method, corpus, onnx_be.spec)
    other_name = f"int8-{other_method[:3]}"
    latency: dict[str, dict[int, dict]] = {"torch": {}, "onnx": {}, "onnx-int8": {}, other_name: {}}
    model_only: dict[str, dict[int, dict]] = {k: {} for k in latency}
    for w in windows:
        wins = _window_dialogues(source, manifest.modalities, w)
        it = iter(range(10**9))

        def pick():
            return wins[next(it) % len(wins)]

        def torch_step():
            with torch.inference_mode():
                return net.predict_proba(collate([pick()], cfg.data.modalities, cfg.graph))[-1]

        def onnx_step(be):
            d = pick()
            return be.step(d.features, d.speaker_ids())[-1]

        latency["torch"][w] = timeit(torch_step, n)
        latency["onnx"][w] = timeit(lambda: onnx_step(onnx_be), n)
        latency["onnx-int8"][w] = timeit(lambda: onnx_step(int8_be), n)
        latency[other_name][w] = timeit(lambda: onnx_step(other_be), n)
        # Model only: inputs prepared once (torch: GraphBatch; ONNX: feeds), then the forward alone.
        d0 = wins[0]
        batch = collate([d0], cfg.data.modalities, cfg.graph)
        feeds = step_feeds(onnx_be.spec, d0.features, d0.speaker_ids())
        with torch.inference_mode():
            model_only["torch"][w] = timeit(lambda: net.predict_proba(batch), n)
        for name, be in (("onnx", onnx_be), ("onnx-int8", int8_be), (other_name, other_be)):
            model_only[name][w] = timeit(lambda: be.session.run(None, feeds), n)
    sizes = {
        "torch": (model_dir / WEIGHTS_FILE).stat().st_size / 1e6,
        "onnx": em.files[onnx_be.file].bytes / 1e6,
        "onnx-int8": em.files[int8_be.file].bytes / 1e6,
        other_name: (Path(scratch.name) / other_be.file).stat().st_size / 1e6,
    }
    parity = dict(em.parity.get("graph", {}))
    if "onnx" in parity:  # same dialogues as the export's parity check
        parity[other_name] = graph_parity(net, cfg, source, {other_name: other_be}, manifest.labels)[other_name]
    scratch.cleanup()
    pipeline = _int8_pipeline(net, cfg, manifest, export_dir, source, int8_be) if corpus is not None else None
    return {"model": str(model_dir), "window": em.window, "latency": latency, "model_only": model_only, "size_mb": sizes,
            "parity": parity, "parity_split": em.parity.get("split"), "int8": {"onnx-int8": int8_method, other_name: other_method},
            "int8_pipeline": pipeline}


def _int8_pipeline(net, cfg, manifest, export_dir: Path, dialogues, int8_be) -> dict | None:
    """The whole INT8 path (INT8 text encoder features -> INT8 graph) against torch on FP32
    features: what a CPU kiosk running ``--backend onnx-int8`` gives up."""
    import copy

    from export.manifest import TEXT_ENCODER
    from export.parity import compare
    from train.backends import predict_dialogues
    from export.exporter import utterance_inputs

    if "text" not in manifest.dims or int8_be.export.file(TEXT_ENCODER, "int8") is None or not all(d.texts for d in dialogues):
        return None
    encoder = int8_be.text_extractor("int8")
    reference = predict_dialogues(net, dialogues, cfg, "cpu")
    requantised = []
    for d in dialogues:
        d2 = copy.copy(d)
        # one utterance per call, as the live runtime embeds: dynamic INT8 scales its activations per
        # call, so a padded batch gives other features (MELD, mpnet-ft-meld smoothed on the built-in
        # sentences: wF1 drop 0.74 batched by dialogue, 0.32 in batches of 32, 0.84 one by one);
        # with past turns, for context encoders
        d2.features = dict(d.features, text=np.stack([encoder.extract([item])[0] for item in utterance_inputs(d)]))
        requantised.append(d2)
    return compare(reference, int8_be.predict(requantised), dialogues, manifest.labels)


def _other_int8(export_dir: Path, scratch: Path, em, method: str, corpus, spec):
    """An INT8 backend quantised with ``method`` in a scratch export holding only the graph."""
    import shutil

    from export import manifest as mf
    from export.backends import OnnxInt8Backend
    from export.exporter import GRAPH_FILE, GRAPH_INT8_FILE, ExportOptions, quantize_graph_static
    from export.quantize import quantize_dynamic_int8

    shutil.copyfile(export_dir / GRAPH_FILE, scratch / GRAPH_FILE)
    if method == "dynamic":
        quantize_dynamic_int8(scratch / GRAPH_FILE, scratch / GRAPH_INT8_FILE)
    else:
        if corpus is None:
            raise InputError("static INT8 needs data to calibrate on (--data)")
        defaults = ExportOptions()
        quantize_graph_static(scratch / GRAPH_FILE, scratch / GRAPH_INT8_FILE, spec, corpus.split("train")[: defaults.calib], defaults.calibrate_method)
    copy = mf.ExportManifest(model=em.model, model_version=em.model_version, opset=em.opset, window=em.window, graph_io=em.graph_io)
    copy.add_file(scratch, GRAPH_FILE, mf.GRAPH, "fp32")
    copy.add_file(scratch, GRAPH_INT8_FILE, mf.GRAPH, "int8", method=method)
    copy.write(scratch)
    return OnnxInt8Backend(export_dir=scratch)


def print_graph(res: dict) -> None:
    from export.parity import format_parity

    print(f"Graph model {res['model']} — per-step latency (window graph build + model), this CPU;")
    print(f"  onnx-int8 = the export's INT8 ({res['int8']['onnx-int8']}); " + ", ".join(f"{k} = {v} INT8 made for comparison" for k, v in res["int8"].items() if k != "onnx-int8"))
    wins = list(next(iter(res["latency"].values())))
    print(f"  {'backend':<10} " + " ".join(f"{'W=' + str(w) + ' p50/p95 ms':>20}" for w in wins) + f" {'size MB':>8}")
    for name, per in res["latency"].items():
        cells = " ".join(f"{per[w]['p50_ms']:9.3f}/{per[w]['p95_ms']:<9.3f} " for w in wins)
        print(f"  {name:<10} {cells} {res['size_mb'][name]:8.3f}")
    fp32 = res["latency"]["onnx"]
    for name in [k for k in res["latency"] if k not in ("torch", "onnx")]:
        per = res["latency"][name]
        print(f"  {name} speed-up over ONNX FP32 (p50): " + ", ".join(f"W={w}: {fp32[w]['p50_ms'] / per[w]['p50_ms']:.2f}x" for w in wins)
              + f"; size ratio {res['size_mb'][name] / res['size_mb']['onnx']:.2f}")
    print("  model only (inputs prepared beforehand), p50 ms: " + "; ".join(
        f"{name} " + "/".join(f"{per[w]['p50_ms']:.3f}" for w in wins) for name, per in res["model_only"].items()) + f"  (W={'/'.join(map(str, wins))})")
    if res["parity"]:
        print(format_parity(res["parity"], res.get("parity_split") or "valid"))
    p = res.get("int8_pipeline")
    if p:
        print(f"  whole INT8 path (INT8 text encoder + {res['int8']['onnx-int8']} INT8 graph) vs torch on FP32 features: "
              f"label agreement {p['label_agreement']:.2f}%, wF1 {p['weighted_f1']:.2f} (torch {p['weighted_f1_torch']:.2f}, drop {p['weighted_f1_drop']:+.2f})")
