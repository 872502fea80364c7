"""Inference backends over exported artifacts: ``onnx``, ``onnx-int8``, ``trt``, ``trt-int8``.

Torch-free (onnxruntime, or TensorRT + cuda-python). :data:`BACKENDS` is train's table
(``torch``) plus these; :func:`load_backend` opens a model with any of them (``python -m
export.evaluate --model DIR --backend onnx-int8``, the live runtime). The artifacts are looked
up in the export directory ``DIR/export`` (``python -m export --model DIR`` writes there by
default) or in ``export_dir=``; the export must have been made from this exact model version.

Two ways in:

* :meth:`GraphBackend.step` — the live runtime's call: features of the newest W utterances
  (W <= the manifest's window) and their speakers -> (W, C) probabilities (use the last row);
* :meth:`GraphBackend.predict` — whole dialogues, as :class:`train.backends.TorchBackend`:
  a causal model is run utterance by utterance over a :class:`train.graph.ConversationWindow`
  of the newest ``gcn_layers*past + 1`` utterances (exactly the runtime's computation, and
  exactly the whole-dialogue result, see :mod:`train.graph`); a bidirectional model sees the
  whole dialogue in one call.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from export.graph_inputs import PROBS, GraphSpec, check_window_features, step_feeds
from export.manifest import EXPORT_SUBDIR, GRAPH, ExportManifest, check_export, is_export_dir
from train import backends as train_backends
from train.backends import Backend, check_features
from train.data.corpus import Dialogue
from train.common import ExportMismatchError, InputError, python_m
from train.features.base import ExtractorIdentity
from train.graph import ConversationWindow
from train.model_dir import ModelManifest, WEIGHTS_FILE

log = logging.getLogger(__name__)


def resolve_export_dir(model_dir: str | Path | None, export_dir: str | Path | None = None) -> Path:
    """The export directory for ``model_dir``: ``export_dir`` if given, ``model_dir`` itself if it is
    one, else ``model_dir/export``."""
    if export_dir is not None:
        return Path(export_dir)
    if model_dir is None:
        raise InputError("no model or export directory given")
    model_dir = Path(model_dir)
    if is_export_dir(model_dir):
        return model_dir
    if is_export_dir(model_dir / EXPORT_SUBDIR):
        return model_dir / EXPORT_SUBDIR
    raise ExportMismatchError(
        f"no ONNX export for this model (looked for {EXPORT_SUBDIR}/manifest.json)",
        advice=f"export it with: {python_m(f'export --model {model_dir} --out {model_dir / EXPORT_SUBDIR}')}",
        path=str(model_dir),
    )


def model_manifest(export: ExportManifest) -> ModelManifest:
    """The model directory's manifest, as recorded in the export (no model directory needed)."""
    m = export.model
    return ModelManifest(
        name=str(m["name"]),
        dataset=str(m["dataset"]),
        labels=[str(x) for x in m["labels"]],
        dims={str(k): int(v) for k, v in m["dims"].items()},
        extractors={str(k): ExtractorIdentity(**v) for k, v in m["extractors"].items()},
        past=int(m["graph"]["past"]),
        future=int(m["graph"]["future"]),
        format_version=int(m.get("format_version", 1)),
        extra=dict(m.get("extra", {})),
    )


class GraphBackend:
    """Common part: opens and verifies the export, builds feeds, slices windows.

    Subclasses set ``name``, ``precision`` (what runs), ``onnx_precision`` (which exported graph
    file they load) and implement :meth:`_run` (feeds -> probs).
    """

    name = "?"
    precision = "fp32"
    onnx_precision = "fp32"
    max_window: int | None = None  # None: any window length

    def __init__(self, model_dir: str | Path | None = None, *, export_dir: str | Path | None = None, **_ignored):
        self.export_dir = resolve_export_dir(model_dir, export_dir)
        probe = check_export(self.export_dir, files=[])
        self.file = probe.file(GRAPH, self.onnx_precision)
        if self.file is None:
            flag = {"int8": " --int8", "fp16": " --fp16"}.get(self.onnx_precision, "")
            raise ExportMismatchError(f"the export has no {self.onnx_precision} graph model", path=str(self.export_dir),
                                      advice=f"re-run {python_m('export')}{flag}")
        # A model directory with weights is checked for the exact version the export came from.
        version_of = Path(model_dir) if model_dir is not None and (Path(model_dir) / WEIGHTS_FILE).is_file() else None
        self.export: ExportManifest = check_export(self.export_dir, model_dir=version_of, files=[self.file])
        self.manifest = model_manifest(self.export)
        self.spec = GraphSpec.from_dict(self.export.graph_io)

    # -- the runtime's call ----------------------------------------------------------------
    def step(self, features: Mapping[str, np.ndarray], speakers: Sequence) -> np.ndarray:
        """Probabilities (W, C) for a window: ``features[m]`` (W, d_m) (NaN rows = absent), speakers (W,)."""
        n = check_window_features(self.spec, features)
        if self.max_window is not None and n > self.max_window:
            raise InputError(f"window of {n} utterances exceeds this backend's maximum {self.max_window} (the export's window)")
        spk = np.asarray(speakers)
        if spk.dtype.kind not in "iu":  # speaker names -> ids; only equality matters
            _, spk = np.unique(spk.astype(str), return_inverse=True)
        return self._run(step_feeds(self.spec, features, spk.astype(np.int64)))

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    # -- evaluation ---------------------------------------------------------------------------
    def predict(self, dialogues: Sequence[Dialogue]) -> list[np.ndarray]:
        """Per dialogue, (n_i, C) float32 probabilities (see the module docstring for how)."""
        check_features(dialogues, self.manifest)
        out = []
        for d in dialogues:
            feats = {m: np.asarray(d.features[m], dtype=np.float32) for m in self.spec.modalities}
            spk = d.speaker_ids()
            if self.spec.causal:
                window, rows = ConversationWindow(self.spec.exact_window), []
                for t in range(len(d)):
                    window.append({m: f[t] for m, f in feats.items()}, spk[t])
                    rows.append(self.step(*window.arrays(self.spec.modalities))[-1])
                out.append(np.stack(rows).astype(np.float32))
            else:
                out.append(self.step(feats, spk).astype(np.float32))
        return out

    def text_extractor(self, precision: str | None = None, path: str | Path | None = None):
        """The exported text encoder as a torch-free extractor (INT8 when this backend is INT8).

        From this export (files verified against its manifest), or from ``path``, a directory
        written by ``python -m export.text_encoder`` (for exports made with ``--no-text``, e.g.
        shipped models that keep the 90 MB encoder out of the package). Either way its
        identity must be the one the model's text features came from.
        """
        from export.manifest import TEXT_CONTEXT, TEXT_ENCODER, TOKENIZER
        from train.features.registry import get_extractor, known

        want = self.manifest.extractors.get("text")
        if want is None or "onnx" not in known().get(want.name, []):
            raise InputError(f"the model's text features ({want.name if want else 'none'}) have no exported (onnx) encoder", path=str(self.export_dir))
        precision = precision or ("int8" if self.precision == "int8" else "fp32")
        if path is None:
            encoder, tokenizer = self.export.file(TEXT_ENCODER, precision), self.export.file(TOKENIZER)
            if encoder is None or tokenizer is None:
                flag = " --int8" if precision == "int8" else ""
                raise InputError(f"the export has no {precision} text encoder; re-run {python_m('export')}{flag} (without --no-text)", path=str(self.export_dir))
            context = self.export.file(TEXT_CONTEXT)
            check_export(self.export_dir, files=[encoder, tokenizer] + ([context] if context else []))
        extractor = get_extractor(want.name, backend="onnx", path=path or self.export_dir, precision=precision)
        if extractor.identity != want:
            have = extractor.identity
            raise InputError(
                f"this text encoder makes {have.name} {have.version} features, the model needs "
                f"{want.name + ' ' + want.version if want else 'no text features'}",
                path=str(path or self.export_dir),
            )
        return extractor


