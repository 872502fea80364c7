"""Training with an honest protocol: Adam, early stopping and model selection on validation only.

One call trains one model per seed (:func:`train_seeds`), keeps the best-on-validation model,
and reports mean ± std over seeds. The test split is never looked at here.

Distributed training: under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains a
DistributedDataParallel replica on its shard of the training dialogues (gloo on CPU, nccl on
GPU); every rank scores the whole validation split with identical weights, rank 0's figure is
broadcast so all ranks stop at the same epoch, and only rank 0 writes files.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train.config import Config
from train.data.corpus import Corpus, Dialogue
from train.common import InputError
from train.features.base import ExtractorIdentity
from train.metrics import Scores, aggregate, score

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Processes and devices


@dataclass
class DistEnv:
    """Where this process runs: rank/world (1 process = rank 0 of 1) and its torch device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup_env(device: str | None = None) -> DistEnv:
    """Read torchrun's environment; start the process group when there is more than one rank."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available")
        if world > 1:
            device = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(device))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend=backend)
            log.info("process group: %s, rank %d of %d", backend, rank, world)
        if device == "cpu":
            # The ranks share the machine's cores; oversubscribed threads slow everyone down.
            torch.set_num_threads(min(torch.get_num_threads(), max(1, (os.cpu_count() or 1) // world)))
    return DistEnv(rank=rank, world=world, local_rank=local_rank, device=device)


def teardown_env(env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            import gc

            # Drop DDP reducers (and the gloo work objects they hold) before the group goes away;
            # a gloo thread still holding one at interpreter exit aborts the process.
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Data preparation


@dataclass
class PreparedData:
    corpus: Corpus
    train: list[Dialogue]
    valid: list[Dialogue]
    dims: dict[str, int]  # modality -> feature width, in cfg.data.modalities order
    extractors: dict[str, ExtractorIdentity]


def check_modalities(cfg: Config, corpus: Corpus, source: str) -> dict[str, int]:
    """Modality -> width for the config's modalities; InputError for one the data lacks."""
    have = corpus.modalities
    dims = {}
    for m in cfg.data.modalities:
        if m not in have:
            present = ", ".join(f"{k} ({v}-d)" for k, v in have.items()) or "no feature arrays"
            how = (f"data.extractors names no extractor for it" if m not in cfg.data.extractors
                   else f"extractor {cfg.data.extractors[m]!r} gave none")
            raise InputError(f"config asks for modality {m!r}, but the data has {present} and {how}", path=source)
        dims[m] = have[m]
    return dims


def extractor_identities(cfg: Config, corpus: Corpus) -> dict[str, ExtractorIdentity]:
    """Identity of the extractor behind each modality the model uses (``precomputed`` if none)."""
    from train.model_dir import precomputed_identity

    out = {}
    for m in cfg.data.modalities:
        name = cfg.data.extractors.get(m)
        dim = corpus.modalities[m]
        if name is None:
            out[m] = precomputed_identity(m, dim, f"{corpus.format}:{Path(corpus.source).name}")
        else:
            out[m] = identity_of(name)
            if out[m].dim != dim:
                raise InputError(f"extractor {name!r} reports {out[m].dim}-d {m} features but "
                                 f"attached {dim}-d ones", path=corpus.source)
    return out


def identity_of(name: str) -> ExtractorIdentity:
    """The identity extractor ``name`` (default backend) gives, cheaply when the class can say."""
    from train.features.registry import get_extractor, resolve

    cls = resolve(name)
    if hasattr(cls, "default_identity"):
        return cls.default_identity()
    return get_extractor(name).identity


