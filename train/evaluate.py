"""``python -m train.evaluate --model NAME_OR_DIR --data PATH --split test|valid [--json] [--backend torch]``

Scores a trained model (a model directory, or a name in the model search path, see
:mod:`train.model_dir`) on one split of a corpus file: accuracy, weighted F1, per-class F1 and
the number of labelled utterances, in percent. Features the model needs are built by the same
extractors it was trained with (named in its manifest) unless the file already carries them.
This command runs the torch backend; ``python -m export.evaluate`` is the same command with the
exported backends (onnx, onnx-int8, trt...) as well.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from train.common import InputError, run_cli

if TYPE_CHECKING:
    from train.backends import Backend, BackendTable

log = logging.getLogger("train.evaluate")


def attach_model_features(corpus, manifest, cache_dir: str):
    """Give ``corpus`` every modality the model needs, with the extractor its manifest names.

    Modalities the model trained on precomputed features must already be in the file.
    """
    need = {}
    for m, ident in manifest.extractors.items():
        if ident.name == "precomputed":
            continue
        need[m] = ident.name
    if not need:
        return corpus
    from train.extract import attach_features
    from train.trainer import identity_of

    for m, name in need.items():
        have = identity_of(name)
        want = manifest.extractors[m]
        if have != want:
            raise InputError(f"the model's {m} features come from {want.name} {want.version} ({want.dim}-d), "
                             f"but this installation's {name} is {have.version} ({have.dim}-d)")
    return attach_features(corpus, need, cache_dir)


def evaluate(model: str, data: str, split: str, backend: "str | Backend" = "torch", cache_dir: str | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Score ``model`` on ``split`` of ``data``; returns the JSON report (percent figures).

    ``backend``: a loaded backend of ``model`` (any :class:`train.backends.Backend`, e.g. from
    :func:`export.backends.load_backend`), or the name of one of train's own (``torch``).
    """
    from train.backends import check_features, load_backend
    from train.data import load_corpus
    from train.metrics import score

    if isinstance(backend, str):
        be = load_backend(model, backend, **({"device": device} if device else {}))
    else:
        be = backend
    manifest = be.manifest
    corpus = load_corpus(data)
    dialogues = corpus.split(split)
    if not dialogues:
        counts = ", ".join(f"{s}: {len(corpus.split(s))} dialogues" for s in ("train", "valid", "test"))
        raise InputError(f"the {split} split is empty ({counts})", path=data)
    if corpus.labels != manifest.labels:
        raise InputError(f"the data's labels {corpus.labels} differ from the model's {manifest.labels} "
                         f"(a {corpus.dataset} file for a {manifest.dataset} model?)", path=data)
    if cache_dir is None:
        from train.model_dir import read_config

        cache_dir = read_config(model).data.cache_dir
    # Only the scored split gets features (extraction is the slow part), cached apart from the
    # training cache of the same file, which holds exactly the whole corpus.
    corpus = attach_model_features(dataclasses.replace(corpus, dialogues=dialogues), manifest,
                                   str(Path(cache_dir) / f"eval-{split}"))
    dialogues = corpus.split(split)
    check_features(dialogues, manifest, source=data)
    probs = be.predict(dialogues)
    y_true = np.concatenate([d.labels for d in dialogues])
    y_pred = np.concatenate([p.argmax(axis=1) for p in probs])
    s = score(y_true, y_pred, manifest.labels)
    report = s.to_dict()
    report.update({"model": str(model), "model_name": manifest.name, "backend": be.name, "data": str(data),
                   "split": split, "dialogues": len(dialogues)})
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['model_name']} on {r['data']} [{r['split']}], backend {r['backend']}: "
             f"{r['dialogues']} dialogues, {r['n']} labelled utterances",
             f"accuracy     {r['accuracy']:.2f}",
             f"weighted F1  {r['weighted_f1']:.2f}",
             f"macro F1     {r['macro_f1']:.2f}",
             "per-class F1:"]
    lines += [f"  {k:<12} {v:6.2f}" for k, v in r["per_class_f1"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, backends: "BackendTable | None" = None,
         prog: str = "python -m train.evaluate") -> int:
    """The command; ``backends``: the table ``--backend`` chooses from (default: train's, torch)."""
    from train.backends import BACKENDS, load_backend

    backends = BACKENDS if backends is None else backends
    p = argparse.ArgumentParser(prog=prog, description="Score a trained model on one split.")
    p.add_argument("--model", required=True, help="model directory, or model name in the model search path ($ARIIGCN_MODEL_PATH)")
    p.add_argument("--data", required=True, help="corpus file (any supported layout)")
    p.add_argument("--split", choices=("test", "valid", "train"), default="test")
    p.add_argument("--backend", default="torch", help=f"inference backend: {', '.join(backends)} (default torch)")
    p.add_argument("--device", help="torch backend device (default: cuda when available)")
    p.add_argument("--cache-dir", help="feature cache directory (default: the model config's data.cache_dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--confusion", metavar="PNG", help="also write a confusion-matrix PNG")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    backend = load_backend(args.model, args.backend, backends=backends, **({"device": args.device} if args.device else {}))
    report = evaluate(args.model, args.data, args.split, backend, args.cache_dir)
    if args.confusion:
        from train.plots import plot_confusion

        plot_confusion(report["confusion"], list(report["per_class_f1"]), Path(args.confusion),
                       title=f"{report['model_name']} [{args.split}] wF1 {report['weighted_f1']:.2f}")
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
