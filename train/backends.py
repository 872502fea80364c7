"""Inference backends behind one interface, chosen by name (``--backend torch|onnx|...``).

A backend turns whole dialogues (with their features attached) into per-utterance emotion
probabilities. The interface and the ``torch`` backend live here (:data:`BACKENDS`); the export
package composes its own table on top (:data:`export.backends.BACKENDS`: ``onnx``, ``onnx-int8``,
``trt``...) and passes it to :func:`load_backend`. This package never looks for the others.

Contract of a backend object (see :class:`Backend`):

* ``manifest``: the :class:`~train.model_dir.ModelManifest` of the model it runs;
* ``predict(dialogues) -> list[np.ndarray]``: one ``(n_i, C)`` float32 probability array per
  dialogue, rows in utterance order, given ``dialogue.features[m]`` of shape ``(n_i, dims[m])``
  for every modality ``m`` of the manifest.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

from train.data.corpus import Dialogue
from train.common import InputError
from train.model_dir import ModelManifest

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str
    manifest: ModelManifest

    def predict(self, dialogues: Sequence[Dialogue]) -> list[np.ndarray]:
        """Per dialogue, (n_i, C) float32 class probabilities."""
        ...


# A table of backends: name -> factory(model_dir: Path, **options) -> Backend
BackendTable = Mapping[str, Callable[..., Backend]]


def load_backend(model: str | Path, name: str = "torch", backends: BackendTable | None = None, **options) -> Backend:
    """Open the model directory (or model name, :func:`train.model_dir.resolve_model_dir`)
    ``model`` with backend ``name`` from ``backends`` (default :data:`BACKENDS`: torch only)."""
    from train.model_dir import resolve_model_dir

    backends = BACKENDS if backends is None else backends
    if name not in backends:
        raise InputError(f"unknown backend {name!r}; available: {', '.join(backends)}")
    return backends[name](resolve_model_dir(model), **options)


def check_features(dialogues: Sequence[Dialogue], manifest: ModelManifest, source: str = "data") -> None:
    """InputError unless each dialogue carries every modality of the model at the model's width."""
    for d in dialogues:
        for m, dim in manifest.dims.items():
            f = d.features.get(m)
            if f is None:
                have = ", ".join(sorted(d.features)) or "none"
                raise InputError(f"the model needs {m} features, the data has {have}", path=source, dialogue=d.id)
            if f.ndim == 2 and f.shape[0] == len(d) and f.shape[1] != dim:
                raise InputError(f"{m} features are {f.shape[1]}-d but the model expects {dim}-d "
                                 "(made by another extractor, or for another model?)", path=source, dialogue=d.id)
            if f.ndim != 2 or f.shape[0] != len(d) or f.shape[1] != dim:
                raise InputError(f"{m} features have shape {tuple(f.shape)}; the model expects ({len(d)}, {dim})",
                                 path=source, dialogue=d.id)


def predict_dialogues(model, dialogues: Sequence[Dialogue], cfg, device: str = "cpu",
                      batch_dialogues: int = 32) -> list[np.ndarray]:
    """Run a torch AR-IIGCN over whole dialogues; per dialogue (n_i, C) float32 probabilities.

    Shared by validation during training and the torch backend, so both score the same way.
    """
    import torch

    from train.batch import collate

    out: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(dialogues), batch_dialogues):
                chunk = list(dialogues[i:i + batch_dialogues])
                batch = collate(chunk, cfg.data.modalities, cfg.graph).to(device)
                probs = model.predict_proba(batch).float().cpu()
                lengths = [len(d) for d in chunk]
                if probs.shape[0] != sum(lengths):
                    raise RuntimeError(f"model returned {probs.shape[0]} rows for {sum(lengths)} utterances")
                out.extend(p.numpy() for p in torch.split(probs, lengths))
    finally:
        model.train(was_training)
    return out


class TorchBackend:
    """The trained PyTorch model, run on ``device`` (default: CUDA when available, else CPU)."""

    name = "torch"

    def __init__(self, model_dir: Path, device: str | None = None, batch_dialogues: int = 32):
        import torch

        from train.model_dir import load_model

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.manifest, self.cfg = load_model(model_dir, self.device)
        self.batch_dialogues = batch_dialogues

    def predict(self, dialogues: Sequence[Dialogue]) -> list[np.ndarray]:
        check_features(dialogues, self.manifest)
        return predict_dialogues(self.model, dialogues, self.cfg, self.device, self.batch_dialogues)


BACKENDS: dict[str, Callable[..., Backend]] = {TorchBackend.name: TorchBackend}
