"""The fine-tuning run: train the LoRA layers and the head on cached frozen-layer outputs, keep
the epoch with the best validation weighted F1, checkpoint every ``checkpoint_every`` steps.

With ``train.crossfit_folds: k`` the run goes on after the encoder is written: the training
dialogues are split into k folds, and for each fold an encoder of the same config is trained on
the other folds (selected on the validation split like the main one) and embeds the fold it never
saw. The out-of-fold embeddings of every training utterance make ``crossfit.npz``
(:mod:`train.extract.crossfit`): the graph model then trains on features like those it meets at
validation and live, instead of features of an encoder that has learned their labels.

Every training run (the main one, each fold) checkpoints and resumes on its own; the frozen
layers' outputs are computed once and shared by all of them (:class:`BottomCache`, kept on disk).

Layout of ``out``::

    adapter_config.json, adapter_model.safetensors, head.safetensors, encoder.json, ...   the encoder
    checkpoint/, best/          the main run while it trains
    frozen/                     the frozen layers' outputs while the run is unfinished (or --frozen-cache DIR)
    folds/fold-<i>/             fold i's run (1-based): checkpoint/ while training, best/ (its adapter), oof.npz
    crossfit.npz                the cross-fitted training features (k > 1), written last
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

from train.encoder_tuning.checkpoint import CHECKPOINT_DIR, Progress, first_difference, load_checkpoint, save_checkpoint
from train.encoder_tuning.directory import BEST_DIR, finalize
from train.encoder_tuning.examples import build_examples, epoch_batches
from train.encoder_tuning.model import BottomCache, ContextEncoder
from train.common import InputError, atomic_file
from train.features.text_context import ENCODER_JSON
from train.finetune_config import EncoderConfig

log = logging.getLogger("train.finetune")

FROZEN_DIR = "frozen"
FOLDS_DIR = "folds"
OOF_FILE = "oof.npz"
CROSSFIT_FILE = "crossfit.npz"


@dataclass
class RunResult:
    out: Path
    finished: bool  # False when stopped by max_steps (a checkpoint remains)
    progress: Progress  # the main run's (while a fold trains: that fold's)
    labels: list[str]


def _scheduler(optimizer, total: int, warmup: float):
    """Linear warm-up over ``warmup`` of the ``total`` steps, then linear decay to 0 (transformers')."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(round(total * warmup)), total)


def embed_cache(model: ContextEncoder, cache: BottomCache, batch_size: int = 128) -> np.ndarray:
    """Sentence embeddings of every cached example through the adapted layers: (n, D) float32."""
    import torch

    model.train(False)
    out = np.empty((len(cache), model.dim), dtype=np.float32)
    order = np.argsort(cache.lengths, kind="stable")
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            h, mask = cache.batch(idx)
            out[idx] = model.top(h, mask).cpu().numpy()
    return out


def evaluate_split(model: ContextEncoder, cache: BottomCache, labels: np.ndarray, names: Sequence[str], batch_size: int = 128):
    """Head predictions on a cached split -> :class:`train.metrics.Scores`."""
    import torch

    from train.metrics import score

    emb = torch.from_numpy(embed_cache(model, cache, batch_size)).to(model.device)
    with torch.no_grad():
        preds = model.logits(emb).argmax(1).cpu().numpy()
    return score(labels, preds, names)


def fold_of(dialogue_ids: Sequence[str], k: int, seed: int) -> dict[str, int]:
    """Dialogue id -> fold in 0..k-1: the sorted ids in a seeded random order, dealt round-robin."""
    ids = sorted(set(dialogue_ids))
    if len(ids) < k:
        raise InputError(f"train.crossfit_folds {k} needs at least {k} training dialogues, found {len(ids)}")
    perm = np.random.default_rng([seed, k]).permutation(len(ids))
    return {ids[j]: i % k for i, j in enumerate(perm)}


def _train_run(cfg: EncoderConfig, run_dir: Path, model: ContextEncoder, train_cache: BottomCache, train_labels: np.ndarray,
               valid_cache: BottomCache, valid_labels: np.ndarray, names: Sequence[str], *, resume: bool,
               max_steps: int | None, progress: bool, desc: str = "") -> tuple[Progress, bool]:
    """Train ``model``'s LoRA layers and head; the best epoch's adapter ends in ``run_dir/best``.

    Checkpoints go to ``run_dir/checkpoint`` (``resume`` continues from it). Returns the progress
    and whether the run finished (False: stopped by ``max_steps``, a checkpoint remains)."""
    import torch
    from tqdm.auto import tqdm

    params = model.trainable()
    enc_params = [p for k, p in params.items() if k.startswith("encoder.")]
    head_params = [p for k, p in params.items() if k.startswith("head.")]
    optimizer = torch.optim.AdamW(
        [{"params": enc_params, "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay},
         {"params": head_params, "lr": cfg.train.head_lr, "weight_decay": cfg.train.weight_decay}]
    )
    steps_per_epoch = math.ceil(len(train_cache) / cfg.train.batch_size)
    scheduler = _scheduler(optimizer, steps_per_epoch * cfg.train.epochs, cfg.train.warmup)
    state = load_checkpoint(run_dir, model, optimizer, scheduler, cfg) if resume else Progress()
    if resume:
        log.info("%sresuming at step %d (epoch %d, step %d of %d in it)", desc, state.step, state.epoch + 1, state.step_in_epoch, steps_per_epoch)
    weight = None
    if cfg.train.class_weights:
        counts = np.bincount(train_labels, minlength=len(names)).astype(np.float64)
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(names), 0.0)
        weight = torch.tensor(w, dtype=torch.float32, device=model.device)
    targets = torch.as_tensor(train_labels, device=model.device)
    all_params = list(params.values())
    session_start = time.perf_counter()
    elapsed0 = state.elapsed_s

    def elapsed() -> float:
        return elapsed0 + time.perf_counter() - session_start

    while state.epoch < cfg.train.epochs and not state.stopped_early:
        batches = epoch_batches(train_cache.lengths, cfg.train.batch_size, cfg.train.seed, state.epoch)
        bar = tqdm(total=len(batches), initial=state.step_in_epoch, desc=f"{desc}epoch {state.epoch + 1}/{cfg.train.epochs}", unit="step", disable=not progress)
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
                save_checkpoint(run_dir, model, optimizer, scheduler, state, cfg)
            if stop:
                bar.close()
                log.info("%sstopped after %d steps (max_steps); resume with --resume", desc, state.step)
                return state, False
        bar.close()
        scores = evaluate_split(model, valid_cache, valid_labels, names)
        state.epoch += 1
        entry = {"epoch": state.epoch, "step": state.step, "train_loss": state.loss_sum / max(1, state.step_in_epoch),
                 "valid_accuracy": scores.accuracy, "valid_weighted_f1": scores.weighted_f1, "elapsed_s": round(elapsed(), 1)}
        state.history.append(entry)
        if scores.weighted_f1 > state.best_wf1:
            state.best_wf1, state.best_epoch, state.bad_epochs = scores.weighted_f1, state.epoch, 0
            model.save_adapter(run_dir / BEST_DIR)
            (run_dir / BEST_DIR / "scores.json").write_text(json.dumps(scores.to_dict()), encoding="utf-8")
        else:
            state.bad_epochs += 1
            state.stopped_early = state.bad_epochs >= cfg.train.patience
        log.info("%sepoch %d: train loss %.4f, valid acc %.2f wF1 %.2f (best %.2f at epoch %d), %.0f s so far",
                 desc, state.epoch, entry["train_loss"], scores.accuracy, scores.weighted_f1, state.best_wf1, state.best_epoch, entry["elapsed_s"])
        state.step_in_epoch, state.loss_sum = 0, 0.0
        state.elapsed_s = elapsed()
        save_checkpoint(run_dir, model, optimizer, scheduler, state, cfg)
    state.elapsed_s = elapsed()
    return state, True


def _check_state(out: Path, cfg: EncoderConfig, resume: bool, force: bool) -> None:
    """Refuse to overwrite or resume the wrong thing; with ``force`` clear what a new run rewrites."""
    k = cfg.train.crossfit_folds
    encoder_done = (out / ENCODER_JSON).is_file()
    complete = encoder_done and (not k or (out / CROSSFIT_FILE).is_file())
    unfinished = (out / CHECKPOINT_DIR).is_dir() or (out / FOLDS_DIR).is_dir() or (encoder_done and not complete)
    if resume and not unfinished:
        raise InputError("--resume: no checkpoint here to resume from (start without --resume)", path=str(out))
    if not resume and unfinished and not force:
        raise InputError("holds the checkpoint of an unfinished run: pass --resume to continue it, --force to start over, or another --out", path=str(out))
    if not resume and complete and not force:
        raise InputError("already holds a fine-tuned encoder: pass --force to overwrite it, or another --out", path=str(out))
    _check_encoder_config(out, cfg)
    if not resume and force:
        for sub in (CHECKPOINT_DIR, BEST_DIR, FOLDS_DIR, FROZEN_DIR):
            shutil.rmtree(out / sub, ignore_errors=True)
        for f in (ENCODER_JSON, CROSSFIT_FILE):
            (out / f).unlink(missing_ok=True)


def _check_encoder_config(out: Path, cfg: EncoderConfig) -> None:
    """An encoder already in ``out`` must have been made with ``cfg`` (its folds share the config)."""
    if (out / ENCODER_JSON).is_file():
        info = json.loads((out / ENCODER_JSON).read_text(encoding="utf-8"))
        diff = first_difference(info.get("training", {}).get("config", {}), cfg.to_dict())
        if diff:
            raise InputError(f"the encoder here was made with another config; it differs at {diff}", path=str(out))


def parse_part(part: str | None, cfg: EncoderConfig) -> str | int | None:
    """``None`` (everything), ``"main"`` (the encoder) or a fold index from ``"fold-<i>"`` (1-based, as logged)."""
    if part is None or part == "main":
        return part
    k = cfg.train.crossfit_folds
    if part.startswith("fold-") and part[5:].isdigit() and 1 <= int(part[5:]) <= k:
        return int(part[5:]) - 1
    raise InputError(f"unknown part {part!r}: expected main" + (f" or fold-1 .. fold-{k}" if k else " (this config has no cross-fitting folds)"))


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
    frozen_cache: str | os.PathLike | None = None,
    features_cache: str | os.PathLike | None = None,
    part: str | None = None,
) -> RunResult:
    """Fine-tune per ``cfg`` into ``out``; see the module docstring.

    ``corpus`` skips loading ``cfg.data.path``. ``max_steps`` stops the training run in progress
    after that many of its optimizer steps, leaving a checkpoint that ``resume=True`` continues.
    ``frozen_cache``: a directory that keeps the frozen layers' outputs for later runs (default:
    ``out/frozen``, removed when the run completes). ``features_cache``: when given, the
    finished encoder's features of the whole corpus are written there as :mod:`train.extract`'s
    cache file (computed from the cached frozen layers) by the run that finishes the encoder, so a
    graph model's training finds them.
    ``part``: ``"main"`` (the encoder only) or ``"fold-<i>"`` (one cross-fitting fold only), so
    that separate processes can train them side by side (give them a shared ``frozen_cache``);
    whichever finishes the last part writes ``crossfit.npz``. A part resumes from its own
    checkpoint with ``resume``.
    """
    import torch

    out = Path(out)
    which = parse_part(part, cfg)
    if which is None:
        _check_state(out, cfg, resume, force)
    else:
        _check_encoder_config(out, cfg)
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
    log.info("%s: %s base, train %d utterances, valid %d; context %d past turns (%s speakers), max %d tokens; LoRA r=%d on layers %s%s%s",
             cfg.name, cfg.base, len(train), len(valid), cfg.context.turns, cfg.context.speakers, cfg.context.max_length, cfg.lora.r,
             cfg.adapted_layers, f"; cross-fitting over {cfg.train.crossfit_folds} folds" if cfg.train.crossfit_folds else "",
             f"; this process: {part}" if part else "")

    torch.manual_seed(cfg.train.seed)
    model = ContextEncoder(cfg, len(names), device)
    params = model.trainable()
    n_trainable = sum(p.numel() for p in params.values())
    start = time.perf_counter()
    store = Path(frozen_cache) if frozen_cache is not None else out / FROZEN_DIR
    frozen = BottomCache(model, train.texts + valid.texts, "frozen layers", progress, store=store)
    train_cache = frozen.subset(range(len(train)))
    valid_cache = frozen.subset(range(len(train), len(train) + len(valid)))
    log.info("trainable parameters: %d (head %d); frozen-layer outputs of %d inputs ready in %.0f s (%s)",
             n_trainable, sum(p.numel() for k, p in params.items() if k.startswith("head.")), len(frozen), time.perf_counter() - start, store)

    state = None
    if which in (None, "main"):
        if not (out / ENCODER_JSON).is_file():
            has_ckpt = (out / CHECKPOINT_DIR).is_dir()
            if which == "main" and has_ckpt and not resume and not force:
                raise InputError("holds the checkpoint of an unfinished main run: pass --resume to continue it", path=str(out))
            state, finished = _train_run(cfg, out, model, train_cache, train.labels, valid_cache, valid.labels, names,
                                         resume=resume and has_ckpt, max_steps=max_steps, progress=progress)
            if not finished:
                return RunResult(out, False, state, names)
            finalize(out, cfg, corpus, state, names, n_trainable, len(train), len(valid), command)
        else:
            log.info("the encoder in %s is finished", out)
        if features_cache is not None:  # the encoder's features do not wait for the folds
            del model
            _write_features(cfg, out, corpus, frozen, train.texts + valid.texts, features_cache, device, progress)
            model = None
    del model
    folds = fold_of([did for did, _ in train.where], cfg.train.crossfit_folds, cfg.train.seed) if cfg.train.crossfit_folds else {}
    fold = np.asarray([folds[did] for did, _ in train.where], dtype=np.int64) if folds else None
    for f in ([which] if isinstance(which, int) else range(cfg.train.crossfit_folds) if which is None else []):
        fstate = _train_fold(cfg, out, f, fold, train, train_cache, valid, valid_cache, names, device=device, resume=resume or which is None,
                             force=force, max_steps=max_steps, progress=progress)
        if fstate is not None:
            return RunResult(out, False, fstate, names)
    if folds and not (out / CROSSFIT_FILE).is_file():
        if not _write_crossfit(cfg, out, corpus, train, fold, folds):
            return RunResult(out, False, state or _encoder_progress(out), names)
    finished = (out / ENCODER_JSON).is_file() and (not folds or (out / CROSSFIT_FILE).is_file())
    if finished and frozen_cache is None:
        shutil.rmtree(out / FROZEN_DIR, ignore_errors=True)
    return RunResult(out, finished, state or _encoder_progress(out), names)


