"""The runtime's incremental conversation equals the offline causal evaluation, at flat cost.

For any conversation (random features with missing modality rows, random speakers), the
probabilities the runtime emits utterance by utterance -- each computed on the bounded window of
the newest utterances when that utterance arrives -- equal what the torch backend computes over
the whole dialogue at once (``train.backends``, the offline evaluation path).
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("torch")

from runtime.conversation import Conversation, backend_window  # noqa: E402
from tests.train_fixtures import tiny_config  # noqa: E402
from train.data.corpus import Dialogue  # noqa: E402
from train.common import InputError  # noqa: E402
from train.graph import window_size  # noqa: E402

MODS = ("text", "audio", "visual")
DIMS = {"text": 16, "audio": 12, "visual": 8}

# (graph, model) settings: causal, with/without speaker relations, deeper, no graph at all.
SETTINGS = {
    "past2-L2": ({"past": 2, "future": 0}, {"gcn_layers": 2}),
    "past3-L1-nospk": ({"past": 3, "future": 0, "speaker_relations": False}, {"gcn_layers": 1}),
    "past1-L3-nointer": ({"past": 1, "future": 0, "inter_modal": False}, {"gcn_layers": 3}),
    "nograph": ({"past": 2, "future": 0}, {"use_graph": False}),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One tiny 3-modality model directory per setting, saved with the project's model-dir API.

    Freshly initialised weights (seeded): equality of the two computations does not depend on
    training, and untrained weights give varied, non-saturated outputs to compare.
    """
    import torch

    from train.config import config_from_dict
    from train.features.base import ExtractorIdentity
    from train.model import ARIIGCN
    from train.model_dir import ModelManifest, save_model_dir

    tmp = tmp_path_factory.mktemp("conversation")
    labels = ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
    out = {}
    for k, (name, (graph, model)) in enumerate(SETTINGS.items()):
        torch.manual_seed(k)
        cfg = config_from_dict(tiny_config(modalities=MODS, graph=graph, model=model))
        net = ARIIGCN(cfg, DIMS, len(labels)).eval()
        ids = {m: ExtractorIdentity("precomputed", m, d, "synthetic") for m, d in DIMS.items()}
        manifest = ModelManifest(name, "iemocap", labels, dict(DIMS), ids, cfg.graph.past, cfg.graph.future)
        out[name] = save_model_dir(tmp / name, net, cfg, manifest)
    return out


def random_conversation(n: int, seed: int, n_speakers: int = 3):
    rng = np.random.default_rng(seed)
    feats = {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in DIMS.items()}
    for m in ("audio", "visual"):  # some utterances lack a modality (no face, no usable audio)
        feats[m][rng.random(n) < 0.3] = np.nan
    feats["text"][rng.random(n) < 0.05] = np.nan
    speakers = rng.integers(0, n_speakers, size=n)
    return feats, speakers


def offline(backend, feats, speakers) -> np.ndarray:
    """The offline causal evaluation: the whole dialogue in one call of the torch backend."""
    d = Dialogue("offline", "test", [str(s) for s in speakers], np.full(len(speakers), -1, np.int64), features=feats)
    return backend.predict([d])[0]


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_incremental_equals_offline_causal(models, setting):
    from export.backends import load_backend

    backend = load_backend(models[setting], "torch")
    graph, model = SETTINGS[setting]
    expect_window = window_size(graph["past"], model.get("gcn_layers", 2)) if model.get("use_graph", True) else 1
    assert backend_window(backend) == expect_window
    for seed, n in ((0, 1), (1, 6), (2, 29)):
        feats, speakers = random_conversation(n, seed)
        conv = Conversation(backend)
        live = conv.run_all(feats, speakers)
        ref = offline(backend, feats, speakers)
        assert live.shape == ref.shape == (n, len(backend.manifest.labels))
        np.testing.assert_allclose(live, ref, atol=1e-5, rtol=0)
        assert (live.argmax(1) == ref.argmax(1)).all()
        assert len(conv.turns) == min(n, expect_window)


