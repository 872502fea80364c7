"""``python -m train.bench``: training cost on this machine for the shipped IEMOCAP and MELD configs.

For each config: the time to build (or load cached) features, seconds per training epoch
(mean and range, validation scoring included), and the full training time of one seed until
early stopping, as ``python -m train`` runs it. Prints a table; ``--json FILE`` keeps the figures.
This is a benchmark that prints figures, not a test: nothing is asserted. The measuring is
:func:`train.training_cost.training_cost`; this command parses, sets up logging and prints.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Sequence

from train.common import run_cli
from train.training_cost import training_cost

DEFAULT_CONFIGS = ("configs/iemocap.yaml", "configs/meld.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n\n")[0].strip("`"))
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, help="cap the epochs (default: the config's, with early stopping)")
    p.add_argument("--json", dest="json_out", help="also write the figures as JSON here")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    rows = [training_cost(c, args.seed, args.max_epochs, not args.no_progress) for c in args.configs]
    cpu = platform.processor() or platform.machine()
    print(f"\nTraining cost, one seed, {os.cpu_count()} CPU cores ({cpu}), torch threads {rows[0]['torch_threads']}")
    print("| dataset | train utts | features (s) | s/epoch mean [min-max] | epochs run | full training (s) | valid wF1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['train_utterances']} | {r['features_seconds']:.1f} | "
              f"{r['seconds_per_epoch_mean']:.2f} [{r['seconds_per_epoch_min']:.2f}-{r['seconds_per_epoch_max']:.2f}] | "
              f"{r['epochs_run']}/{r['epochs_max']}{' (early stop)' if r['stopped_early'] else ''} | "
              f"{r['training_seconds']:.1f} | {r['valid_wf1']:.2f} |")
    print("features (s): loading the corpus and building or reading cached text features.")
    if args.json_out:
        from train.model_dir import write_json

        write_json(Path(args.json_out), {"cpu_count": os.cpu_count(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
