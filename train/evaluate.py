"""``python -m train.evaluate --model NAME_OR_DIR --data PATH --split test|valid [--json] [--predictions FILE.jsonl]``

Scores a trained model (a model directory, or a name in the model search path, see
:mod:`train.model_dir`) on one split of a corpus file: accuracy, weighted F1, per-class F1, the
number of labelled utterances and the accuracy on emotion shifts (gold label differs from the
same speaker's previous one) and on the rest, in percent. ``--predictions`` writes one JSON line
per utterance (dialogue, index, speaker, label, prediction, probs). This command runs the torch
backend; ``python -m export.evaluate`` is the same command with the exported backends (onnx,
onnx-int8, trt...) as well. The work is in :mod:`train.evaluation`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from train.common import run_cli
from train.evaluation import check_output_path, evaluate, evaluate_split, write_predictions  # noqa: F401 (evaluate: the library entry)

if TYPE_CHECKING:
    from train.backends import BackendTable

log = logging.getLogger("train.evaluate")


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['model_name']} on {r['data']} [{r['split']}], backend {r['backend']}: "
             f"{r['dialogues']} dialogues, {r['n']} labelled utterances",
             f"accuracy     {r['accuracy']:.2f}",
             f"weighted F1  {r['weighted_f1']:.2f}",
             f"macro F1     {r['macro_f1']:.2f}",
             f"emotion shifts {r['shift_accuracy']:.2f} accuracy ({r['n_shift']} utterances), the rest {r['no_shift_accuracy']:.2f}",
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
    p.add_argument("--media", help="media manifest for audio / visual features from recordings (CSV: dialogue_id, "
                                   "utterance_index, path, start, end; default: the model config's data.media)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--confusion", metavar="PNG", help="also write a confusion-matrix PNG")
    p.add_argument("--predictions", metavar="FILE.jsonl", help="write one JSON line per utterance: dialogue, index, speaker, label, prediction, probs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for out in (args.predictions, args.confusion):
        if out:
            check_output_path(out)  # before the (slow) scoring
    backend = load_backend(args.model, args.backend, backends=backends, **({"device": args.device} if args.device else {}))
    result = evaluate_split(args.model, args.data, args.split, backend, args.cache_dir, media=args.media)
    report = result.report
    if args.predictions:
        rows = result.prediction_rows()
        write_predictions(args.predictions, rows)
        log.info("wrote %d predictions to %s", len(rows), args.predictions)
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
