"""Resumable fine-tuning: where a run stands (:class:`Progress`) and its checkpoint.

A checkpoint holds the trainable weights (safetensors), the optimizer, scheduler and RNG state
(``torch.load(weights_only=True)``) and the progress with the config (JSON); it is written into
a temporary folder and renamed into place, so an interrupted write leaves the previous one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.encoder_tuning.model import ContextEncoder
from train.common import InputError, atomic_dir
from train.finetune_config import EncoderConfig

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
TRAINABLE_FILE = "trainable.safetensors"
OPTIM_FILE = "optim.pt"


@dataclass
class Progress:
    """Where a run stands; saved as JSON in the checkpoint."""

    step: int = 0  # optimizer steps done in total
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0
    loss_sum: float = 0.0  # this epoch's training loss so far (sum over steps)
    best_wf1: float = -1.0
    best_epoch: int = 0  # 1-based; 0 = none yet
    bad_epochs: int = 0
    stopped_early: bool = False
    elapsed_s: float = 0.0  # wall time over all sessions of this run
    history: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(out: Path, model: ContextEncoder, optimizer, scheduler, progress: Progress, cfg: EncoderConfig) -> None:
    import torch
    from safetensors.torch import save_file

    with atomic_dir(out / CHECKPOINT_DIR) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.trainable().items()}, str(tmp / TRAINABLE_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / OPTIM_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"progress": progress.__dict__, "config": cfg.to_dict()}, indent=1), encoding="utf-8")


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where two config dicts first differ ("train.lr (0.001 in the checkpoint, 0.002 now)"), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
            if d:
                return d
        return None
    return None if a == b else f"{where} ({a!r} in the checkpoint, {b!r} now)"


def load_checkpoint(out: Path, model: ContextEncoder, optimizer, scheduler, cfg: EncoderConfig) -> Progress:
    """Restore weights, optimizer, scheduler and RNG from ``out/checkpoint``; the config must match."""
    import torch
    from safetensors.torch import load_file

    ck = out / CHECKPOINT_DIR
    for f in (STATE_FILE, TRAINABLE_FILE, OPTIM_FILE):
        if not (ck / f).is_file():
            raise InputError(f"--resume: the checkpoint is missing {f}", path=str(ck))
    try:
        state = json.loads((ck / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"--resume: cannot read {STATE_FILE}: {e}", path=str(ck)) from None
    diff = first_difference(state.get("config", {}), cfg.to_dict())
    if diff:
        raise InputError(f"--resume: the checkpoint was made with another config; it differs at {diff}. Resume with the same config and --seed, or start a new --out", path=str(ck))
    weights = load_file(str(ck / TRAINABLE_FILE))
    params = model.trainable()
    if set(weights) != set(params):
        raise InputError("--resume: the checkpoint's trainable weights do not match this model", path=str(ck))
    with torch.no_grad():
        for k, p in params.items():
            if weights[k].shape != p.shape:
                raise InputError(f"--resume: {k} has shape {tuple(weights[k].shape)} in the checkpoint, {tuple(p.shape)} here", path=str(ck))
            p.copy_(weights[k])
    extra = torch.load(ck / OPTIM_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    return Progress(**state["progress"])