class OnnxBackend(GraphBackend):
    """The FP32 graph model on onnxruntime (CUDA when available, else CPU)."""

    name = "onnx"
    precision = "fp32"

    def __init__(self, model_dir=None, *, export_dir=None, providers: Sequence[str] | None = None, threads: int | None = 1, **_ignored):
        """``threads``: onnxruntime intra-op threads; 1 by default — the per-step model is a few
        small matrix products (~0.1 ms), which more threads do not speed up, and the live
        runtime's other stages (ASR, text encoder) need the cores."""
        from train.common import make_session

        super().__init__(model_dir, export_dir=export_dir)
        self.session = make_session(self.export_dir / self.file, providers=providers, threads=threads)

    def _run(self, feeds):
        return self.session.run([PROBS], feeds)[0]


class OnnxInt8Backend(OnnxBackend):
    """The static-INT8 (QDQ) graph model on onnxruntime (or a dynamic-INT8 one, as exported)."""

    name = "onnx-int8"
    precision = "int8"
    onnx_precision = "int8"


class OnnxFp16Backend(OnnxBackend):
    """The FP16 graph model (float32 inputs/outputs) on onnxruntime; meant for GPUs."""

    name = "onnx-fp16"
    precision = "fp16"
    onnx_precision = "fp16"


class TrtBackend(GraphBackend):
    """A TensorRT engine (FP16) built from the export on first use, cached per GPU / TensorRT version."""

    name = "trt"
    precision = "fp16"
    onnx_precision = "fp32"  # the engine is built from the FP32 ONNX with FP16 enabled

    def __init__(self, model_dir=None, *, export_dir=None, **_ignored):
        from export.trt import TrtRunner, build_engine, require_tensorrt

        require_tensorrt()
        super().__init__(model_dir, export_dir=export_dir)
        self.max_window = self.spec.window
        engine = build_engine(self.export_dir / self.file, self.export_dir / "engines", precision=self.precision, dims=engine_dims(self.spec))
        self.runner = TrtRunner(engine)

    def _run(self, feeds):
        return self.runner(feeds)[PROBS]


class TrtInt8Backend(TrtBackend):
    """A TensorRT INT8 engine from the QDQ model (explicit quantisation: the ONNX carries the scales)."""

    name = "trt-int8"
    precision = "int8"
    onnx_precision = "int8"


def engine_dims(spec: GraphSpec) -> dict[str, tuple[int, int, int]]:
    """TensorRT profile: every window size 1..window, optimised for a full window."""
    from export.graph_inputs import NODES_DIM, WINDOW_DIM

    m = len(spec.modalities)
    return {WINDOW_DIM: (1, spec.window, spec.window), NODES_DIM: (m, m * spec.window, m * spec.window)}


# Every backend: train's (torch) and the exported ones. Order: train's first.
BACKENDS = {**train_backends.BACKENDS,
            **{b.name: b for b in (OnnxBackend, OnnxInt8Backend, OnnxFp16Backend, TrtBackend, TrtInt8Backend)}}


def load_backend(model: str | Path, name: str = "torch", **options) -> Backend:
    """Open the model directory (or model name) ``model`` with any backend of :data:`BACKENDS`."""
    return train_backends.load_backend(model, name, backends=BACKENDS, **options)
