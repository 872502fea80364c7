"""``python -m train --config configs/iemocap.yaml [--data PATH] [--out DIR] [--seeds 0 1 2]``

Trains one AR-IIGCN per seed on the training split, selects epochs and the kept model on the
validation split only, and writes a model directory (see :mod:`train.model_dir`) to ``--out``
(default ``runs/<config name>``). Under ``torchrun --nproc_per_node N -m train ...`` it trains
with DistributedDataParallel; rank 0 writes the outputs.

The command only parses arguments, sets up logging and prints; the run is
:func:`train.trainer.run_training`, the config and its ``--set`` overrides
:func:`train.config.load_config_with_overrides`.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from train.common import InputError, run_cli
from train.config import load_config_with_overrides


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0].strip("`"))
    p.add_argument("--config", required=True, help="YAML config (configs/<name>.yaml)")
    p.add_argument("--data", help="corpus file (overrides data.path in the config)")
    p.add_argument("--out", help="output model directory (default runs/<config name>)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds to train (overrides train.seeds)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.0005 (repeatable)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (on a busy 2-core machine 1 was "
                   "~5x faster than 2: oversubscribed threads spin)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config_with_overrides(args.config, args.overrides)
    if args.data:
        cfg.data.path = args.data
    if args.seeds:
        cfg.train.seeds = list(args.seeds)
    out = Path(args.out or Path("runs") / cfg.name)

    from train.trainer import run_training

    main_rank = os.environ.get("RANK", "0") == "0"  # torchrun sets RANK; log details on rank 0 only
    logging.basicConfig(level=(logging.DEBUG if args.verbose else logging.INFO) if main_rank else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    command = "python -m train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    run = run_training(cfg, out, device=args.device, progress=not args.no_progress, command=command)
    if run is not None:  # the main process (rank 0) wrote the model directory
        print_summary(cfg.name, run.labels, run.result)
    return 0


def print_summary(name: str, labels: Sequence[str], result) -> None:
    from train.metrics import fmt_pm

    agg = result.summary["valid"]
    print(f"\n{name}: validation figures over {agg['seeds']} seed(s) (percent)")
    print(f"{'seed':>6} {'epoch':>6} {'acc':>7} {'wF1':>7}")
    for r in result.runs:
        print(f"{r.seed:>6} {r.best_epoch:>6} {r.valid.accuracy:7.2f} {r.valid.weighted_f1:7.2f}")
    print(f"accuracy    {fmt_pm(agg['accuracy'])}")
    print(f"weighted F1 {fmt_pm(agg['weighted_f1'])}")
    if "shift_accuracy" in agg:
        print(f"emotion shifts {fmt_pm(agg['shift_accuracy'])} accuracy, the rest {fmt_pm(agg['no_shift_accuracy'])}")
    print("per-class F1: " + ", ".join(f"{k} {fmt_pm(v)}" for k, v in agg["per_class_f1"].items()))
    if "ensemble" in result.summary:
        ens = result.summary["ensemble"]["valid"]
        print(f"seed ensemble (averaged probabilities): accuracy {ens['accuracy']:.2f}, weighted F1 {ens['weighted_f1']:.2f}, "
              f"emotion shifts {ens['shift_accuracy']:.2f}")
    sel = result.summary["selected"]
    if sel.get("ensemble"):
        seeds = ", ".join(map(str, sel["seeds"]))
        kept = f"the ensemble of seeds {seeds}" if len(sel["seeds"]) > 1 else f"seed {seeds}"
        if "text_head_weight" in sel:
            v = sel["valid"]
            kept += (f" mixed with the text encoder's head (weight {sel['text_head_weight']:g}): accuracy {v['accuracy']:.2f}, "
                     f"weighted F1 {v['weighted_f1']:.2f}, emotion shifts {v['shift_accuracy']:.2f}")
        print(f"kept: {kept}")
    else:
        print(f"kept: seed {result.best.seed} (valid wF1 {result.best.valid.weighted_f1:.2f})")


if __name__ == "__main__":
    sys.exit(run_cli(main))