def test_window_is_what_makes_it_exact(models):
    """Control: a window one utterance too short does change outputs (the test above can fail)."""
    from export.backends import load_backend

    backend = load_backend(models["past2-L2"], "torch")
    feats, speakers = random_conversation(20, 5)
    ref = offline(backend, feats, speakers)
    short = Conversation(backend, window=backend_window(backend) - 1).run_all(feats, speakers)
    assert np.abs(short - ref).max() > 1e-4


def test_exported_backend_matches_offline_and_sees_bounded_windows(models, tmp_path):
    """The ONNX step backend, fed window by window, gives the torch offline result; every call
    gets at most ``window`` utterances however long the conversation (flat per-utterance cost)."""
    from export.__main__ import main as export_main
    from export.backends import load_backend

    model = models["past2-L2"]
    assert export_main(["--model", str(model), "--out", str(tmp_path / "export"), "--no-text", "--no-parity"]) == 0
    onnx = load_backend(model, "onnx", export_dir=tmp_path / "export")
    torch_backend = load_backend(model, "torch")
    sizes = []
    step = onnx.step
    onnx.step = lambda f, s: (sizes.append(len(s)), step(f, s))[1]
    feats, speakers = random_conversation(60, 7)
    live = Conversation(onnx).run_all(feats, speakers)
    ref = offline(torch_backend, feats, speakers)
    np.testing.assert_allclose(live, ref, atol=1e-4, rtol=0)
    assert (live.argmax(1) == ref.argmax(1)).all()
    assert max(sizes) == backend_window(onnx) == 5 and sizes[-1] == 5 and len(sizes) == 60


def test_bad_features_and_bidirectional_warning(models, tmp_path, caplog):
    from export.backends import load_backend

    backend = load_backend(models["past2-L2"], "torch")
    conv = Conversation(backend)
    with pytest.raises(InputError, match="text features are 3-d but the model expects 16-d"):
        conv.add({"text": np.zeros(3, np.float32)}, 0)
    # a missing modality key counts as absent, not as an error
    p = conv.add({"text": np.ones(16, np.float32)}, 0)
    assert p.shape == (6,) and abs(float(p.sum()) - 1) < 1e-5

    backend.manifest.future = 2  # as a bidirectional model's manifest says
    with caplog.at_level(logging.WARNING):
        Conversation(backend)
    assert "bidirectional" in caplog.text


def test_provisional_peek_changes_nothing_and_relabel_rebuilds_relations(models):
    """``peek`` gives what ``add`` would give without adding; after ``relabel`` (two speaker ids
    found to be one voice) the next outputs equal the offline evaluation with corrected speakers."""
    from train.backends import load_backend

    backend = load_backend(models["past2-L2"], "torch")
    feats, _ = random_conversation(12, 7)
    speakers = np.array([0, 1, 2, 0, 1, 2, 2, 0, 2, 1, 0, 2])
    conv = Conversation(backend)
    row = lambda i: {m: f[i] for m, f in feats.items()}  # noqa: E731
    for i in range(8):
        conv.add(row(i), speakers[i])
    window_speakers = lambda: list(conv.turns.arrays([])[1])  # noqa: E731
    before = window_speakers()
    peeked = conv.peek(row(8), speakers[8])
    assert window_speakers() == before and conv.count == 8
    np.testing.assert_allclose(peeked, conv.add(row(8), speakers[8]), atol=1e-6)
    # speaker 2 was speaker 0 all along: re-label the past, then go on
    conv.relabel({2: 0})
    corrected = np.where(speakers == 2, 0, speakers)
    assert window_speakers() == list(corrected[9 - len(conv.turns) : 9])
    live = [conv.add(row(i), corrected[i]) for i in range(9, 12)]
    ref = offline(backend, feats, corrected)
    np.testing.assert_allclose(np.stack(live), ref[9:12], atol=1e-5)
    assert np.abs(offline(backend, feats, speakers)[9:12] - ref[9:12]).max() > 1e-4  # the relabel mattered
