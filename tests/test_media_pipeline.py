"""End to end from raw media: recordings -> extracted features -> training -> export -> live labels.

The corpus is made of media (``runtime.tools.make_media_corpus``: espeak-ng speech in two voices,
the astronaut photo varied per utterance); then the commands a user runs, in the README's order:
``train.extract audio`` / ``visual`` (into the training cache), ``train`` on text + audio + visual,
``train.evaluate`` (offline, causal), ``export``, and ``runtime.live --video F --audio F`` with
that model, computing every modality live. The live labels must equal the offline causal
evaluation's on the same media.

Reproducible: the corpus is the same bytes in every run (sox dithered with a fresh seed per run
before ``-R``, so each run trained a different model; one fresh-clone CI run in five then met an
utterance whose live and offline labels fell on either side of a decision boundary).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("onnxruntime")
pytest.importorskip("opensmile")
pytest.importorskip("ai_edge_litert")
if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
    pytest.skip("espeak-ng and sox are needed for the media corpus", allow_module_level=True)

from tests import live_fixtures as fx  # noqa: E402
from train.common import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_raw_media_to_live_labels(tmp_path):
    from export.__main__ import main as export_main
    from runtime.tools.make_media_corpus import CORPUS, MANIFEST, make_media_corpus
    from train.__main__ import main as train_main
    from train.evaluate import main as evaluate_main
    from train.extract.__main__ import main as extract_main

    media = tmp_path / "media"
    corpus = make_media_corpus(media, dialogues=6, utterances=4)
    manifest = media / MANIFEST
    assert corpus == media / CORPUS
    cache = tmp_path / "cache"
    for modality in ("audio", "visual"):
        assert run_cli(extract_main, [modality, "--data", str(corpus), "--media", str(manifest),
                                      "--cache-dir", str(cache), "--no-progress"]) == 0
    extracted = {f: f.stat().st_mtime_ns for f in cache.glob("*.npz")}
    assert len(extracted) == 2  # is10 and fer, under the names training looks up

    model = tmp_path / "model"
    sets = [f"data.path={corpus}", f"data.media={manifest}", f"data.cache_dir={cache}"]
    assert run_cli(train_main, ["--config", str(REPO / "configs" / "media.yaml"), "--out", str(model), "--no-progress",
                                *[a for s in sets for a in ("--set", s)]]) == 0
    assert all(f.stat().st_mtime_ns == t for f, t in extracted.items())  # training reused them as they were
    from train.model_dir import read_manifest

    m = read_manifest(model)
    assert list(m.dims) == ["text", "audio", "visual"] and m.dims["audio"] == 1582 and m.dims["visual"] == 128
    assert {k: e.name for k, e in m.extractors.items()} == {"text": "minilm", "audio": "is10", "visual": "fer"}

    pred = tmp_path / "pred.jsonl"
    assert run_cli(evaluate_main, ["--model", str(model), "--data", str(corpus), "--split", "test",
                                   "--predictions", str(pred)]) == 0  # media and cache from the model's config
    offline = [json.loads(l) for l in pred.read_text().splitlines()]
    assert run_cli(export_main, ["--model", str(model), "--no-parity"]) == 0

    env = dict(os.environ, HF_HUB_OFFLINE="1", ARIIGCN_CACHE=str(Path(fx.voice_encoder().path).parent),
               PYTHONPATH=str(REPO))
    test_ids = sorted({r["dialogue"] for r in offline})
    assert len(test_ids) == 2
    did = test_ids[-1]
    r = subprocess.run([sys.executable, "-m", "runtime.live", "--video", str(media / f"{did}.mp4"),
                        "--audio", str(media / f"{did}.wav"), "--model", str(model), "--fast", "--events", "-"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(l) for l in r.stdout.splitlines()]
    assert events[0]["type"] == "status" and events[0]["backend"] == "onnx"
    live = [e for e in events if e["type"] == "utterance" and e["final"]]
    want = [row for row in offline if row["dialogue"] == did]
    assert len(live) == len(want) == 4, [e["text"] for e in live]
    # every modality computed live; visual wherever the face model found a face (it shares its frames)
    assert all(e["modalities"] == ["text", "audio"] + (["visual"] if e["face"] else []) for e in live)
    assert sum(e["face"] is not None for e in live) >= 3
    # Live, the words come from speech recognition and the spans from the VAD, so the probabilities
    # differ a little from the offline ones; the labels must not. The
    # media are the same bytes in every run (runtime.tools.make_speech runs sox repeatably), so the
    # model and both sets of labels are too: a difference is a change, not chance.
    assert [e["emotion"] for e in live] == [row["prediction"] for row in want], "\n".join(
        f"{i}: live {e['emotion']} {e['probs']} heard {e['text']!r} ({e['start']}-{e['end']} s) | offline "
        f"{row['prediction']} {row['probs']}" for i, (e, row) in enumerate(zip(live, want)))
    # the two voices are told apart as the corpus's speakers are
    assert len({e["speaker"] for e in live}) == 2
    assert [e["speaker"] == live[0]["speaker"] for e in live] == [row["speaker"] == want[0]["speaker"] for row in want]
