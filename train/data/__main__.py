"""``python -m train.data PATH [--json] [--dataset NAME] [--debug]``: summarise a corpus file."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from train.data.load import DATASETS, load_corpus
from train.data.summary import format_summary, summarize
from train.common import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m train.data",
        description="Load a corpus file (COSMIC / DialogueRNN / MMGCN pickle, MELD CSV or CSV directory), "
                    "check it and print a summary.")
    ap.add_argument("path", help="pickle, *_sent_emo.csv, or a directory of MELD CSVs")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--dataset", choices=DATASETS, help="insist the file is this dataset")
    ap.add_argument("--debug", action="store_true", help="show the traceback on errors")
    args = ap.parse_args(argv)
    summary = summarize(load_corpus(args.path, dataset=args.dataset))
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