def prepare_data(cfg: Config, data_path: str | None = None, corpus: Corpus | None = None) -> PreparedData:
    """Load the corpus (unless given), attach extracted features, check splits and modalities."""
    if corpus is None:
        from train.data import load_corpus

        corpus = load_corpus(data_path or cfg.data.path, dataset=cfg.data.dataset)
    source = corpus.source or str(data_path or cfg.data.path)
    if cfg.data.asr_transcripts is not None:  # an empty list is refused there, not read as "none"
        from train.data.asr_views import add_asr_views

        corpus = add_asr_views(corpus, cfg.data.asr_transcripts, cfg.data.asr_mode)
    extractors = {m: n for m, n in cfg.data.extractors.items() if m in cfg.data.modalities}
    if extractors:
        from train.extract import attach_features

        log.info("attaching features %s (cache %s)", extractors, cfg.data.cache_dir)
        corpus = attach_features(corpus, extractors, cfg.data.cache_dir, media=cfg.data.media)
    for m, path in cfg.data.crossfit.items():
        if m not in extractors:
            raise InputError(f"data.crossfit names {m!r}, but no extractor of a modality in use makes it", path=source)
        from train.extract.crossfit import apply_crossfit

        apply_crossfit(corpus, m, path, identity_of(extractors[m]))
    dims = check_modalities(cfg, corpus, source)
    train = corpus.split("train")
    valid = corpus.split("valid")
    if not train:
        raise InputError("no training dialogues in this file", path=source)
    if not valid:
        raise InputError("no validation dialogues in this file; model selection needs a validation split",
                         path=source)
    if not any((d.labels >= 0).any() for d in valid):
        raise InputError("the validation split has no labelled utterances", path=source)
    return PreparedData(corpus, train, valid, dims, extractor_identities(cfg, corpus))


def class_weights(dialogues: Sequence[Dialogue], n_classes: int) -> np.ndarray:
    """(C,) float32 inverse-frequency weights over labelled training utterances, mean 1.

    A class absent from training gets weight 0 (it cannot be learned anyway).
    """
    counts = np.zeros(n_classes, dtype=np.float64)
    for d in dialogues:
        lab = d.labels[d.labels >= 0]
        counts += np.bincount(lab, minlength=n_classes)[:n_classes]
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    present = w > 0
    w[present] /= w[present].mean()
    return w.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# One seed


@dataclass
class SeedRun:
    """What one seed's training gave: best-on-validation weights and figures."""

    seed: int
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    valid: Scores
    history: list[dict[str, float]]
    seconds: float
    state: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 2),
            "seconds_per_epoch": round(self.seconds / max(1, self.epochs_run), 3),
            "valid": self.valid.to_dict(),
            "history": self.history,
        }


def _shard(n: int, epoch_seed: int, env: DistEnv) -> list[int]:
    """This rank's training dialogue indices for one epoch.

    All ranks draw the same permutation; it is padded (by wrapping) to a multiple of the world
    size so every rank gets the same number of batches — DDP hangs if one rank steps less.
    """
    perm = np.random.default_rng(epoch_seed).permutation(n).tolist()
    if env.world > 1:
        while len(perm) % env.world:  # (a loop: fewer dialogues than ranks needs several wraps)
            perm = perm + perm[:(-len(perm)) % env.world]
        perm = perm[env.rank::env.world]
    return perm


def evaluate_model(model, dialogues: Sequence[Dialogue], cfg: Config, labels: Sequence[str], device: str) -> Scores:
    from train.backends import predict_dialogues
    from train.metrics import dialogue_shifts

    probs = predict_dialogues(model, dialogues, cfg, device, batch_dialogues=max(cfg.train.batch_dialogues, 32))
    y_true = np.concatenate([d.labels for d in dialogues])
    y_pred = np.concatenate([p.argmax(axis=1) for p in probs])
    return score(y_true, y_pred, labels, shift=dialogue_shifts(dialogues))


