"""``python -m train.make_synthetic --out FILE [--preset separable] [--seed 0]``: write the synthetic multimodal IEMOCAP benchmark.

The corpus (:mod:`train.data.synthetic` says what it holds and why) is a DialogueRNN/MMGCN-layout
IEMOCAP feature pickle, 1582-d audio, 342-d visual, 100-d text, each modality weak alone, some
test utterances missing a modality. ``--preset benchmark`` (the default) is the corpus as first
written; ``--preset separable`` is the one whose modalities together determine the label.
``--seed`` fixes every draw; the other flags override the preset's values to make variants for
robustness checks. ``--check`` also prints context-free logistic regression on the validation
split (the first 10% of training dialogues, as the loaders carve it) for each modality alone and
all three together.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from train.common import InputError, run_cli

log = logging.getLogger("train.make_synthetic")

# BenchmarkSpec field -> (help, lower bound, upper bound or None); each is a flag --field-name
_KNOBS = {
    "noise": ("latent noise per component", 0.0, None),
    "obs_noise": ("isotropic noise in every observed dimension", 0.0, None),
    "speaker_shift": ("norm of each (dialogue, speaker) latent offset", 0.0, None),
    "scale_spread": ("sigma of the audio per-dimension log-normal scales and offsets", 0.0, None),
    "missing": ("P(a test utterance loses one modality)", 0.0, 1.0),
    "inertia": ("P(a speaker keeps their previous emotion)", 0.0, 1.0),
}


def check_report(path: str) -> list[str]:
    """Context-free logistic regression (standardised, C 0.05) on validation, per modality and fused."""
    from train.ablation import context_free_logreg
    from train.data import load_corpus

    corpus = load_corpus(path)
    train, valid = corpus.split("train"), corpus.split("valid")
    lines = []
    for mods in (["text"], ["audio"], ["visual"], ["text", "audio", "visual"]):
        s = context_free_logreg(train, valid, mods, corpus.labels, standardise=True, c=0.05)
        lines.append(f"context-free logistic regression, valid, {' + '.join(mods)}: accuracy {s.accuracy:.1f}%, "
                     f"weighted F1 {s.weighted_f1:.1f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from train.data.synthetic import PRESETS, BenchmarkSpec, preset, write_benchmark

    base = BenchmarkSpec()
    p = argparse.ArgumentParser(prog="python -m train.make_synthetic",
                                description="Write the synthetic multimodal IEMOCAP benchmark (train.data.synthetic).")
    p.add_argument("--out", required=True, help="pickle to write (e.g. data/IEMOCAP_features.pkl)")
    p.add_argument("--preset", default="benchmark", choices=list(PRESETS),
                   help="benchmark: as first written (latent noise 1.0); separable: latent noise 0.5, the modalities "
                        "together determine the label")
    p.add_argument("--seed", type=int, default=base.seed)
    for name, (what, _, _) in _KNOBS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=None,
                       help=f"{what} (default: the preset's; benchmark {getattr(base, name)})")
    p.add_argument("--n-train", type=int, default=base.n_train,
                   help=f"training dialogues (the loaders carve validation from their first 10%%; default {base.n_train})")
    p.add_argument("--n-test", type=int, default=base.n_test, help=f"test dialogues (default {base.n_test})")
    p.add_argument("--check", action="store_true", help="also print context-free logistic regression on validation")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for flag, value, low in (("--n-train", args.n_train, 10), ("--n-test", args.n_test, 1)):
        if value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")
    overrides = {"seed": args.seed, "n_train": args.n_train, "n_test": args.n_test}
    for name, (_, lo, hi) in _KNOBS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if value < lo or (hi is not None and value > hi):
            flag = f"--{name.replace('_', '-')}"
            raise InputError(f"{flag} must be in [{lo:g}, {hi:g}], got {value}" if hi is not None
                             else f"{flag} must be >= {lo:g}, got {value}")
        overrides[name] = value
    spec = preset(args.preset, **overrides)
    path = write_benchmark(args.out, spec)
    knobs = ", ".join(f"{k} {getattr(spec, k)}" for k in ("seed", *_KNOBS))
    print(f"wrote {path}: {spec.n_train} train + {spec.n_test} test dialogues, preset {args.preset}, {knobs}")
    if args.check:
        print("\n".join(check_report(str(path))))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
