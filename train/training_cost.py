"""Training cost on this machine: the work behind ``python -m train.bench`` (which prints it)."""
from __future__ import annotations

import time

from train.config import load_config_with_overrides


def training_cost(path: str, seed: int = 0, max_epochs: int | None = None, progress: bool = True) -> dict:
    """Train one seed of the config at ``path`` as ``python -m train`` does, timing each part.

    Returns the figures (JSON-able): feature preparation seconds, seconds per epoch (mean,
    min, max; validation scoring included), epochs run, full training seconds, valid wF1.
    """
    import torch

    from train.trainer import prepare_data, train_seed

    overrides = [f"train.epochs={max_epochs}"] if max_epochs else []
    cfg = load_config_with_overrides(path, overrides)
    t0 = time.perf_counter()
    data = prepare_data(cfg, cfg.data.path)
    prep = time.perf_counter() - t0
    run = train_seed(cfg, data, seed, progress=progress)
    per_epoch = [h["seconds"] for h in run.history]
    return {
        "config": path,
        "dataset": data.corpus.dataset,
        "train_dialogues": len(data.train),
        "train_utterances": sum(len(d) for d in data.train),
        "valid_utterances": sum(len(d) for d in data.valid),
        "features_seconds": round(prep, 2),
        "epochs_run": run.epochs_run,
        "epochs_max": cfg.train.epochs,
        "stopped_early": run.stopped_early,
        "seconds_per_epoch_mean": round(sum(per_epoch) / len(per_epoch), 3),
        "seconds_per_epoch_min": round(min(per_epoch), 3),
        "seconds_per_epoch_max": round(max(per_epoch), 3),
        "training_seconds": round(run.seconds, 2),
        "valid_wf1": round(run.valid.weighted_f1, 2),
        "torch_threads": torch.get_num_threads(),
    }
