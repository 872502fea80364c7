"""Everything ``python -m export`` does, in order, for one trained model.

1. graph model -> ``graph.onnx`` (dense step, FP32; :mod:`export.graph_model`);
2. ``--int8``: ``graph.int8.onnx`` — dynamic INT8 (default; the CPU backend ``onnx-int8``), or
   static QDQ calibrated on the windows of the first N training conversations
   (``--int8-method static --calib N``; the form TensorRT's explicit INT8 engine is built from);
3. ``--fp16``: ``graph.fp16.onnx``;
4. the text encoder the model's features need (MiniLM) -> ``text_encoder.onnx`` (+ INT8 with
   ``--int8``) and ``tokenizer.json``;
5. parity with torch on the validation split (FP32 max |Δ prob|, label agreement, wF1 drop);
6. ``--trt``: TensorRT engines in ``engines/`` (FP16; INT8 from the QDQ model);
7. ``manifest.json`` last, so a directory with a manifest has all its files.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from export import manifest as mf
from export.graph_inputs import PRESENT, GraphSpec, step_feeds
from train.common import InputError
from train.features.base import MAX_CONTEXT_TURNS, UtteranceInput
from train.graph import ConversationWindow

log = logging.getLogger(__name__)

GRAPH_FILE = "graph.onnx"
GRAPH_INT8_FILE = "graph.int8.onnx"
GRAPH_FP16_FILE = "graph.fp16.onnx"
DEFAULT_WINDOW = 32
# Static INT8 leaves the classifier MLP (128x128 + 128xC weights) in float: quantising it flipped
# near-tie labels (IEMOCAP valid, 20-epoch text model: agreement 97.8% -> 99.5% kept float).
FLOAT_HEAD = ("model.classifier.",)  # (a seed ensemble's member classifiers are quantised with the rest)


@dataclass
class ExportOptions:
    int8: bool = False
    # dynamic (default) | static (QDQ, calibrated). Measured on the shipped models' validation
    # splits (2-D relation weights, activation products float): dynamic agrees with torch on
    # 99.54% (IEMOCAP) / 100% (MELD) of labels at 0.27 of the FP32 size, with no calibration data;
    # static QDQ (defaults below) on 99.54% / 99.82% at 0.32 of the size; both 1.1-1.2x FP32 speed
    # on CPU. Static is for TensorRT, whose INT8 engines need the QDQ form.
    int8_method: str = "dynamic"
    calib: int | None = None  # training conversations for static calibration (None: all)
    # percentile (99.999th) over all training conversations: IEMOCAP valid agreement 99.54%, MELD
    # 99.82%; minmax on the first 32: 98.92% / 99.91%; percentile on the first 32: 99.07% / 99.73%.
    calibrate_method: str = "percentile"
    fp16: bool = False
    trt: bool = False
    window: int | None = None  # default: max(32, gcn_layers*past + 1)
    text: bool = True
    parity: bool = True
    # Parity on the first N validation conversations only (0 = all). Set-up uses a few: on a fresh
    # machine the parity check must first compute the validation features with the text encoder
    # (mpnet: minutes per corpus), and a handful of conversations already catches a broken export.
    parity_dialogues: int = 0
    opset: int = 17
    data: str | None = None  # corpus for calibration and parity (default: the config's data.path)
    cache_dir: str | None = None  # feature cache (default: the config's data.cache_dir)


def _windows(spec: GraphSpec, dialogue) -> list[dict[str, np.ndarray]]:
    """The feeds the runtime would pass for this dialogue: one window per utterance (causal), or
    the whole dialogue (bidirectional)."""
    feats = {m: np.asarray(dialogue.features[m], dtype=np.float32) for m in spec.modalities}
    spk = dialogue.speaker_ids()
    if not spec.causal:
        return [step_feeds(spec, feats, spk)]
    window, feeds = ConversationWindow(spec.exact_window), []
    for t in range(len(dialogue)):
        window.append({m: f[t] for m, f in feats.items()}, spk[t])
        feeds.append(step_feeds(spec, *window.arrays(spec.modalities)))
    return feeds


def load_export_data(model_dir: Path, manifest, cfg, opts: ExportOptions, need: bool):
    """The corpus with the model's features attached, or None when it is absent and not needed."""
    from train.data import load_corpus
    from train.evaluation import attach_model_features

    path = opts.data or cfg.data.path
    if not Path(path).is_file():
        if need:
            raise InputError("calibration data not found: give the training corpus with --data PATH (static INT8 calibrates on its training conversations)", path=str(path))
        log.warning("no data at %s: parity figures are computed on synthetic windows only", path)
        return None
    corpus = load_corpus(path)
    if corpus.labels != manifest.labels:
        raise InputError(f"the data's labels {corpus.labels} differ from the model's {manifest.labels}", path=str(path))
    # Only what calibration and parity read: the --calib training conversations (static INT8 only)
    # and the validation split (a fresh machine computes these features; the rest would be wasted).
    # Its own cache file (a cache holds exactly one corpus's dialogues: sharing the full corpus's
    # file would shrink it to this subset).
    static = opts.int8 and opts.int8_method == "static"
    valid = corpus.split("valid")[: opts.parity_dialogues or None]
    used = (corpus.split("train")[: opts.calib] if static else []) + valid
    src = Path(str(corpus.source))
    tag = f"-export{opts.parity_dialogues}" if opts.parity_dialogues else "-export"  # one cache file per subset
    subset = replace(corpus, dialogues=used, source=str(src.with_name(f"{src.stem}{tag}{src.suffix}")))
    return attach_model_features(subset, manifest, opts.cache_dir or cfg.data.cache_dir, media=cfg.data.media)