def train_seed(cfg: Config, data: PreparedData, seed: int, env: DistEnv | None = None,
               progress: bool = True) -> SeedRun:
    """Train one model from ``seed``; early-stop on validation weighted F1; return the best epoch's state."""
    import torch
    from tqdm.auto import tqdm

    from train.batch import collate, drop_context, drop_modalities
    from train.model import ARIIGCN
    from train.objective import Objective

    from train.model.ensemble import member_config

    env = env or DistEnv()
    labels = data.corpus.labels
    cfg = member_config(cfg)  # one seed trains one model (a seed ensemble's member)
    set_seed(seed)
    model = ARIIGCN(cfg, data.dims, len(labels)).to(env.device)
    net = model
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[env.local_rank] if env.device.startswith("cuda") else None,
                  find_unused_parameters=True)  # switched-off parts (e.g. no adversary) get no grads
    weights = None
    if cfg.train.class_weights:
        weights = torch.from_numpy(class_weights(data.train, len(labels))).to(env.device)
    objective = Objective(net, cfg, class_weights=weights)

    best_f1, best_epoch, best_state, best_scores = -1.0, 0, None, None
    dropout_rng = np.random.default_rng([seed, env.rank])  # modality dropout draws
    history: list[dict[str, float]] = []
    stale = 0
    stopped_early = False
    t0 = time.perf_counter()
    bar = tqdm(range(1, cfg.train.epochs + 1), desc=f"seed {seed}", unit="epoch", leave=True,
               disable=not (progress and env.is_main), dynamic_ncols=True)
    epoch = 0
    for epoch in bar:
        te = time.perf_counter()
        model.train()
        order = _shard(len(data.train), seed * 100_003 + epoch, env)
        bs = cfg.train.batch_dialogues
        loss_sum, steps = 0.0, 0
        parts: dict[str, float] = {}
        for i in range(0, len(order), bs):
            dialogues = drop_modalities([data.train[j] for j in order[i:i + bs]], cfg.data.modalities,
                                        cfg.train.modality_dropout, dropout_rng)
            batch = collate(dialogues, cfg.data.modalities, cfg.graph).to(env.device)
            batch = drop_context(batch, cfg.train.context_dropout, dropout_rng)
            out = objective.step(batch)
            loss_sum += float(out["loss"])
            for k, v in out.items():
                parts[k] = parts.get(k, 0.0) + float(v)
            steps += 1
        train_loss = loss_sum / max(1, steps)
        if env.distributed:
            import torch.distributed as dist

            t = torch.tensor([train_loss], dtype=torch.float64)
            dist.all_reduce(t)
            train_loss = float(t.item()) / env.world
        scores = evaluate_model(model, data.valid, cfg, labels, env.device)
        wf1 = scores.weighted_f1
        if env.distributed:
            import torch.distributed as dist

            t = torch.tensor([wf1], dtype=torch.float64)
            dist.broadcast(t, 0)  # identical weights give identical figures; this makes it certain
            wf1 = float(t.item())
        history.append({"epoch": epoch, "train_loss": round(train_loss, 5), "valid_wf1": round(wf1, 3),
                        "valid_acc": round(scores.accuracy, 3), "seconds": round(time.perf_counter() - te, 3),
                        **{f"loss_{k}": round(v / max(1, steps), 5) for k, v in parts.items() if k != "loss"}})
        if epoch < cfg.train.select_from:
            pass  # warm-up: trained and logged, never selected, no patience spent
        elif wf1 > best_f1:
            best_f1, best_epoch, best_scores, stale = wf1, epoch, scores, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
        bar.set_postfix(loss=f"{train_loss:.3f}", val_wF1=f"{wf1:.2f}", best=f"{best_f1:.2f}@{best_epoch}" if best_epoch else "warm-up")
        log.debug("seed %d epoch %d: loss %.4f valid wF1 %.2f acc %.2f", seed, epoch, train_loss, wf1, scores.accuracy)
        if stale >= cfg.train.patience:
            stopped_early = True
            break
    bar.close()
    seconds = time.perf_counter() - t0
    assert best_scores is not None and best_state is not None
    log.info("seed %d: %s after %d epochs (%.1f s), best epoch %d: valid wF1 %.2f, acc %.2f",
             seed, f"stopped early (patience {cfg.train.patience})" if stopped_early else "ran all epochs",
             epoch, seconds, best_epoch, best_scores.weighted_f1, best_scores.accuracy)
    return SeedRun(seed=seed, best_epoch=best_epoch, epochs_run=epoch, stopped_early=stopped_early,
                   valid=best_scores, history=history, seconds=seconds, state=best_state)


# ---------------------------------------------------------------------------------------------
# Several seeds


@dataclass
class TrainResult:
    runs: list[SeedRun]
    best: SeedRun
    summary: dict[str, Any]


