"""Ablations of AR-IIGCN: train the config with one part switched off at a time and score each variant.

Variants (each trained over the same seeds, scored on the **validation** split):

* ``full``            the config as given
* ``no_adversarial``  ``adversarial.enabled: false``
* ``no_intra``        ``contrastive.intra: false``
* ``no_inter``        ``contrastive.inter: false``
* ``no_graph``        ``model.use_graph: false`` (per-utterance projection + classifier)
* ``logreg``          scikit-learn logistic regression, context-free, on each utterance's own
  features (modalities concatenated; rows with a missing modality are left out), C=1, no tuning.

Per variant and seed: accuracy and weighted F1; ``modality_probe_accuracy``, a fresh linear probe
of the modality from the representations the graph receives, fitted on training utterances and
scored on validation ones (:mod:`train.representations`; needs two or more modalities); the
emotion cosine gaps of the node states; and, with two or more modalities, the same figures with
one modality missing (masked out for every validation utterance) at test time. :func:`summarise`
turns them into mean ± std over seeds. With a single modality the adversarial and inter-modal
parts have nothing to act on; such rows are marked ``inert``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

import numpy as np

from train.data.corpus import Dialogue
from train.metrics import Scores, aggregate, fmt_pm, mean_std

log = logging.getLogger(__name__)

# name -> (label, overrides "section.key" -> value, inert-with-one-modality)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "full": ("full model", {}, False),
    "no_adversarial": ("without adversarial", {"adversarial.enabled": False}, True),
    "no_intra": ("without intra-modal contrastive", {"contrastive.intra": False}, False),
    "no_inter": ("without inter-modal contrastive", {"contrastive.inter": False}, True),
    "no_graph": ("without graph (MLP only)", {"model.use_graph": False}, False),
    "logreg": ("logistic regression, context-free", {}, False),
}


def variant_config(cfg, overrides: dict[str, Any]):
    from train.config import config_from_dict

    raw = cfg.to_dict()
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    return config_from_dict(raw, source=f"ablation of {cfg.name}")


def without_modality(dialogues: Sequence[Dialogue], modality: str) -> list[Dialogue]:
    """Copies of ``dialogues`` whose ``modality`` rows are all NaN (missing, masked out of the graph)."""
    return [dataclasses.replace(d, features={**d.features, modality: np.full_like(d.features[modality], np.nan)})
            for d in dialogues]


def logreg_scores(data, seed: int, dialogues: Sequence[Dialogue] | None = None) -> Scores:
    """Context-free baseline: one logistic regression over each utterance's own features."""
    from sklearn.linear_model import LogisticRegression

    from train.graph import present_rows
    from train.metrics import score

    def xy(ds):
        x = np.concatenate([np.concatenate([d.features[m] for m in data.dims], axis=1) for d in ds])
        y = np.concatenate([d.labels for d in ds])
        keep = (y >= 0) & present_rows(x)
        return x[keep], y[keep]

    xt, yt = xy(data.train)
    xv, yv = xy(data.valid if dialogues is None else dialogues)
    clf = LogisticRegression(C=1.0, max_iter=3000, random_state=seed)
    clf.fit(xt, yt)
    return score(yv, clf.predict(xv), data.corpus.labels)


def score_model(model, cfg, data, dialogues: Sequence[Dialogue]) -> Scores:
    from train.trainer import evaluate_model

    return evaluate_model(model, dialogues, cfg, data.corpus.labels, "cpu")


def measure_seed(cfg, data, seed: int, progress: bool = True) -> dict[str, Any]:
    """Train one seed of ``cfg`` and measure it: scores, probe, gaps, scores with a modality missing."""
    from train.model import ARIIGCN
    from train.representations import collect, emotion_cosine_gaps, probe_accuracy
    from train.trainer import train_seed

    run = train_seed(cfg, data, seed, progress=progress)
    model = ARIIGCN(cfg, data.dims, len(data.corpus.labels))
    model.load_state_dict(run.state)
    model.eval()
    held_out = collect(model, data.valid, cfg)
    out: dict[str, Any] = {"seed": seed, "best_epoch": run.best_epoch, "valid": run.valid,
                           "gaps": emotion_cosine_gaps(held_out)}
    if len(cfg.data.modalities) > 1:
        out["probe"] = probe_accuracy(collect(model, data.train, cfg), held_out, seed=seed)
        out["missing"] = {m: score_model(model, cfg, data, without_modality(data.valid, m)) for m in cfg.data.modalities}
    return out


