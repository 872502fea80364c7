"""The conversation graph of AR-IIGCN: one node per (utterance, modality), typed edges.

numpy only: training (:mod:`train.batch`) and the live runtime's incremental graph both call
:func:`build_graph`, and the runtime imports this module without torch.

Nodes
    A window of ``n`` utterances and ``M`` modalities (``M`` = ``len(cfg.data.modalities)``, in
    config order) has ``M * n`` nodes; node ``m * n + i`` is modality ``m`` of utterance ``i``
    (modality-major). A node whose modality is absent for that utterance (``present[i, m]`` is
    False) exists as an index but touches no edge, so it can never influence another node: a
    missing modality is masked out of the graph, not zero-filled.

Edges (``source -> target``; a node's new state aggregates its incoming edges)
    * intra-modal: ``(m, j) -> (m, i)`` for every ``j`` in ``[i - past, i + future]``, ``j != i``,
      both nodes present. Relation type, per modality ``m``:

      - with ``speaker_relations``: ``4 * m + 2 * d + s`` where ``d = 0`` for a past neighbour
        (``j < i``), ``1`` for a future one (``j > i``), and ``s = 0`` when utterances ``i`` and
        ``j`` have the same speaker, ``1`` otherwise;
      - without: ``2 * m + d``.
    * inter-modal (with ``inter_modal``): ``(a, i) -> (b, i)`` for every ordered pair of distinct
      present modalities ``a != b`` of one utterance; relation type
      ``R_intra + a * (M - 1) + (b if b < a else b - 1)``, one type per ordered modality pair.

    No self loops: a node's own state enters through the GCN's root weight (see
    :class:`train.model.rgcn.RelationalGCN`). The relation count :func:`num_relations` depends
    only on ``M`` and the switches, never on the data, so trained weights fit any window; with
    ``future = 0`` the future types simply never occur.

Receptive field and windows
    An intra-modal edge moves information at most ``past`` utterances forward and ``future``
    backward per layer; inter-modal edges stay within one utterance. So after ``L`` layers the
    state of utterance ``i`` depends only on utterances ``[i - L*past, i + L*future]``
    (:func:`receptive_field`). For the *newest* utterance ``t`` of a sequence nothing lies after
    it, so its output depends only on the last ``K = L*past + 1`` utterances
    (:func:`window_size`); also every node whose state it needs at layer ``l >= 1`` lies at
    ``>= t - (L-1)*past``, so that node's full neighbourhood (and hence its per-relation mean
    normalisation) is inside the window too. Therefore the graph of the newest ``K`` utterances
    (:class:`ConversationWindow`) gives the newest utterance exactly the output that the graph of
    the whole conversation gives it. In causal mode (``future = 0``) an utterance's output never
    changes once computed, so a runtime that classifies each utterance as it arrives, over that
    window, reproduces the offline causal evaluation exactly, at a per-utterance cost that does
    not grow with the conversation.
"""
from __future__ import annotations

import collections
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "ConversationWindow",
    "build_graph",
    "intra_relations",
    "num_relations",
    "present_rows",
    "receptive_field",
    "relation_names",
    "window_size",
]


def intra_relations(speaker_relations: bool = True) -> int:
    """Intra-modal relation types per modality: 4 (same/other speaker x past/future) or 2 (past/future)."""
    return 4 if speaker_relations else 2


def num_relations(n_modalities: int, speaker_relations: bool = True, inter_modal: bool = True) -> int:
    """Number of relation types for ``n_modalities`` modalities; independent of the data.

    ``M * (4 or 2)`` intra-modal types plus ``M * (M - 1)`` inter-modal types when enabled.
    """
    if n_modalities < 1:
        raise ValueError(f"need at least one modality, got {n_modalities}")
    r = n_modalities * intra_relations(speaker_relations)
    if inter_modal:
        r += n_modalities * (n_modalities - 1)
    return r


def relation_names(modalities: list[str], speaker_relations: bool = True, inter_modal: bool = True) -> list[str]:
    """Human-readable name of each relation type id, e.g. ``"text:past:same"`` or ``"audio->text"``."""
    names = []
    for m in modalities:
        for d in ("past", "future"):
            if speaker_relations:
                names += [f"{m}:{d}:same", f"{m}:{d}:other"]
            else:
                names.append(f"{m}:{d}")
    if inter_modal:
        for a in modalities:
            names += [f"{a}->{b}" for b in modalities if b != a]
    return names


def receptive_field(past: int, future: int, layers: int) -> tuple[int, int]:
    """Utterances ``(back, ahead)`` an L-layer GCN output of one utterance can depend on.

    Utterance ``i`` depends on ``[i - layers*past, i + layers*future]`` only (0 layers: itself).
    """
    if past < 0 or future < 0 or layers < 0:
        raise ValueError("past, future and layers must be >= 0")
    return layers * past, layers * future


def window_size(past: int, layers: int) -> int:
    """``L*past + 1``: the newest utterances whose graph gives the newest one its exact output."""
    return receptive_field(past, 0, layers)[0] + 1