def train_seeds(cfg: Config, data: PreparedData, seeds: Sequence[int], env: DistEnv | None = None,
                progress: bool = True) -> TrainResult:
    """Train one model per seed; keep the one with the best validation weighted F1."""
    if not seeds:
        raise InputError("no seeds given")
    env = env or DistEnv()
    if cfg.model.ensemble > 1 and len(seeds) != cfg.model.ensemble:
        raise InputError(f"model.ensemble is {cfg.model.ensemble}: train exactly that many seeds (got {len(seeds)})")
    from train.model.ensemble import is_ensemble

    if cfg.model.text_head_weight > 0:
        text_head_file(cfg)  # before minutes of training, not after
    runs = [train_seed(cfg, data, s, env, progress) for s in seeds]
    best = max(runs, key=lambda r: r.valid.weighted_f1)
    summary = {
        "selection": "validation weighted F1 (early stopping and seed choice); test split never used",
        "seeds": [r.to_dict() for r in runs],
        "valid": aggregate([r.valid for r in runs]),
        "selected": {"seed": best.seed, "epoch": best.best_epoch, "valid": best.valid.to_dict()},
    }
    if len(runs) > 1:
        ens = ensemble_scores(cfg, data, runs, env.device, text_head=False)
        summary["ensemble"] = {"seeds": [r.seed for r in runs], "valid": ens.to_dict(confusion=False)}
    shipped = shipped_runs(cfg, runs, best)
    if is_ensemble(cfg):  # every seed's model, probabilities averaged (and the text head mixed in)
        ens = ensemble_scores(cfg, data, shipped, env.device)
        summary["selected"] = {"seeds": [r.seed for r in shipped], "ensemble": True, "valid": ens.to_dict()}
        if cfg.model.text_head_weight > 0:
            summary["selected"]["text_head_weight"] = cfg.model.text_head_weight
    return TrainResult(runs, best, summary)


def shipped_runs(cfg: Config, runs: Sequence[SeedRun], best: SeedRun) -> list[SeedRun]:
    """The seeds the shipped model holds: all of a seed ensemble's, else the best one."""
    return list(runs) if cfg.model.ensemble > 1 else [best]


def text_head_file(cfg: Config) -> Path:
    """The emotion head of the fine-tuned encoder behind ``data.extractors.text`` (``model.text_head_weight``)."""
    from train.features.text_context import HEAD_FILE, encoder_head_file

    name = cfg.data.extractors.get("text")
    if not name:
        raise InputError("model.text_head_weight > 0 needs data.extractors.text to name a fine-tuned text encoder")
    path = encoder_head_file(name)
    if not path.is_file():
        raise InputError(f"model.text_head_weight > 0, but the encoder of {name!r} has no {HEAD_FILE} "
                         "(train.finetune writes it beside the adapter)", path=str(path))
    return path


def shipped_model(cfg: Config, data: PreparedData, runs: Sequence[SeedRun]):
    """The model to ship from ``runs``: :class:`ARIIGCN` of one run, or a :class:`SeedEnsemble` of
    them (with the text encoder's head loaded when ``model.text_head_weight`` > 0)."""
    from train.model import ARIIGCN, SeedEnsemble
    from train.model.ensemble import is_ensemble

    n_classes = len(data.corpus.labels)
    if not is_ensemble(cfg):
        model = ARIIGCN(cfg, data.dims, n_classes)
        model.load_state_dict(runs[0].state)
        return model
    model = SeedEnsemble(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ensemble=len(runs))),
                         data.dims, n_classes)
    for member, run in zip(model.members, runs):
        member.load_state_dict(run.state)
    if model.text_head is not None:
        model.text_head.load_head(text_head_file(cfg))
    return model


def ensemble_scores(cfg: Config, data: PreparedData, runs: Sequence[SeedRun], device: str = "cpu",
                    text_head: bool = True) -> Scores:
    """Validation scores of the seeds' averaged class probabilities (a seed ensemble), mixed with
    the text encoder's head when ``text_head`` and the config has one."""
    from train.backends import predict_dialogues
    from train.metrics import dialogue_shifts

    if not text_head:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, text_head_weight=0.0))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ensemble=len(runs)))
    model = shipped_model(cfg, data, runs).to(device)
    probs = predict_dialogues(model, data.valid, cfg, device, batch_dialogues=max(cfg.train.batch_dialogues, 32))
    y_true = np.concatenate([d.labels for d in data.valid])
    y_pred = np.concatenate([p.argmax(axis=1) for p in probs])
    return score(y_true, y_pred, data.corpus.labels, shift=dialogue_shifts(data.valid))


