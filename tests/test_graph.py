"""The conversation graph (train.graph): edges by hand, relation types, masking, the window property."""
from __future__ import annotations

import numpy as np
import pytest

from train.graph import (ConversationWindow, build_graph, num_relations, present_rows, receptive_field, relation_names,
                         window_size)


def edges(speakers, present, past, future, **kw) -> set[tuple[int, int, int]]:
    ei, et = build_graph(np.asarray(speakers), np.asarray(present, bool), past, future, **kw)
    assert ei.dtype == np.int64 and et.dtype == np.int64 and ei.shape == (2, et.shape[0])
    out = {(int(s), int(d), int(t)) for (s, d), t in zip(ei.T, et)}
    assert len(out) == et.shape[0], "duplicate edges"
    return out


# Three utterances, speakers A B A, text + audio: text nodes 0 1 2, audio nodes 3 4 5.
SPK = [0, 1, 0]
ALL = np.ones((3, 2), bool)
INTER = {(0, 3, 8), (1, 4, 8), (2, 5, 8), (3, 0, 9), (4, 1, 9), (5, 2, 9)}  # text->audio = 8, audio->text = 9


def test_causal_edges_by_hand():
    # past=1: j = i-1 -> i; speakers always differ (type past:other = 1; audio offset 4)
    assert edges(SPK, ALL, past=1, future=0) == {(0, 1, 1), (1, 2, 1), (3, 4, 5), (4, 5, 5)} | INTER


def test_causal_past2_same_speaker():
    # utterance 0 -> 2 has the same speaker: type past:same = 0 (text), 4 (audio)
    assert edges(SPK, ALL, past=2, future=0) == {(0, 1, 1), (1, 2, 1), (0, 2, 0),
                                                 (3, 4, 5), (4, 5, 5), (3, 5, 4)} | INTER


def test_bidirectional_edges_by_hand():
    future = {(1, 0, 3), (2, 1, 3), (4, 3, 7), (5, 4, 7)}  # future:other = 3 (+4 for audio)
    assert edges(SPK, ALL, past=1, future=1) == {(0, 1, 1), (1, 2, 1), (3, 4, 5), (4, 5, 5)} | future | INTER


def test_without_speaker_relations_and_inter_modal():
    got = edges(SPK, ALL, past=1, future=1, speaker_relations=False, inter_modal=False)
    # types: 2*m + (0 past, 1 future)
    assert got == {(0, 1, 0), (1, 2, 0), (1, 0, 1), (2, 1, 1), (3, 4, 2), (4, 5, 2), (4, 3, 3), (5, 4, 3)}
    assert num_relations(2, speaker_relations=False, inter_modal=False) == 4


def test_missing_modality_has_no_edges():
    present = ALL.copy()
    present[1, 1] = False  # audio of utterance 1 = node 4
    got = edges(SPK, present, past=2, future=1)
    assert all(4 not in (s, d) for s, d, _ in got)
    # the text node of that utterance keeps its intra-modal edges
    assert (0, 1, 1) in got and (1, 2, 1) in got
    # audio 3 -> 5 still joined (skipping the missing one), same speaker
    assert (3, 5, 4) in got


def test_three_modalities_relation_ids():
    n_rel = num_relations(3)
    assert n_rel == 3 * 4 + 6 == len(relation_names(["text", "audio", "visual"]))
    ei, et = build_graph(np.array([0]), np.ones((1, 3), bool), past=3, future=3)
    # one utterance: only inter-modal edges, each ordered pair exactly once with its own type
    pairs = {(int(s), int(d)): int(t) for (s, d), t in zip(ei.T, et)}
    assert len(pairs) == 6 and sorted(pairs.values()) == list(range(12, 18))
    names = relation_names(["text", "audio", "visual"])
    for (s, d), t in pairs.items():
        assert names[t] == f"{['text', 'audio', 'visual'][s]}->{['text', 'audio', 'visual'][d]}"


def test_num_relations_fixed_and_types_in_range():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n, m = int(rng.integers(1, 12)), int(rng.integers(1, 4))
        _, et = build_graph(rng.integers(0, 3, n), rng.random((n, m)) < 0.8, 2, 1)
        assert et.size == 0 or (et.min() >= 0 and et.max() < num_relations(m))


def test_empty_and_bad_input():
    ei, et = build_graph(np.zeros(0, np.int64), np.zeros((0, 2), bool), 2, 0)
    assert ei.shape == (2, 0) and et.shape == (0,)
    with pytest.raises(ValueError, match="present"):
        build_graph(np.zeros(3), np.zeros((2, 1), bool), 1, 0)
    with pytest.raises(ValueError, match="past"):
        build_graph(np.zeros(3), np.zeros((3, 1), bool), -1, 0)


def test_receptive_field_and_window_size():
    assert receptive_field(4, 0, 2) == (8, 0)
    assert receptive_field(3, 2, 2) == (6, 4)
    assert window_size(4, 2) == 9 and window_size(0, 3) == 1


def _incoming(ei, et, n, targets):
    """{target utterance i: {(source utterance, modality pair, type)}} for targets given as utterance ids."""
    out = {}
    for (s, d), t in zip(ei.T, et):
        if d % n in targets:
            out.setdefault(int(d % n), set()).add((int(s % n), int(s // n), int(d // n), int(t)))
    return out


@pytest.mark.parametrize("future", [0, 2])
def test_window_graph_matches_full_graph(future):
    """Every node the newest utterance needs (distance <= (L-1)*past) has the same incoming edges."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        past, layers = int(rng.integers(0, 5)), int(rng.integers(1, 4))
        n_mod = int(rng.integers(1, 4))
        speakers = rng.integers(0, 3, n)
        present = rng.random((n, n_mod)) < 0.75
        ei, et = build_graph(speakers, present, past, future)
        # the runtime's window: utterances appended one by one, an absent modality a NaN row
        window = ConversationWindow(window_size(past, layers))
        mods = [f"m{m}" for m in range(n_mod)]
        for i in range(n):
            window.append({m: np.where(present[i, j], 1.0, np.nan)[None] for j, m in enumerate(mods)}, speakers[i])
        feats, wspk = window.arrays(mods)
        k = len(window)
        start = n - k
        assert k == min(n, window_size(past, layers))
        assert (wspk == speakers[start:]).all()
        wi, wt = build_graph(wspk, np.stack([present_rows(feats[m]) for m in mods], axis=1), past, future)
        needed = set(range(max(0, n - 1 - (layers - 1) * past), n))
        full = _incoming(ei, et, n, needed)
        win = {i + start: {(s + start, a, b, t) for s, a, b, t in e}
               for i, e in _incoming(wi, wt, k, {i - start for i in needed}).items()}
        assert win == full
        # and the window's edges are exactly the full graph's edges among the window's utterances
        full_in_window = {(int(s % n) - start, int(s // n), int(d % n) - start, int(d // n), int(t))
                          for (s, d), t in zip(ei.T, et) if s % n >= start and d % n >= start}
        assert full_in_window == {(int(s % k), int(s // k), int(d % k), int(d // k), int(t)) for (s, d), t in zip(wi.T, wt)}


def test_graph_module_does_not_import_torch():
    """The live runtime imports the graph builder without torch."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, train.graph; sys.exit(1 if 'torch' in sys.modules else 0)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
