"""``python -m train.make_synthetic --out FILE [--seed 0]``: write the synthetic multimodal IEMOCAP benchmark.

The corpus (:mod:`train.data.synthetic` says what it holds and why) is a DialogueRNN/MMGCN-layout
IEMOCAP feature pickle, 1582-d audio, 342-d visual, 100-d text, each modality weak alone, some
test utterances missing a modality. ``--seed`` fixes every draw; the other flags make variants
for robustness checks (the benchmark itself is the defaults).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from train.common import InputError, run_cli

log = logging.getLogger("train.make_synthetic")


def main(argv: Sequence[str] | None = None) -> int:
    from train.data.synthetic import BenchmarkSpec, write_benchmark

    base = BenchmarkSpec()
    p = argparse.ArgumentParser(prog="python -m train.make_synthetic", description=__doc__.split("\n\n")[0].split(": ", 1)[-1])
    p.add_argument("--out", required=True, help="pickle to write (e.g. data/IEMOCAP_features.pkl)")
    p.add_argument("--seed", type=int, default=base.seed)
    p.add_argument("--noise", type=float, default=base.noise, help=f"latent noise per component (default {base.noise})")
    p.add_argument("--missing", type=float, default=base.missing,
                   help=f"P(a test utterance loses one modality) (default {base.missing})")
    p.add_argument("--inertia", type=float, default=base.inertia,
                   help=f"P(a speaker keeps their previous emotion) (default {base.inertia})")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("missing", "inertia"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"--{name} must be in [0, 1], got {getattr(args, name)}")
    if args.noise < 0:
        raise InputError(f"--noise must be >= 0, got {args.noise}")
    spec = BenchmarkSpec(seed=args.seed, noise=args.noise, missing=args.missing, inertia=args.inertia)
    path = write_benchmark(args.out, spec)
    print(f"wrote {path}: {spec.n_train} train + {spec.n_test} test dialogues, seed {spec.seed}, noise {spec.noise}, "
          f"missing {spec.missing}, inertia {spec.inertia}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
