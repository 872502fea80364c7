"""Emotion shifts: the gold label differs from the same speaker's previous labelled one."""
from __future__ import annotations

import numpy as np
import pytest

from train.metrics import aggregate, shift_mask, score


def test_shift_mask_follows_each_speaker():
    labels = np.array([0, 1, 0, 0, -1, 2, 2])
    speakers = ["A", "B", "A", "B", "A", "A", "B"]
    # A: 0, 0 (no shift), -1 (skipped), 2 (shift from 0) | B: 1, 0 (shift), 2 (shift)
    assert shift_mask(labels, speakers).tolist() == [False, False, False, True, False, True, True]


def test_shift_mask_refuses_misaligned_input():
    with pytest.raises(ValueError):
        shift_mask(np.array([0, 1]), ["A"])


def test_score_splits_accuracy_by_shift():
    y = np.array([0, 1, 0, 0, 2, 2])
    shift = np.array([False, False, True, True, True, False])
    pred = np.array([0, 1, 1, 0, 1, 2])
    s = score(y, pred, ["a", "b", "c"], shift=shift)
    assert s.shift_accuracy == pytest.approx(100 / 3) and s.no_shift_accuracy == 100.0 and s.n_shift == 3
    assert set(s.to_dict()) >= {"shift_accuracy", "no_shift_accuracy", "n_shift"}
    assert "shift_accuracy" not in score(y, pred, ["a", "b", "c"]).to_dict()
    agg = aggregate([s, s])
    assert agg["shift_accuracy"]["mean"] == pytest.approx(100 / 3)
