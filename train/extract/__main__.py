"""``python -m train.extract {text,audio,visual} --data PATH --out FILE``: per-utterance features.

``--cache-dir DIR`` instead of ``--out`` writes the file training looks for in its feature cache
(``data.cache_dir``), so ``python -m train`` with the same corpus reuses it.

Writes FILE (npz, see :mod:`train.features.cache`): one (n, dim) float32 array per dialogue id,
the extractor identity and per-utterance content hashes. An existing FILE made by the same
extractor is reused row by row: only new or changed utterances are computed.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Sequence

from train.common import InputError, python_m, run_cli
from train.extract import DEFAULT_EXTRACTORS, cache_path, extract_corpus
from train.features.registry import get_extractor, known

log = logging.getLogger("train.extract")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.extract", description=__doc__.split("\n")[0].split(": ", 1)[-1])
    sub = p.add_subparsers(dest="modality", required=True, metavar="{text,audio,visual}")
    for modality, name in DEFAULT_EXTRACTORS.items():
        s = sub.add_parser(modality, help=f"{modality} features (default extractor: {name})")
        s.add_argument("--data", required=True, help="corpus file (any layout train.data reads)")
        where = s.add_mutually_exclusive_group(required=True)
        where.add_argument("--out", help="feature file to write (npz); reused when it exists")
        where.add_argument("--cache-dir", help="write into this feature cache instead, under the name training looks "
                                              "up (a config's data.cache_dir), so python -m train reuses it")
        s.add_argument("--dataset", choices=("iemocap", "meld"), help="dataset, when the file name does not tell")
        s.add_argument("--extractor", default=name, help=f"registry name (default {name}; known: {', '.join(known())})")
        s.add_argument("--backend", help="extractor backend, e.g. torch or onnx (default: the extractor's default)")
        s.add_argument("--batch-size", type=int, help="utterances per forward pass")
        s.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
        s.add_argument("--encoder", help="model directory (text: a sentence-transformers directory for torch, an exported encoder for onnx)")
        s.add_argument("--media", help="CSV manifest: dialogue_id, utterance_index, path, start, end" + (" (required)" if modality != "text" else " (unused for text)"))
        s.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from train.data import load_corpus

    kwargs = {}
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
        kwargs["batch_size"] = args.batch_size
    if args.device:
        kwargs["device"] = args.device
    if args.encoder:
        kwargs["path"] = args.encoder
    if args.modality == "text" and args.backend == "onnx" and not args.encoder:
        raise InputError(f"--backend onnx needs --encoder DIR, an exported text encoder ({python_m('export.text_encoder --out DIR')})")
    if args.modality != "text" and not args.media:
        raise InputError(f"{args.modality} extraction needs --media MANIFEST: a CSV with columns dialogue_id, utterance_index, path, start, end (seconds) naming each utterance's recording")
    corpus = load_corpus(args.data, dataset=args.dataset)
    extractor = get_extractor(args.extractor, args.backend, **kwargs)
    if extractor.identity.modality != args.modality:
        raise InputError(f"extractor {args.extractor!r} makes {extractor.identity.modality} features; use the {extractor.identity.modality} subcommand")
    t0 = time.perf_counter()
    out = args.out or cache_path(args.cache_dir, corpus, extractor.identity)
    if args.cache_dir:
        Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    feats, stats = extract_corpus(corpus, extractor, out, media=args.media, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    print(
        f"wrote {stats.path}: {len(feats)} dialogues, {stats.total} utterances x {stats.identity.dim} "
        f"({stats.identity.name} {stats.identity.version}); reused {stats.reused}/{stats.total} utterances, "
        f"computed {stats.computed}, {stats.empty} empty (NaN rows), {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