def _tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def quantize_graph_static(fp32: Path, out: Path, spec: GraphSpec, train, calibrate_method: str) -> dict[str, Any]:
    """Static QDQ INT8 of the graph model calibrated on the runtime's windows of ``train``
    (dialogues with features); returns the manifest details."""
    from export.quantize import WEIGHT_BITS, calibration_reader, quantize_static_int8

    feeds = [f for d in train for f in _windows(spec, d)]
    if calibrate_method != "minmax":  # histogram calibrators stack samples: one shape only
        sizes = [f[PRESENT].shape[0] for f in feeds]
        common = max(set(sizes), key=sizes.count)
        feeds = [f for f, s in zip(feeds, sizes) if s == common]
    log.info("calibrating INT8 (%s) on %d windows of %d training conversations", calibrate_method, len(feeds), len(train))
    quantize_static_int8(fp32, out, calibration_reader(feeds), op_types=("MatMul", "Gemm"), calibrate_method=calibrate_method, keep_float=FLOAT_HEAD)
    return {"method": "static-qdq", "calibration_conversations": len(train), "calibration_windows": len(feeds),
            "calibrate_method": calibrate_method, "kept_float": list(FLOAT_HEAD), "activation_products": "float",
            "weight_bits": WEIGHT_BITS}


def export_model(model: str | os.PathLike, out_dir: str | os.PathLike | None = None, opts: ExportOptions | None = None) -> mf.ExportManifest:
    """Export ``model`` (a model directory or shipped name) into ``out_dir`` (default: MODEL/export)."""
    from export.graph_model import export_graph_model
    from export.quantize import WEIGHT_BITS, convert_fp16, quantize_dynamic_int8
    from train.graph import window_size
    from train.model_dir import load_model, resolve_model_dir

    opts = opts or ExportOptions()
    if opts.trt:
        from export.trt import require_tensorrt

        require_tensorrt()  # fail before any work when TensorRT is absent
    if opts.int8_method not in ("static", "dynamic"):
        raise InputError(f"--int8-method must be static or dynamic, not {opts.int8_method!r}")
    if opts.calib is not None and opts.calib < 1:
        raise InputError(f"--calib must be >= 1, got {opts.calib}")
    model_dir = resolve_model_dir(model)  # a directory without weights fails here, naming the file
    out = Path(out_dir) if out_dir is not None else model_dir / mf.EXPORT_SUBDIR
    net, manifest, cfg = load_model(model_dir, "cpu")
    layers = cfg.model.gcn_layers if cfg.model.use_graph else 0
    window = opts.window or max(DEFAULT_WINDOW, window_size(cfg.graph.past, layers))
    out.mkdir(parents=True, exist_ok=True)
    (out / mf.MANIFEST_FILE).unlink(missing_ok=True)  # the directory is not a valid export until the end

    log.info("exporting %s -> %s (window %d)", model_dir, out, window)
    spec = export_graph_model(net, manifest, out / GRAPH_FILE, window=window, opset=opts.opset)
    em = mf.ExportManifest(
        model=manifest.to_dict(), model_version=mf.model_version(model_dir), opset=opts.opset, window=window,
        graph_io=spec.to_dict(), tools=_tool_versions(),
    )
    em.add_file(out, GRAPH_FILE, mf.GRAPH, "fp32")

    corpus = load_export_data(model_dir, manifest, cfg, opts, need=opts.int8 and opts.int8_method == "static")
    if opts.int8:
        if opts.int8_method == "static":
            train = corpus.split("train")[: opts.calib]
            if not train:
                raise InputError("the data has no training conversations to calibrate on", path=str(opts.data or cfg.data.path))
            details = quantize_graph_static(out / GRAPH_FILE, out / GRAPH_INT8_FILE, spec, train, opts.calibrate_method)
            em.add_file(out, GRAPH_INT8_FILE, mf.GRAPH, "int8", **details)
        else:
            quantize_dynamic_int8(out / GRAPH_FILE, out / GRAPH_INT8_FILE)
            em.add_file(out, GRAPH_INT8_FILE, mf.GRAPH, "int8", method="dynamic", weight_bits=WEIGHT_BITS)
    if opts.fp16:
        convert_fp16(out / GRAPH_FILE, out / GRAPH_FP16_FILE)
        em.add_file(out, GRAPH_FP16_FILE, mf.GRAPH, "fp16")

    if opts.text:
        _export_text(out, manifest, em, opts.int8)

    em.write(out)  # provisional: the backends below read it
    if opts.parity:
        em.parity = _parity(net, cfg, manifest, out, corpus, spec, opts)
    if opts.trt:
        em.graph_io["trt"] = _build_engines(out, em, spec)
    em.write(out)
    return em


