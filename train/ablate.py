"""``python -m train.ablate --config configs/iemocap.yaml --seeds 0 1 2``: the ablation table.

Trains the config as given ("full") and with one part switched off at a time, each over the
same seeds, and scores every variant on the **validation** split (mean ± std over seeds):

* no adversarial       ``adversarial.enabled: false``
* no intra contrastive ``contrastive.intra: false``
* no inter contrastive ``contrastive.inter: false``
* no graph (MLP only)  ``model.use_graph: false`` (per-utterance projection + classifier)
* logistic regression  scikit-learn, context-free, on the same per-utterance features
  (modalities concatenated), C=1, no tuning.

With a single modality (the text path) the adversarial and inter-modal parts have nothing to act
on; the table marks those rows "inert" rather than pretending they were measured.
Prints a markdown table; ``--out FILE`` also writes it, ``--json FILE`` the raw figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train.common import InputError, run_cli

log = logging.getLogger("train.ablate")

# name -> (label, overrides "section.key" -> value, inert-with-one-modality)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "full": ("full model", {}, False),
    "no-adversarial": ("without adversarial", {"adversarial.enabled": False}, True),
    "no-intra": ("without intra-modal contrastive", {"contrastive.intra": False}, False),
    "no-inter": ("without inter-modal contrastive", {"contrastive.inter": False}, True),
    "no-graph": ("without graph (MLP only)", {"model.use_graph": False}, False),
    "logreg": ("logistic regression, context-free", {}, False),
}


def variant_config(cfg, overrides: dict[str, Any]):
    from train.config import config_from_dict

    raw = cfg.to_dict()
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    return config_from_dict(raw, source=f"ablation of {cfg.name}")


def logreg_scores(data, seed: int):
    """Context-free baseline: one logistic regression over each utterance's own features."""
    from sklearn.linear_model import LogisticRegression

    from train.graph import present_rows
    from train.metrics import score

    def xy(dialogues):
        x = np.concatenate([np.concatenate([d.features[m] for m in data.dims], axis=1) for d in dialogues])
        y = np.concatenate([d.labels for d in dialogues])
        keep = (y >= 0) & present_rows(x)
        return x[keep], y[keep]

    xt, yt = xy(data.train)
    xv, yv = xy(data.valid)
    clf = LogisticRegression(C=1.0, max_iter=3000, random_state=seed)
    clf.fit(xt, yt)
    return score(yv, clf.predict(xv), data.corpus.labels)


def run_ablation(cfg, data, seeds: Sequence[int], variants: Sequence[str], progress: bool = True) -> list[dict]:
    from train.metrics import aggregate
    from train.trainer import train_seed

    single = len(cfg.data.modalities) == 1
    rows = []
    for name in variants:
        label, overrides, inert_single = VARIANTS[name]
        t0 = time.perf_counter()
        if name == "logreg":
            runs = [logreg_scores(data, s) for s in seeds]
            epochs = None
        else:
            vcfg = variant_config(cfg, overrides)
            seed_runs = [train_seed(vcfg, data, s, progress=progress) for s in seeds]
            runs = [r.valid for r in seed_runs]
            epochs = [r.best_epoch for r in seed_runs]
        agg = aggregate(runs)
        rows.append({"variant": name, "label": label, "overrides": overrides, "valid": agg,
                     "per_seed_wf1": [round(r.weighted_f1, 3) for r in runs], "best_epochs": epochs,
                     "inert": bool(single and inert_single), "seconds": round(time.perf_counter() - t0, 1)})
        log.info("%s: valid wF1 %.2f ± %.2f, acc %.2f ± %.2f (%.0f s)", label, agg["weighted_f1"]["mean"],
                 agg["weighted_f1"]["std"], agg["accuracy"]["mean"], agg["accuracy"]["std"], rows[-1]["seconds"])
    return rows


def markdown_table(rows: list[dict], title: str) -> str:
    from train.metrics import fmt_pm

    full = next((r for r in rows if r["variant"] == "full"), None)
    out = [title, "", "| variant | valid accuracy | valid weighted F1 | Δ wF1 vs full | note |",
           "|---|---|---|---|---|"]
    for r in rows:
        v = r["valid"]
        delta = "" if full is None or r is full else f"{v['weighted_f1']['mean'] - full['valid']['weighted_f1']['mean']:+.2f}"
        note = ""
        if r["inert"]:
            same = full is not None and r["per_seed_wf1"] == full["per_seed_wf1"]
            note = ("inert with one modality: identical to full" if same else
                    "inert with one modality (nothing to act on); the gap is seed/initialisation noise")
        if r["variant"] == "logreg":
            note = "each utterance's own features only; lbfgs is deterministic, so every seed agrees"
        out.append(f"| {r['label']} | {fmt_pm(v['accuracy'])} | {fmt_pm(v['weighted_f1'])} | {delta} | {note} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.ablate", description="Ablation table on the validation split.")
    p.add_argument("--config", required=True)
    p.add_argument("--data", help="corpus file (overrides data.path)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", help="also write the markdown table here")
    p.add_argument("--json", dest="json_out", help="also write the figures as JSON here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
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
    print(table)
    if args.out:
        from train.common import write_text_atomic

        write_text_atomic(Path(args.out), table + "\n")
    if args.json_out:
        from train.model_dir import write_json

        write_json(Path(args.json_out), {"config": cfg.to_dict(), "seeds": args.seeds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