def split_stats(dialogues: Sequence[Dialogue]) -> dict[str, int]:
    return {"dialogues": len(dialogues), "utterances": int(sum(len(d) for d in dialogues)),
            "labelled": int(sum(int((d.labels >= 0).sum()) for d in dialogues))}


def write_outputs(out_dir: Path, cfg: Config, data: PreparedData, result: TrainResult, env: DistEnv,
                  command: str = "") -> Path:
    """Write the selected model, its config/manifest, metrics.json and the two PNGs into ``out_dir``."""
    from train.model.ensemble import is_ensemble
    from train.model_dir import CONFUSION_PNG, CURVES_PNG, ModelManifest, save_model_dir
    from train.plots import plot_confusion, plot_curves

    labels = data.corpus.labels
    model = shipped_model(cfg, data, shipped_runs(cfg, result.runs, result.best))
    manifest = ModelManifest(name=cfg.name, dataset=data.corpus.dataset, labels=list(labels), dims=dict(data.dims),
                             extractors=data.extractors, past=cfg.graph.past, future=cfg.graph.future)
    metrics = {
        "name": cfg.name,
        "dataset": data.corpus.dataset,
        "data": data.corpus.source,
        "command": command,
        "splits": {"train": split_stats(data.train), "valid": split_stats(data.valid)},
        "world_size": env.world,
        "device": env.device,
        **result.summary,
    }
    out_dir = Path(out_dir)
    save_model_dir(out_dir, model, cfg, manifest, metrics)
    sel = result.best
    if is_ensemble(cfg):
        ens = result.summary["selected"]["valid"]
        what = f"ensemble of {len(result.runs)} seeds" if cfg.model.ensemble > 1 else f"seed {sel.seed}"
        if cfg.model.text_head_weight > 0:
            what += f" + text head {cfg.model.text_head_weight:g}"
        plot_confusion(ens["confusion"], labels, out_dir / CONFUSION_PNG,
                       title=f"{cfg.name}: validation, {what} (wF1 {ens['weighted_f1']:.2f})")
    else:
        plot_confusion(sel.valid.confusion, labels, out_dir / CONFUSION_PNG,
                       title=f"{cfg.name}: validation, seed {sel.seed} (wF1 {sel.valid.weighted_f1:.2f})")
    plot_curves({f"seed {r.seed}": r.history for r in result.runs}, out_dir / CURVES_PNG,
                title=f"{cfg.name}: training loss and validation wF1 (★ = selected epoch)")
    return out_dir


@dataclass
class TrainingRun:
    """What :func:`run_training` returns to the process that wrote the model directory."""

    out: Path
    labels: list[str]
    result: TrainResult


def run_training(cfg: Config, out: str | Path, *, device: str | None = None, progress: bool = True,
                 command: str = "") -> TrainingRun | None:
    """Train every seed of ``cfg`` and write the kept model's directory to ``out``.

    Sets up (and tears down) the process group when launched by ``torchrun``; only the main
    process writes and gets a :class:`TrainingRun`, the others get None.
    """
    out = Path(out)
    env = setup_env(device)
    try:
        data = prepare_data(cfg, cfg.data.path)
        log.info("data %s (%s, %s layout): train %d dialogues / %d utterances, valid %d / %d; modalities %s",
                 data.corpus.source, data.corpus.dataset, data.corpus.format, len(data.train),
                 sum(len(d) for d in data.train), len(data.valid), sum(len(d) for d in data.valid),
                 ", ".join(f"{m} {d}-d" for m, d in data.dims.items()))
        for note in data.corpus.notes:
            log.info("data note: %s", note)
        log.info("training %s on %s (%d process%s), seeds %s", cfg.name, env.device, env.world,
                 "es" if env.world > 1 else "", cfg.train.seeds)
        result = train_seeds(cfg, data, cfg.train.seeds, env, progress=progress)
        if not env.is_main:
            return None
        write_outputs(out, cfg, data, result, env, command=command)
        log.info("wrote model directory %s (selected seed %d, epoch %d)", out, result.best.seed,
                 result.best.best_epoch)
        return TrainingRun(out, list(data.corpus.labels), result)
    finally:
        teardown_env(env)
