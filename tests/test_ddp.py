"""Distributed training: `torchrun --nproc_per_node 2 -m train ...` with gloo on 2 CPU processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap

ROOT = Path(__file__).resolve().parents[1]


def test_shards_cover_every_dialogue_evenly():
    from train.trainer import DistEnv, _shard

    for n in (7, 8, 1):
        shards = [_shard(n, 42, DistEnv(rank=r, world=3)) for r in range(3)]
        assert len({len(s) for s in shards}) == 1  # equal batch counts: DDP would hang otherwise
        assert set().union(*map(set, shards)) == set(range(n))
    single = _shard(9, 42, DistEnv())
    assert sorted(single) == list(range(9))


def test_torchrun_two_cpu_processes(tmp_path):
    data = write_dialoguernn_iemocap(tmp_path / "IEMOCAP_features_raw.pkl", n_train=24, n_test=4, noise=0.6, seed=3)
    cfg = write_config(tmp_path / "cfg.yaml", tiny_config(train={"epochs": 6, "patience": 6}))
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train", "--config", str(cfg), "--data", str(data), "--out", str(out), "--seeds", "0", "1",
           "--no-progress", "--device", "cpu"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "process group: gloo, rank 0 of 2" in res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert [s["seed"] for s in metrics["seeds"]] == [0, 1]
    assert metrics["selected"]["valid"]["weighted_f1"] > 50.0  # it learned, as a single process does
    for name in ("model.safetensors", "config.yaml", "manifest.json", "confusion.png", "curves.png"):
        assert (out / name).is_file(), name

    # The written model is the selected one: evaluating it reproduces its validation figure.
    from train.evaluation import evaluate

    r = evaluate(str(out), str(data), "valid")
    assert r["weighted_f1"] == pytest.approx(metrics["selected"]["valid"]["weighted_f1"], abs=1e-6)
