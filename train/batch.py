"""Batches of dialogues as one disjoint conversation graph, ready for :class:`train.model.ARIIGCN`.

Node order
    Utterances are numbered ``u = 0 .. N-1`` by concatenating the dialogues in the order given
    (dialogue ``b`` occupies ``offsets[b] .. offsets[b] + lengths[b] - 1``). Graph nodes are
    modality-major over the whole batch: node ``m * N + u`` is modality ``m`` (index into the
    ``modalities`` list) of utterance ``u``. For a single dialogue this is exactly the node
    numbering of :func:`train.graph.build_graph`; for several, each dialogue's graph is built by
    :func:`train.graph.build_graph` and its local node ``m * n_b + i`` maps to
    ``m * N + offsets[b] + i``. Dialogues share no edge.

Missing modalities
    A feature row with any NaN/inf is "nothing extracted" (see
    :mod:`train.features.base`): its ``present`` flag is False, its values become 0, and the
    graph gives that node no edge; the model ignores it in pooling and in every loss.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from train.config import GraphConfig
from train.data.corpus import Dialogue
from train.common import InputError
from train.graph import build_graph, present_rows


@dataclass
class GraphBatch:
    """B dialogues, N utterances in all, M modalities; see the module docstring for node order.

    Attributes:
        features: modality -> (N, d_m) float32; rows of absent modalities are 0.
        present: (N, M) bool, modality ``m`` of utterance ``u`` has features.
        speakers: (N,) int64 speaker index within its dialogue (order of first appearance).
        lengths: (B,) int64 utterances per dialogue.
        labels: (N,) int64 emotion id, -1 = unlabelled (ignored by every loss).
        edge_index: (2, E) int64 ``[source, target]`` over the ``M * N`` nodes.
        edge_type: (E,) int64 relation ids (:func:`train.graph.num_relations`).
        modalities: the M modality names, in node order.
        dialogue_ids: the B dialogue ids.
    """

    features: dict[str, torch.Tensor]
    present: torch.Tensor
    speakers: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    edge_index: torch.Tensor
    edge_type: torch.Tensor
    modalities: list[str]
    dialogue_ids: list[str]

    @property
    def num_utterances(self) -> int:
        return int(self.present.shape[0])

    @property
    def num_nodes(self) -> int:
        return self.num_utterances * len(self.modalities)

    def to(self, device: torch.device | str) -> "GraphBatch":
        """A copy with every tensor on ``device``."""
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.to(device)
            elif isinstance(v, dict):
                v = {k: t.to(device) for k, t in v.items()}
            moved[f.name] = v
        return GraphBatch(**moved)


def _features(d: Dialogue, modality: str, dim: int | None) -> np.ndarray:
    if modality not in d.features:
        have = ", ".join(sorted(d.features)) or "none"
        raise InputError(f"has no {modality!r} features (has: {have}); extract them or drop "
                         f"{modality!r} from data.modalities", dialogue=d.id)
    x = np.asarray(d.features[modality])
    if x.ndim != 2 or x.shape[0] != len(d):
        raise InputError(f"{modality} features have shape {x.shape}, expected ({len(d)}, d)", dialogue=d.id)
    if dim is not None and x.shape[1] != dim:
        raise InputError(f"{modality} features are {x.shape[1]}-d but other dialogues in the batch have "
                         f"{dim}-d", dialogue=d.id)
    return x


def collate(dialogues: Sequence[Dialogue], modalities: Sequence[str], graph_cfg: GraphConfig) -> GraphBatch:
    """Stack ``dialogues`` into one :class:`GraphBatch` whose graph follows ``graph_cfg``.

    Dialogues with ``labels`` None (e.g. live windows) count as unlabelled (-1).

    Raises:
        InputError: a dialogue lacks a modality entirely, or feature shapes disagree.
    """
    if not dialogues:
        raise ValueError("collate needs at least one dialogue")
    if not modalities:
        raise ValueError("collate needs at least one modality")
    modalities = list(modalities)
    lengths = np.array([len(d) for d in dialogues], dtype=np.int64)
    n_total = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    feats: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    present_parts, speaker_parts, label_parts, edge_parts, typ_parts = [], [], [], [], []
    for d, off in zip(dialogues, offsets):
        n = len(d)
        pres = np.zeros((n, len(modalities)), dtype=bool)
        for k, m in enumerate(modalities):
            x = _features(d, m, feats[m][0].shape[1] if feats[m] else None)
            ok = present_rows(x)
            pres[:, k] = ok
            feats[m].append(np.where(ok[:, None], x, 0.0).astype(np.float32))
        labels = np.full(n, -1, np.int64) if d.labels is None else np.asarray(d.labels, dtype=np.int64)
        if labels.shape != (n,):
            raise InputError(f"{labels.shape[0] if labels.ndim else 0} labels for {n} utterances", dialogue=d.id)
        spk = d.speaker_ids()
        ei, et = build_graph(spk, pres, graph_cfg.past, graph_cfg.future,
                             graph_cfg.speaker_relations, graph_cfg.inter_modal)
        # local node m*n + i  ->  batch node m*N + off + i
        edge_parts.append((ei // n) * n_total + off + ei % n)
        typ_parts.append(et)
        present_parts.append(pres)
        speaker_parts.append(spk)
        label_parts.append(labels)

    edge_index = np.concatenate(edge_parts, axis=1)
    return GraphBatch(
        features={m: torch.from_numpy(np.concatenate(feats[m])) for m in modalities},
        present=torch.from_numpy(np.concatenate(present_parts)),
        speakers=torch.from_numpy(np.concatenate(speaker_parts).astype(np.int64)),
        lengths=torch.from_numpy(lengths),
        labels=torch.from_numpy(np.concatenate(label_parts)),
        edge_index=torch.from_numpy(np.ascontiguousarray(edge_index, dtype=np.int64)),
        edge_type=torch.from_numpy(np.concatenate(typ_parts).astype(np.int64)),
        modalities=modalities,
        dialogue_ids=[str(d.id) for d in dialogues],
    )


def drop_context(batch: GraphBatch, p: float, rng: np.random.Generator) -> GraphBatch:
    """Context dropout (``train.context_dropout``): a copy of ``batch`` in which each node, with
    probability ``p``, has no incoming edges (its state is then its own features through the
    RGCN's root weight). ``p == 0`` returns ``batch`` unchanged.

    Shapes: ``edge_index`` (2, E) -> (2, E') with E' <= E, ``edge_type`` (E,) -> (E',).
    """
    if p <= 0.0:
        return batch
    n_nodes = len(batch.modalities) * int(batch.lengths.sum())
    alone = torch.from_numpy(rng.random(n_nodes) < p).to(batch.edge_index.device)
    keep = ~alone[batch.edge_index[1]]
    return dataclasses.replace(batch, edge_index=batch.edge_index[:, keep], edge_type=batch.edge_type[keep])


def drop_modalities(dialogues: Sequence[Dialogue], modalities: Sequence[str], p: float,
                    rng: np.random.Generator) -> list[Dialogue]:
    """Modality dropout (``train.modality_dropout``): copies of ``dialogues`` in which each
    utterance, with probability ``p``, loses one of its present ``modalities``, chosen uniformly;
    an utterance with only one present modality keeps it. A lost row becomes NaN, which
    :func:`collate` reads as missing (masked, no edges). ``p == 0`` returns the dialogues unchanged.
    """
    if p <= 0.0 or len(modalities) < 2:
        return list(dialogues)
    out = []
    for d in dialogues:
        feats = {m: np.asarray(d.features[m]) for m in modalities}
        present = np.stack([present_rows(feats[m]) for m in modalities], axis=1)  # (n, M)
        lose = (rng.random(len(d)) < p) & (present.sum(1) >= 2)
        if not lose.any():
            out.append(d)
            continue
        # a uniform choice among each utterance's present modalities
        score = np.where(present, rng.random(present.shape), -1.0)
        which = score.argmax(1)
        new = dict(d.features)
        for k, m in enumerate(modalities):
            rows = lose & (which == k)
            if rows.any():
                x = feats[m].astype(np.float32, copy=True)
                x[rows] = np.nan
                new[m] = x
        out.append(dataclasses.replace(d, features=new))
    return out