def _encoder_progress(out: Path) -> Progress:
    """The main run's progress as its metrics.json recorded it (an empty one before it exists)."""
    f = out / "metrics.json"
    if not (out / ENCODER_JSON).is_file() or not f.is_file():
        return Progress()
    done = json.loads(f.read_text(encoding="utf-8"))
    return Progress(epoch=len(done["history"]), best_wf1=done["selection"]["weighted_f1"], best_epoch=done["selection"]["epoch"],
                    elapsed_s=done["seconds"], history=done["history"])


def _train_fold(cfg: EncoderConfig, out: Path, f: int, fold: np.ndarray, train, train_cache: BottomCache, valid, valid_cache: BottomCache,
                names: Sequence[str], *, device: str, resume: bool, force: bool, max_steps: int | None, progress: bool) -> Progress | None:
    """Train fold ``f``'s encoder (on the other folds) and embed fold ``f`` into ``folds/fold-<f+1>/oof.npz``.
    Returns the fold's progress when ``max_steps`` stopped it, else None."""
    import torch

    k = cfg.train.crossfit_folds
    fdir = out / FOLDS_DIR / f"fold-{f + 1}"
    held = np.flatnonzero(fold == f)
    if (fdir / OOF_FILE).is_file():
        return None
    has_ckpt = (fdir / CHECKPOINT_DIR).is_dir()
    if has_ckpt and not resume and not force:
        raise InputError(f"holds the checkpoint of an unfinished fold {f + 1}: pass --resume to continue it", path=str(fdir))
    inside = np.flatnonzero(fold != f)
    torch.manual_seed(cfg.train.seed)
    model = ContextEncoder(cfg, len(names), device)
    log.info("fold %d/%d: training on %d utterances, then embedding the %d of its own dialogues", f + 1, k, len(inside), len(held))
    state, finished = _train_run(cfg, fdir, model, train_cache.subset(inside), train.labels[inside], valid_cache, valid.labels, names,
                                 resume=has_ckpt and resume, max_steps=max_steps, progress=progress, desc=f"fold {f + 1}/{k} ")
    if not finished:
        return state
    model.load_adapter(fdir / BEST_DIR)
    rows = embed_cache(model, train_cache.subset(held))
    (fdir / "progress.json").write_text(json.dumps(state.__dict__, indent=1), encoding="utf-8")
    with atomic_file(fdir / OOF_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, index=held, embedding=rows)
    shutil.rmtree(fdir / CHECKPOINT_DIR, ignore_errors=True)
    log.info("fold %d/%d: kept epoch %d (valid wF1 %.2f)", f + 1, k, state.best_epoch, state.best_wf1)
    return None