FROZEN_TEXT = ("minilm", "mpnet")  # frozen sentence encoders (train.features.text)


def exportable_text(name: str) -> bool:
    """Whether text extractor ``name`` has an ONNX export here: a frozen sentence encoder
    (MiniLM, mpnet) or a fine-tuned ``minilm-ctx-*`` / ``mpnet-ft-*`` (exported merged with its
    adapter, with ``context.json``)."""
    from train.features.text_context import BASES

    return name in FROZEN_TEXT or any(name.startswith(b.prefix + "-") for b in BASES.values())


def write_text_encoder(name: str, out: Path, *, int8: bool, opset: int = 17, expect=None):
    """Export text extractor ``name`` (see :func:`exportable_text`) into ``out``: ONNX, tokenizer,
    ``context.json`` for context encoders, INT8 when asked. ``expect``: the identity the model's
    features came from; the installed encoder must match it. Returns the ``TextEncoderFiles`` and
    the INT8 copy's details for the manifest (``method``; ``calibration`` when smoothed).

    The export is kept in ``<cache>/exports/`` (keyed by the encoder's identity, which hashes a
    fine-tune's adapter too, the opset, the INT8 method and its calibration) and copied from there
    next time: a fine-tuned mpnet is merged and exported once per machine, frozen encoders once for
    all models."""
    from export.text_encoder import BUILTIN_CALIBRATION, calibration_for, export_text_encoder, int8_method, quantize_text_encoder
    from train.features.registry import resolve

    encoder_cls = resolve(name)  # frozen: its default model; fine-tuned: the shipped adapter
    installed = encoder_cls.default_identity()
    if expect is not None and installed != expect:
        raise InputError(
            f"the model's text features come from {expect.name} {expect.version}, but the installed encoder is {installed.version}; "
            "export with the encoder the model was trained on"
        )
    method = int8_method(name)
    context = name not in FROZEN_TEXT
    calibration = calibration_for(encoder_cls.shipped if context else None) if int8 and method == "smoothed" else None
    details = {"method": method, **({"calibration": calibration.source} if calibration else {})}
    # the built-in sentences leave the key as before calibration was named in it (caches stay valid)
    cached = _exported_encoder_cache(installed, opset, method, calibration.source if calibration and calibration.source != BUILTIN_CALIBRATION else "")
    files = _copy_cached_encoder(cached, out, int8, context)
    if files is None:
        if context:
            from export.text_encoder import export_context_encoder

            files = export_context_encoder(encoder_cls.shipped, out, opset=opset)
        else:
            files = export_text_encoder(out, source=encoder_cls.default_path(), identity=installed, opset=opset)
        if int8:
            files = quantize_text_encoder(files, method, calibration)
        _fill_encoder_cache(out, cached, int8, context)
    return files, details