def _check(speakers: np.ndarray, present: np.ndarray, past: int, future: int) -> tuple[np.ndarray, np.ndarray]:
    speakers = np.asarray(speakers)
    present = np.asarray(present, dtype=bool)
    if speakers.ndim != 1:
        raise ValueError(f"speakers must be 1-D (n,), got shape {speakers.shape}")
    if present.ndim != 2 or present.shape[0] != speakers.shape[0]:
        raise ValueError(f"present must be (n, M) with n = {speakers.shape[0]}, got shape {present.shape}")
    if present.shape[1] < 1:
        raise ValueError("present must have at least one modality column")
    if past < 0 or future < 0:
        raise ValueError(f"past and future must be >= 0, got past={past}, future={future}")
    return speakers, present


def build_graph(
    speakers: np.ndarray,
    present: np.ndarray,
    past: int,
    future: int,
    speaker_relations: bool = True,
    inter_modal: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the graph of one dialogue (or window): see the module docstring for the rules.

    Args:
        speakers: (n,) int speaker id of each utterance (only equality matters).
        present: (n, M) bool, whether modality ``m`` of utterance ``i`` has features.
        past, future: intra-modal context window (``future = 0`` is causal).
        speaker_relations: distinguish same/other speaker in the relation type.
        inter_modal: add edges between the present modalities of each utterance.

    Returns:
        ``edge_index`` (2, E) int64 ``[source, target]`` over node ids ``m * n + i``, and
        ``edge_type`` (E,) int64 in ``[0, num_relations(M, speaker_relations, inter_modal))``.
        Edges are ordered by target modality, then target utterance, then source.
    """
    speakers, present = _check(speakers, present, past, future)
    n, n_mod = present.shape
    per_mod = intra_relations(speaker_relations)
    src_parts: list[np.ndarray] = []
    dst_parts: list[np.ndarray] = []
    typ_parts: list[np.ndarray] = []

    # Intra-modal: every (target i, offset k) with j = i + k in range and k != 0.
    offsets = np.array([k for k in range(-past, future + 1) if k != 0], dtype=np.int64)
    if n and offsets.size:
        i = np.repeat(np.arange(n, dtype=np.int64), offsets.size)
        j = i + np.tile(offsets, n)
        ok = (j >= 0) & (j < n)
        i, j = i[ok], j[ok]
        direction = (j > i).astype(np.int64)
        if speaker_relations:
            base = 2 * direction + (speakers[i] != speakers[j]).astype(np.int64)
        else:
            base = direction
        for m in range(n_mod):
            keep = present[i, m] & present[j, m]
            src_parts.append(m * n + j[keep])
            dst_parts.append(m * n + i[keep])
            typ_parts.append(per_mod * m + base[keep])

    # Inter-modal: both directions between distinct present modalities of one utterance.
    if inter_modal and n_mod > 1:
        r0 = n_mod * per_mod
        u = np.arange(n, dtype=np.int64)
        for b in range(n_mod):  # target modality
            for a in range(n_mod):  # source modality
                if a == b:
                    continue
                keep = present[:, a] & present[:, b]
                src_parts.append(a * n + u[keep])
                dst_parts.append(b * n + u[keep])
                typ_parts.append(np.full(int(keep.sum()), r0 + a * (n_mod - 1) + (b if b < a else b - 1), np.int64))

    if not src_parts:
        return np.zeros((2, 0), np.int64), np.zeros(0, np.int64)
    src, dst, typ = np.concatenate(src_parts), np.concatenate(dst_parts), np.concatenate(typ_parts)
    order = np.lexsort((src, dst))  # stable, deterministic order: by target node, then source
    return np.stack([src[order], dst[order]]).astype(np.int64), typ[order].astype(np.int64)


def present_rows(features: np.ndarray) -> np.ndarray:
    """``(..., d)`` features -> ``(...)`` bool: a row is present when all its values are finite.

    The one rule for a missing modality (a NaN row), used by training batches, the export's
    feeds and the runtime alike.
    """
    return np.isfinite(np.asarray(features)).all(axis=-1)


class ConversationWindow:
    """The newest ``size`` utterances of a conversation, oldest first: what a live step feeds the
    model, and what a causal evaluation utterance by utterance feeds it.

    With ``size = window_size(past, layers)`` the graph of the window gives the newest utterance
    exactly its output on the whole conversation (module docstring); older utterances drop out.

    ``append(features, speaker)``: ``features[m]`` (d_m,) float32, all-NaN when modality ``m``
    is absent; ``arrays(modalities)`` -> features ``{m: (K, d_m)}`` and speakers ``(K,)``.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a conversation window holds >= 1 utterance, got {size}")
        self.size = int(size)
        self._turns: collections.deque[tuple[dict[str, np.ndarray], int]] = collections.deque(maxlen=self.size)

    def __len__(self) -> int:
        return len(self._turns)

    def append(self, features: Mapping[str, np.ndarray], speaker: int) -> None:
        self._turns.append(({m: np.asarray(v, np.float32).reshape(-1) for m, v in features.items()}, int(speaker)))

    def arrays(self, modalities: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        feats = {m: np.stack([f[m] for f, _ in self._turns]) for m in modalities}
        return feats, np.array([s for _, s in self._turns], np.int64)

    def copy(self) -> "ConversationWindow":
        """An independent window with the same utterances (appending to it leaves this one as is)."""
        other = ConversationWindow(self.size)
        other._turns.extend(self._turns)
        return other

    def relabel(self, mapping: Mapping[int, int]) -> None:
        """Speaker ids found to be one speaker (``{old: new}``) are re-labelled in the window."""
        self._turns = collections.deque(((f, int(mapping.get(s, s))) for f, s in self._turns), maxlen=self.size)
