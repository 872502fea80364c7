"""The fine-tuning run: train the LoRA layers and the head on cached frozen-layer outputs, keep
the epoch with the best validation weighted F1, checkpoint every ``checkpoint_every`` steps.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from train.encoder_tuning.checkpoint import CHECKPOINT_DIR, Progress, load_checkpoint, save_checkpoint
from train.encoder_tuning.directory import BEST_DIR, finalize
from train.encoder_tuning.examples import build_examples, epoch_batches
from train.encoder_tuning.model import BottomCache, ContextEncoder
from train.common import InputError
from train.features.text_context import ENCODER_JSON
from train.finetune_config import EncoderConfig

log = logging.getLogger("train.finetune")


@dataclass
class RunResult:
    out: Path
    finished: bool  # False when stopped by max_steps (a checkpoint remains)
    progress: Progress
    labels: list[str]


def _scheduler(optimizer, total: int, warmup: float):
    """Linear warm-up over ``warmup`` of the ``total`` steps, then linear decay to 0 (transformers')."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(round(total * warmup)), total)


def evaluate_split(model: ContextEncoder, cache: BottomCache, labels: np.ndarray, names: Sequence[str], batch_size: int = 128):
    """Head predictions on a cached split -> :class:`train.metrics.Scores`."""
    import torch

    from train.metrics import score

    model.train(False)
    preds = np.empty(len(labels), dtype=np.int64)
    order = np.argsort(cache.lengths, kind="stable")
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            h, mask = cache.batch(idx)
            preds[idx] = model.logits(model.top(h, mask)).argmax(1).cpu().numpy()
    return score(labels, preds, names)


def finetune(
    cfg: EncoderConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    force: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    corpus=None,
    device: str = "cpu",
    command: str = "",
) -> RunResult:
    """Fine-tune per ``cfg`` into ``out``; see the module docstring. ``corpus`` skips loading
    ``cfg.data.path``; ``max_steps`` stops after that many optimizer steps in total, leaving a
    checkpoint that ``resume=True`` continues."""
    import torch
    from tqdm.auto import tqdm

    out = Path(out)
    has_ckpt = (out / CHECKPOINT_DIR).is_dir()
    if resume and not has_ckpt:
        raise InputError("--resume: no checkpoint here to resume from (start without --resume)", path=str(out))
    if not resume and has_ckpt and not force:
        raise InputError("holds the checkpoint of an unfinished run: pass --resume to continue it, --force to start over, or another --out", path=str(out))
    if not resume and (out / ENCODER_JSON).is_file() and not force:
        raise InputError("already holds a fine-tuned encoder: pass --force to overwrite it, or another --out", path=str(out))
    if not resume and force:
        for sub in (CHECKPOINT_DIR, BEST_DIR):
            shutil.rmtree(out / sub, ignore_errors=True)

    if corpus is None:
        from train.data import load_corpus

        corpus = load_corpus(cfg.data.path, dataset=cfg.data.dataset)
    names = list(corpus.labels)
    train = build_examples(corpus, "train", cfg.context, cfg.train.max_train_dialogues)
    valid = build_examples(corpus, "valid", cfg.context)
    if not len(train):
        raise InputError("no labelled training utterances with text", path=corpus.source or None)
    if not len(valid):
        raise InputError("no labelled validation utterances with text; model selection needs a validation split", path=corpus.source or None)
    log.info("%s: train %d utterances, valid %d; context %d past turns (%s speakers), max %d tokens; LoRA r=%d on layers %s",
             cfg.name, len(train), len(valid), cfg.context.turns, cfg.context.speakers, cfg.context.max_length, cfg.lora.r, cfg.adapted_layers)

    torch.manual_seed(cfg.train.seed)
    model = ContextEncoder(cfg, len(names), device)
    params = model.trainable()
    n_trainable = sum(p.numel() for p in params.values())
    enc_params = [p for k, p in params.items() if k.startswith("encoder.")]
    head_params = [p for k, p in params.items() if k.startswith("head.")]
    optimizer = torch.optim.AdamW(
        [{"params": enc_params, "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay},
         {"params": head_params, "lr": cfg.train.head_lr, "weight_decay": cfg.train.weight_decay}]
    )
    steps_per_epoch = math.ceil(len(train) / cfg.train.batch_size)
    scheduler = _scheduler(optimizer, steps_per_epoch * cfg.train.epochs, cfg.train.warmup)
    state = load_checkpoint(out, model, optimizer, scheduler, cfg) if resume else Progress()
    if resume:
        log.info("resuming at step %d (epoch %d, step %d of %d in it)", state.step, state.epoch + 1, state.step_in_epoch, steps_per_epoch)
    weight = None
    if cfg.train.class_weights:
        counts = np.bincount(train.labels, minlength=len(names)).astype(np.float64)
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(names), 0.0)
        weight = torch.tensor(w, dtype=torch.float32, device=model.device)

    session_start = time.perf_counter()
    elapsed0 = state.elapsed_s
    train_cache = BottomCache(model, train.texts, "frozen layers (train)", progress)
    valid_cache = BottomCache(model, valid.texts, "frozen layers (valid)", progress)
    log.info("trainable parameters: %d (LoRA %d, head %d); frozen-layer outputs cached in %.0f s",
             n_trainable, sum(p.numel() for p in enc_params), sum(p.numel() for p in head_params), time.perf_counter() - session_start)
    targets = torch.as_tensor(train.labels, device=model.device)
    all_params = list(params.values())

    def elapsed() -> float:
        return elapsed0 + time.perf_counter() - session_start

    while state.epoch < cfg.train.epochs and not state.stopped_early:
        batches = epoch_batches(train_cache.lengths, cfg.train.batch_size, cfg.train.seed, state.epoch)
        bar = tqdm(total=len(batches), initial=state.step_in_epoch, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", unit="step", disable=not progress)
        model.train(True)
        for idx in batches[state.step_in_epoch :]:
            h, mask = train_cache.batch(idx)
            loss = torch.nn.functional.cross_entropy(model.logits(model.top(h, mask)), targets[idx], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(all_params, cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            state.step += 1
            state.step_in_epoch += 1
            state.loss_sum += float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{state.loss_sum / state.step_in_epoch:.4f}")
            stop = max_steps is not None and state.step >= max_steps
            if stop or state.step % cfg.train.checkpoint_every == 0:
                state.elapsed_s = elapsed()
                save_checkpoint(out, model, optimizer, scheduler, state, cfg)
            if stop:
                bar.close()
                log.info("stopped after %d steps (max_steps); resume with --resume", state.step)
                return RunResult(out, False, state, names)
        bar.close()
        scores = evaluate_split(model, valid_cache, valid.labels, names)
        state.epoch += 1
        entry = {"epoch": state.epoch, "step": state.step, "train_loss": state.loss_sum / max(1, state.step_in_epoch),
                 "valid_accuracy": scores.accuracy, "valid_weighted_f1": scores.weighted_f1, "elapsed_s": round(elapsed(), 1)}
        state.history.append(entry)
        if scores.weighted_f1 > state.best_wf1:
            state.best_wf1, state.best_epoch, state.bad_epochs = scores.weighted_f1, state.epoch, 0
            model.save_adapter(out / BEST_DIR)
            (out / BEST_DIR / "scores.json").write_text(json.dumps(scores.to_dict()), encoding="utf-8")
        else:
            state.bad_epochs += 1
            state.stopped_early = state.bad_epochs >= cfg.train.patience
        log.info("epoch %d: train loss %.4f, valid acc %.2f wF1 %.2f (best %.2f at epoch %d), %.0f s so far",
                 state.epoch, entry["train_loss"], scores.accuracy, scores.weighted_f1, state.best_wf1, state.best_epoch, entry["elapsed_s"])
        state.step_in_epoch, state.loss_sum = 0, 0.0
        state.elapsed_s = elapsed()
        save_checkpoint(out, model, optimizer, scheduler, state, cfg)
    state.elapsed_s = elapsed()
    finalize(out, cfg, corpus, state, names, n_trainable, len(train), len(valid), command)
    return RunResult(out, True, state, names)
