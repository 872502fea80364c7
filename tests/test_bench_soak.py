"""Smoke run of the soak benchmark (``python -m runtime.bench_soak``): figures are printed, not
asserted; the run must go through the whole pipeline and print one row per block."""
from __future__ import annotations

import re
import shutil

import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("onnxruntime")

from tests import live_fixtures as fx  # noqa: E402


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is needed for the test model's speech")
def test_soak_prints_a_row_per_block(capsys):
    from runtime.bench_soak import main

    assert main(["--minutes", "1", "--block", "0.5", "--model", str(fx.text_model()), "--backend", "onnx"]) == 0
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines() if re.match(r"\s+[\d.]+-[\d.]+\s", l)]
    assert len(rows) == 2, out
    assert all(int(r.split()[1]) >= 1 for r in rows), out  # utterances labelled in each half minute
    assert re.search(r"\d+ utterances labelled in [\d.]+ min", out) and "growth first -> last block: RSS" in out
