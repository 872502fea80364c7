r"""The per-step graph model for export: a dense, masked form of the same relational GCN.

PyG's scatter-based message passing exports poorly to ONNX (pyg-team/pytorch_geometric #728,
#7890, #8415), so the exported step computes the identical function with dense matrices, using
the trained model's own parameters and its dense formulation
(:meth:`train.model.ARIIGCN.forward_dense`, :meth:`train.model.rgcn.RelationalGCN.forward_dense`).
For a window of W utterances, M modalities, V = M·W nodes (node ``m*W + i``), R relations:

1. inputs: ``feat_<m>`` (W, d_m), ``present`` (W, M) 0/1, ``adjacency`` (R, V, V) 0/1 built by
   :func:`export.graph_inputs.step_feeds` from :func:`train.graph.build_graph`'s edges;
2. in the graph: :math:`A_r \leftarrow A_r \odot n n^\top` with the node mask :math:`n` (absent
   nodes touch no edge even if the caller's adjacency says otherwise), then
   :math:`\hat A_r = A_r / \max(A_r \mathbf{1}, 1)` (PyG's per-relation mean);
3. the model's dense forward: projections and generators (absent rows zeroed with ``where``,
   so NaN rows are harmless), :math:`X \leftarrow X + \mathrm{ReLU}(X W_{root} + b +
   \sum_r \hat A_r X W_r)` per layer, masked mean over present modalities, classifier;
4. softmax -> ``probs`` (W, C).

Dropout is the identity (eval mode). :func:`export_graph_model` writes the ONNX with dynamic
``window`` and ``nodes`` axes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.graph_inputs import ADJACENCY, NODES_DIM, PRESENT, PROBS, WINDOW_DIM, GraphSpec, feature_input, step_feeds
from export.torch_export import export_onnx
from train.graph import window_size


def graph_spec(model, manifest, window: int) -> GraphSpec:
    """The :class:`GraphSpec` of a loaded ARIIGCN and its model-directory manifest."""
    cfg = model.cfg
    spec = GraphSpec(
        modalities=list(model.modalities),
        dims=dict(model.dims),
        labels=list(manifest.labels),
        past=int(cfg.graph.past),
        future=int(cfg.graph.future),
        layers=int(cfg.model.gcn_layers) if model.gcn is not None else 0,
        speaker_relations=bool(cfg.graph.speaker_relations),
        inter_modal=bool(cfg.graph.inter_modal),
        num_relations=int(model.num_relations),
        use_graph=model.gcn is not None,
        window=int(window),
    )
    return spec


class DenseStep(nn.Module):
    """The exported step: (feat_m (W, d_m) for each modality, present (W, M), [adjacency (R, V, V) 0/1])
    -> probs (W, C). Masks and row-normalises the adjacency, then runs the model's own dense
    formulation (:meth:`train.model.ARIIGCN.forward_dense`) with the trained parameters."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        self.n_mod = len(model.modalities)
        self.use_graph = model.gcn is not None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feats = dict(zip(self.model.modalities, inputs[: self.n_mod]))
        present = inputs[self.n_mod] > 0.5  # (W, M) bool
        adjacency = None
        if self.use_graph:
            node = present.t().reshape(1, -1).to(torch.float32)  # (1, V), node m*W + i
            a = inputs[self.n_mod + 1] * node.unsqueeze(-1) * node.unsqueeze(1)  # absent nodes: no edges
            adjacency = a / a.sum(-1, keepdim=True).clamp(min=1.0)  # PyG's per-relation mean
        return torch.softmax(self.model.forward_dense(feats, present, adjacency), dim=-1)


def example_feeds(spec: GraphSpec, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random but well-formed feeds for a window of ``n`` (two speakers, one missing modality row)."""
    rng = np.random.default_rng(seed)
    feats = {m: rng.standard_normal((n, d)).astype(np.float32) for m, d in spec.dims.items()}
    if len(spec.modalities) > 1 and n > 1:
        feats[spec.modalities[-1]][0] = np.nan
    return step_feeds(spec, feats, np.arange(n) % 2)


def export_graph_model(model, manifest, path: str | Path, *, window: int = 32, opset: int = 17) -> GraphSpec:
    """Write the dense step of ``model`` (an eval-mode ARIIGCN) to ``path``; returns its spec.

    ``window`` (the largest window the runtime will pass) is recorded; the ONNX itself takes any
    length. It must be at least ``L*past + 1`` so that the newest utterance's output in a window
    equals its whole-conversation output.
    """
    spec = graph_spec(model, manifest, window)
    need = window_size(spec.past, spec.layers) if spec.use_graph else 1
    if window < need:
        from train.common import InputError

        raise InputError(f"window {window} is smaller than the model's receptive field ({need} = gcn_layers*past + 1)")
    step = DenseStep(model)
    feeds = example_feeds(spec, min(4, window))
    names = spec.input_names()
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    axes = {feature_input(m): {0: WINDOW_DIM} for m in spec.modalities}
    axes[PRESENT] = {0: WINDOW_DIM}
    if spec.use_graph:
        axes[ADJACENCY] = {1: NODES_DIM, 2: NODES_DIM}
    axes[PROBS] = {0: WINDOW_DIM}
    export_onnx(step, args, path, input_names=names, output_names=[PROBS], dynamic_axes=axes, opset=opset,
                metadata={"labels": ",".join(spec.labels), "window": str(window)})
    return spec