def _exported_encoder_cache(identity, opset: int, method: str, calibration: str = "") -> Path:
    from train.features.assembled import cache_root
    from train.features.cache import content_key

    parts = (*identity.to_dict().values(), opset, method) + ((calibration,) if calibration else ())
    return cache_root() / "exports" / f"{identity.name}-{content_key(*parts)[:12]}"


def _copy_cached_encoder(cached: Path, out: Path, int8: bool, context: bool = False):
    """The cached export's files copied into ``out`` (TextEncoderFiles), or None when it lacks any.
    ``context``: a fine-tuned encoder's export, which has ``context.json`` too."""
    import onnx

    from train.common import copy_atomic
    from export.text_encoder import TextEncoderFiles
    from train.features.base import ExtractorIdentity
    from train.features.text_context import CONTEXT_JSON
    from train.features.text_onnx import ENCODER_FILE, ENCODER_INT8_FILE, META_DIM, META_IDENTITY, META_MAX_LENGTH, TOKENIZER_FILE

    names = [ENCODER_FILE, TOKENIZER_FILE] + ([ENCODER_INT8_FILE] if int8 else []) + ([CONTEXT_JSON] if context else [])
    if not all((cached / n).is_file() for n in names):
        return None
    out.mkdir(parents=True, exist_ok=True)
    for n in names:
        copy_atomic(cached / n, out / n)
    meta = {p.key: p.value for p in onnx.load(str(out / ENCODER_FILE), load_external_data=False).metadata_props}
    log.info("text encoder copied from the export cache %s", cached)
    return TextEncoderFiles(onnx=out / ENCODER_FILE, tokenizer=out / TOKENIZER_FILE, dim=int(meta[META_DIM]),
                            max_length=int(meta[META_MAX_LENGTH]), identity=ExtractorIdentity(**json.loads(meta[META_IDENTITY])),
                            int8=out / ENCODER_INT8_FILE if int8 else None)


def _fill_encoder_cache(out: Path, cached: Path, int8: bool, context: bool = False) -> None:
    from train.common import copy_atomic
    from train.features.text_context import CONTEXT_JSON
    from train.features.text_onnx import ENCODER_FILE, ENCODER_INT8_FILE, TOKENIZER_FILE

    cached.mkdir(parents=True, exist_ok=True)
    for n in [TOKENIZER_FILE] + ([ENCODER_INT8_FILE] if int8 else []) + ([CONTEXT_JSON] if context else []) + [ENCODER_FILE]:  # fp32 last: marks it complete
        copy_atomic(out / n, cached / n)


def _export_text(out: Path, manifest, em: mf.ExportManifest, int8: bool) -> None:
    """The model's text encoder into the export, when its text features have one."""
    from train.features.text_context import CONTEXT_JSON
    from train.features.text_onnx import ENCODER_FILE, ENCODER_INT8_FILE, TOKENIZER_FILE

    ident = manifest.extractors.get("text")
    if ident is None or not exportable_text(ident.name):
        return
    files, int8_details = write_text_encoder(ident.name, out, int8=int8, opset=em.opset, expect=ident)
    if (out / CONTEXT_JSON).is_file() and ident.name not in FROZEN_TEXT:
        em.add_file(out, CONTEXT_JSON, mf.TEXT_CONTEXT, None)
    em.add_file(out, ENCODER_FILE, mf.TEXT_ENCODER, "fp32", max_length=files.max_length)
    em.add_file(out, TOKENIZER_FILE, mf.TOKENIZER, None)
    if int8:
        em.add_file(out, ENCODER_INT8_FILE, mf.TEXT_ENCODER, "int8", **int8_details)