def run_ablation(cfg, data, seeds: Sequence[int], variants: Sequence[str], progress: bool = True) -> list[dict]:
    """One row per variant: its per-seed measurements (:func:`measure_seed`) and :func:`summarise`'s figures."""
    single = len(cfg.data.modalities) == 1
    rows = []
    for name in variants:
        label, overrides, inert_single = VARIANTS[name]
        t0 = time.perf_counter()
        if name == "logreg":
            runs = [{"seed": s, "valid": logreg_scores(data, s), "best_epoch": None} for s in seeds]
            if not single:
                for r in runs:
                    r["missing"] = {m: logreg_scores(data, r["seed"], without_modality(data.valid, m))
                                    for m in cfg.data.modalities}
        else:
            vcfg = variant_config(cfg, overrides)
            runs = [measure_seed(vcfg, data, s, progress=progress) for s in seeds]
        row = {"variant": name, "label": label, "overrides": overrides, "inert": bool(single and inert_single),
               "seconds": round(time.perf_counter() - t0, 1), **summarise(runs)}
        rows.append(row)
        probe = row.get("modality_probe_accuracy")
        log.info("%s: valid wF1 %s, acc %s%s (%.0f s)", label, fmt_pm(row["weighted_f1"]), fmt_pm(row["accuracy"]),
                 f", modality probe {fmt_pm(probe)}" if probe else "", row["seconds"])
    return rows


def summarise(runs: list[dict]) -> dict[str, Any]:
    """Mean ± std over seeds of every figure :func:`measure_seed` gives (percent; gaps are cosines)."""
    agg = aggregate([r["valid"] for r in runs])
    out: dict[str, Any] = {"weighted_f1": agg["weighted_f1"], "accuracy": agg["accuracy"], "macro_f1": agg["macro_f1"],
                           "seeds": [r["seed"] for r in runs],
                           "per_seed_wf1": [round(r["valid"].weighted_f1, 3) for r in runs],
                           "best_epochs": [r["best_epoch"] for r in runs]}
    if all("probe" in r for r in runs):
        out["modality_probe_accuracy"] = mean_std([r["probe"] for r in runs])
        out["per_seed_probe"] = [round(r["probe"], 2) for r in runs]
    if all("gaps" in r for r in runs):
        out["emotion_cosine_gap"] = {k: mean_std(v) if np.isfinite(v).all() else None  # inter: none with one modality
                                     for k in ("inter", "intra") for v in [[r["gaps"][k] for r in runs]]}
    if all("missing" in r for r in runs):
        out["missing"] = {m: {"weighted_f1": mean_std([r["missing"][m].weighted_f1 for r in runs]),
                              "accuracy": mean_std([r["missing"][m].accuracy for r in runs])}
                          for m in runs[0]["missing"]}
    return out


def to_json(rows: list[dict]) -> dict[str, Any]:
    """The ``{"variants": {name: {...}}}`` object ``python -m train.ablate --json`` prints."""
    keep = ("label", "weighted_f1", "accuracy", "macro_f1", "modality_probe_accuracy", "emotion_cosine_gap",
            "missing", "seeds", "per_seed_wf1", "per_seed_probe", "best_epochs", "inert", "overrides", "seconds")
    return {"variants": {r["variant"]: {k: r[k] for k in keep if k in r} for r in rows}}


def markdown_table(rows: list[dict], title: str) -> str:
    """The human table: accuracy, wF1, Δ vs full, probe; then wF1 with each modality missing (when measured)."""
    full = next((r for r in rows if r["variant"] == "full"), None)
    probes = any("modality_probe_accuracy" in r for r in rows)
    head = "| variant | valid accuracy | valid weighted F1 | Δ wF1 vs full |" + (" modality probe acc. |" if probes else "") + " note |"
    out = [title, "", head, "|---|---|---|---|" + ("---|" if probes else "") + "---|"]
    for r in rows:
        delta = "" if full is None or r is full else f"{r['weighted_f1']['mean'] - full['weighted_f1']['mean']:+.2f}"
        note = ""
        if r["inert"]:
            same = full is not None and r["per_seed_wf1"] == full["per_seed_wf1"]
            note = ("inert with one modality: identical to full" if same else
                    "inert with one modality (nothing to act on); the gap is seed/initialisation noise")
        if r["variant"] == "logreg":
            note = "each utterance's own features only; lbfgs is deterministic, so every seed agrees"
        probe = ""
        if probes:
            probe = f" {fmt_pm(r['modality_probe_accuracy'])} |" if "modality_probe_accuracy" in r else " |"
        out.append(f"| {r['label']} | {fmt_pm(r['accuracy'])} | {fmt_pm(r['weighted_f1'])} | {delta} |{probe} {note} |")
    missing = [r for r in rows if "missing" in r]
    if missing:
        mods = list(missing[0]["missing"])
        out += ["", "Validation weighted F1 with one modality missing at test time (masked out for every utterance):", "",
                "| variant | all present | " + " | ".join(f"no {m}" for m in mods) + " |",
                "|---|---|" + "---|" * len(mods)]
        for r in missing:
            out.append(f"| {r['label']} | {fmt_pm(r['weighted_f1'])} | "
                       + " | ".join(fmt_pm(r["missing"][m]["weighted_f1"]) for m in mods) + " |")
    return "\n".join(out)
