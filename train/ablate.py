"""``python -m train.ablate --config C [--data F] --seeds 0 1 2 [--json]``: the ablation table.

Trains the config as given (``full``) and with one part switched off at a time (``no_adversarial``,
``no_intra``, ``no_inter``, ``no_graph``; plus a context-free ``logreg`` baseline), each over the
same seeds, and scores every variant on the **validation** split, mean ± std over seeds; with
several modalities also the modality probe and the scores with one modality missing at test time
(:mod:`train.ablation` holds the work). Prints a markdown table, or with ``--json`` one JSON object
``{"variants": {name: {...}}}``. ``--out FILE`` also writes the table, ``--json-out FILE`` the JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from train.common import InputError, run_cli

log = logging.getLogger("train.ablate")


def main(argv: Sequence[str] | None = None) -> int:
    from train.ablation import VARIANTS

    p = argparse.ArgumentParser(prog="python -m train.ablate", description="Ablation table on the validation split.")
    p.add_argument("--config", required=True)
    p.add_argument("--data", help="corpus file (overrides data.path)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", help="also write the markdown table here")
    p.add_argument("--json-out", help="also write the JSON object here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    from train.ablation import markdown_table, run_ablation, to_json
    from train.config import load_config_with_overrides
    from train.trainer import prepare_data

    cfg = load_config_with_overrides(args.config, args.overrides)
    if args.data:
        cfg.data.path = args.data
    if not args.seeds:
        raise InputError("--seeds needs at least one seed")
    data = prepare_data(cfg, cfg.data.path)
    rows = run_ablation(cfg, data, args.seeds, args.variants, progress=not args.no_progress)
    title = (f"Ablation: {cfg.name} ({', '.join(cfg.data.modalities)}; past {cfg.graph.past}, future "
             f"{cfg.graph.future}), validation split, mean ± std over seeds {' '.join(map(str, args.seeds))}")
    table = markdown_table(rows, title)
    report = {"config": cfg.name, "data": str(cfg.data.path), "split": "valid", "seeds": list(args.seeds), **to_json(rows)}
    print(json.dumps(report) if args.json else table)
    if args.out:
        from train.common import write_text_atomic

        write_text_atomic(Path(args.out), table + "\n")
    if args.json_out:
        from train.model_dir import write_json

        write_json(Path(args.json_out), report)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
