"""Inputs of the exported per-step graph model, built from features and speakers (numpy only).

The ONNX step (see :mod:`export.graph_model`) takes a window of the ``W`` newest utterances:

* ``feat_<modality>``: (W, d_m) float32 features per modality (rows of an absent modality
  may hold anything, NaN included: they are masked out);
* ``present``: (W, M) float32, 1 where modality ``m`` of utterance ``i`` has features;
* ``adjacency``: (R, V, V) float32 with ``V = M * W``; ``adjacency[r, i, j] = 1`` iff the graph
  has edge ``j -> i`` of relation ``r`` (node ``m * W + i``, :mod:`train.graph`). Only when the
  model uses the graph.

and returns ``probs`` (W, C). The edges come from :func:`train.graph.build_graph`, the function
training uses, so the runtime and training see the same graph. Torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from train.common import InputError
from train.graph import build_graph, present_rows, window_size

PRESENT = "present"
ADJACENCY = "adjacency"
PROBS = "probs"
WINDOW_DIM = "window"  # names of the dynamic axes (TensorRT profiles refer to them)
NODES_DIM = "nodes"


def feature_input(modality: str) -> str:
    return f"feat_{modality}"


@dataclass(frozen=True)
class GraphSpec:
    """What it takes to feed the exported step; stored in the export manifest as ``graph_io``.

    window: the largest window the artifacts are built for (TensorRT profiles stop there;
    onnxruntime accepts any length). exact_window: the newest ``L*past + 1`` utterances give the
    newest one exactly its whole-conversation output (:func:`train.graph.window_size`).
    """

    modalities: list[str]
    dims: dict[str, int]
    labels: list[str]
    past: int
    future: int
    layers: int
    speaker_relations: bool
    inter_modal: bool
    num_relations: int
    use_graph: bool
    window: int
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=lambda: [PROBS])

    @property
    def exact_window(self) -> int:
        return window_size(self.past, self.layers) if self.use_graph else 1

    @property
    def causal(self) -> bool:
        return self.future == 0

    def input_names(self) -> list[str]:
        names = [feature_input(m) for m in self.modalities] + [PRESENT]
        return names + [ADJACENCY] if self.use_graph else names

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = self.input_names()
        d["exact_window"] = self.exact_window
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GraphSpec":
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})


def presence(features: Mapping[str, np.ndarray], modalities: list[str]) -> np.ndarray:
    """(W, M) bool: whether modality ``m`` of utterance ``i`` is present (:func:`train.graph.present_rows`)."""
    return np.stack([present_rows(features[m]) for m in modalities], axis=1)


def adjacency_counts(edge_index: np.ndarray, edge_type: np.ndarray, num_nodes: int, num_relations: int) -> np.ndarray:
    """(R, V, V) float32 edge counts, ``A[r, target, source] += 1`` per edge (0/1 for
    :func:`train.graph.build_graph`, which makes no duplicates); the model row-normalises it."""
    a = np.zeros((num_relations, num_nodes, num_nodes), dtype=np.float32)
    if edge_index.size:
        np.add.at(a, (edge_type, edge_index[1], edge_index[0]), 1.0)
    return a


def check_window_features(spec: GraphSpec, features: Mapping[str, np.ndarray], n: int | None = None) -> int:
    """InputError unless every modality of the model is there as (n, d_m); returns n."""
    for m in spec.modalities:
        if m not in features:
            raise InputError(f"the model needs {m} features; got {', '.join(sorted(features)) or 'none'}")
        x = np.asarray(features[m])
        if x.ndim != 2:
            raise InputError(f"{m} features must be 2-D (utterances, {spec.dims[m]}), got shape {x.shape}")
        if x.shape[1] != spec.dims[m]:
            raise InputError(f"{m} features are {x.shape[1]}-d but the model expects {spec.dims[m]}-d (made by a different extractor?)")
        if n is None:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise InputError(f"{m} features have {x.shape[0]} rows, other modalities {n}")
    if not n:
        raise InputError("a window needs at least one utterance")
    return int(n)


def step_feeds(spec: GraphSpec, features: Mapping[str, np.ndarray], speakers: np.ndarray) -> dict[str, np.ndarray]:
    """ONNX feeds for one window: features (W, d_m) per modality and speakers (W,) -> feeds."""
    speakers = np.asarray(speakers)
    n = check_window_features(spec, features, None)
    if speakers.shape != (n,):
        raise InputError(f"speakers have shape {speakers.shape}, expected ({n},)")
    present = presence(features, spec.modalities)
    feeds = {
        feature_input(m): np.where(present[:, k : k + 1], np.asarray(features[m], dtype=np.float32), 0.0).astype(np.float32)
        for k, m in enumerate(spec.modalities)
    }
    feeds[PRESENT] = present.astype(np.float32)
    if spec.use_graph:
        ei, et = build_graph(speakers, present, spec.past, spec.future, spec.speaker_relations, spec.inter_modal)
        feeds[ADJACENCY] = adjacency_counts(ei, et, n * len(spec.modalities), spec.num_relations)
    return feeds