def _write_crossfit(cfg: EncoderConfig, out: Path, corpus, train, fold: np.ndarray, folds: dict[str, int]) -> bool:
    """Assemble ``crossfit.npz`` from the folds' ``oof.npz`` once the encoder and every fold are
    finished; False (nothing written) while a part is missing."""
    from train.extract.crossfit import write_crossfit
    from train.features.text_context import encoder_identity

    k = cfg.train.crossfit_folds
    oofs = [out / FOLDS_DIR / f"fold-{f + 1}" / OOF_FILE for f in range(k)]
    missing = [f"fold-{f + 1}" for f, p in enumerate(oofs) if not p.is_file()] + ([] if (out / ENCODER_JSON).is_file() else ["main"])
    if missing:
        log.info("crossfit.npz waits for: %s", ", ".join(missing))
        return False
    emb = np.full((len(train), get_dim(cfg)), np.nan, dtype=np.float32)
    for f, oof in enumerate(oofs):
        with np.load(oof, allow_pickle=False) as z:
            if not np.array_equal(z["index"], np.flatnonzero(fold == f)):
                raise InputError(f"holds other utterances than fold {f + 1} of this config; start over with --force", path=str(oof))
            emb[z["index"]] = z["embedding"]
    write_crossfit(out / CROSSFIT_FILE, corpus, encoder_identity(out), train.where, emb, cfg.context.turns,
                   {"folds": k, "seed": cfg.train.seed, "fold_of_dialogue": folds})
    log.info("wrote %s: out-of-fold features of %d training utterances (%d folds)", out / CROSSFIT_FILE, len(train), k)
    return True


def get_dim(cfg: EncoderConfig) -> int:
    from train.features.text_context import get_base

    return get_base(cfg.base).dim


def _write_features(cfg: EncoderConfig, out: Path, corpus, frozen: BottomCache, texts: Sequence[str], cache_dir, device: str, progress: bool) -> None:
    """The finished encoder's features of the whole corpus into train.extract's cache in ``cache_dir``."""
    from train.encoder_tuning.model import CachedLayersExtractor
    from train.extract import cache_path, extract_corpus

    model = ContextEncoder(cfg, len(corpus.labels), device)
    model.load_adapter(out)
    ex = CachedLayersExtractor(model, out, frozen, texts)
    _, stats = extract_corpus(corpus, ex, cache_path(cache_dir, corpus, ex.identity), progress=progress)
    log.info("features of %s for %d utterances in %s (%d computed from the cached frozen layers or the full model)",
             ex.identity.name, stats.total, stats.path, stats.computed)