def _parity(net, cfg, manifest, out: Path, corpus, spec: GraphSpec, opts: ExportOptions) -> dict[str, Any]:
    from export.backends import BACKENDS
    from export.parity import format_parity, graph_parity

    names = ["onnx"] + (["onnx-int8"] if opts.int8 else []) + (["onnx-fp16"] if opts.fp16 else [])
    backends = {n: BACKENDS[n](export_dir=out) for n in names}
    if corpus is not None:
        dialogues = corpus.split("valid")  # the subset _corpus kept
        split = f"valid (first {len(dialogues)} conversations)" if opts.parity_dialogues else "valid"
    else:
        dialogues, split = synthetic_dialogues(spec, manifest.labels), "synthetic"
    result: dict[str, Any] = {"split": split, "graph": graph_parity(net, cfg, dialogues, backends, manifest.labels)}
    print(format_parity(result["graph"], split))
    text_file = out / "text_encoder.onnx"
    ident = manifest.extractors.get("text")
    if opts.text and text_file.is_file() and ident is not None:
        from export.text_encoder import PARITY_TEXTS, check_parity

        items = parity_items(corpus.split("valid") if corpus is not None else [], n=64)
        result["text_encoder"] = check_parity(out, texts=PARITY_TEXTS, items=items or None, extractor=ident.name)
        result["text_encoder"]["texts"] = len(items or PARITY_TEXTS)
        print(f"text encoder parity: {result['text_encoder']}")
    return result


def utterance_inputs(dialogue, past: int = MAX_CONTEXT_TURNS) -> list:
    """Text extractor inputs for every utterance of ``dialogue``: transcript, speaker and the
    ``past`` previous turns as ``context``, as the live runtime passes them."""
    from train.features.base import UtteranceInput

    texts = dialogue.texts or [None] * len(dialogue)
    return [UtteranceInput(text=t, speaker=dialogue.speakers[i],
                           context=[UtteranceInput(text=texts[j], speaker=dialogue.speakers[j]) for j in range(max(0, i - past), i)])
            for i, t in enumerate(texts)]


def parity_items(dialogues, n: int):
    """Up to ``n`` validation utterances with a transcript, as :func:`utterance_inputs`."""
    items = [it for d in dialogues for it in utterance_inputs(d) if it.text and it.text.strip()]
    return items[:n]


def synthetic_dialogues(spec: GraphSpec, labels: Sequence[str], n: int = 8, seed: int = 0):
    """Random dialogues (two speakers, some missing rows) when no data is at hand."""
    from train.data.corpus import Dialogue

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        length = int(rng.integers(3, 2 * spec.exact_window + 2))
        feats = {m: rng.standard_normal((length, d)).astype(np.float32) for m, d in spec.dims.items()}
        if len(spec.modalities) > 1:
            feats[spec.modalities[-1]][rng.random(length) < 0.2] = np.nan
        out.append(Dialogue(id=f"synthetic{k}", split="valid", speakers=[str(s) for s in rng.integers(0, 2, length)],
                            labels=rng.integers(0, len(labels), length).astype(np.int64), features=feats))
    return out


def _build_engines(out: Path, em: mf.ExportManifest, spec: GraphSpec) -> dict[str, Any]:
    from export.backends import engine_dims
    from export.trt import build_engine, profile_shapes, trtexec_command

    info: dict[str, Any] = {"engine_dir": "engines", "engines": {}}
    dims = engine_dims(spec)
    for precision, onnx_file in (("fp16", GRAPH_FILE), ("int8", GRAPH_INT8_FILE)):
        if precision == "int8":
            entry = em.files.get(GRAPH_INT8_FILE)
            if entry is None:
                continue
            if entry.details.get("method") != "static-qdq":  # TensorRT's explicit INT8 needs the QDQ model
                log.warning("no INT8 TensorRT engine: it is built from the static QDQ model; export with --int8 --int8-method static")
                continue
        engine = build_engine(out / onnx_file, out / "engines", precision=precision, dims=dims)
        shapes = profile_shapes(out / onnx_file, dims)
        info["engines"][precision] = {"engine": engine.name, "trtexec": trtexec_command(onnx_file, f"engines/{engine.name}", precision, shapes)}
        print(f"TensorRT {precision} engine: {engine}\n  same with trtexec: {info['engines'][precision]['trtexec']}")
    return info
