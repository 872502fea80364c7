"""A tiny text model for the live-runtime tests, trained with the project's own commands.

The model's manifest names the real ``minilm`` text extractor (not precomputed features), so the
runtime builds its features from transcripts exactly as it would for a shipped model. The data
is a DialogueRNN-layout IEMOCAP pickle whose sentences carry their emotion in plain words.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the MiniLM model comes from a wheel; never try the hub

# One short sentence family per IEMOCAP class (hap, sad, neu, ang, exc, fru).
SENTENCES = [
    ["I am so happy today", "this is lovely news", "what a wonderful day"],
    ["I feel so sad and alone", "I miss her very much", "nothing will ever be good again"],
    ["the meeting is at noon", "I put the keys on the table", "we can take the bus"],
    ["stop shouting at me right now", "I am furious with you", "get out of my room"],
    ["wow I cannot wait to go", "this is amazing, let us do it", "I am thrilled about the trip"],
    ["why does this never work", "I have asked you three times", "this form is a waste of time"],
]


def write_text_corpus(path: Path, seed: int = 0) -> Path:
    """DialogueRNN pickle (12 train / 4 test dialogues) with emotion-bearing sentences."""
    import pickle

    write_dialoguernn_iemocap(path, n_train=12, n_test=4, seed=seed, dims={"text": 8, "audio": 4, "visual": 4})
    with open(path, "rb") as f:
        obj = pickle.load(f)  # our own file, written just above
    ids, speakers, labels, text, audio, visual, sentences, train, test = obj
    rng = np.random.default_rng(seed)
    for vid, ys in labels.items():
        sentences[vid] = [SENTENCES[y][int(rng.integers(0, 3))] for y in ys]
    with open(path, "wb") as f:
        pickle.dump([ids, speakers, labels, text, audio, visual, sentences, train, test], f, protocol=4)
    return path


def train_text_model(tmp: Path, *, past: int = 2, layers: int = 2, export: bool = True, int8: bool = False) -> Path:
    """Train (and export) a causal text-only model with the ``minilm`` extractor; returns its directory."""
    from train.__main__ import main as train_main

    data = write_text_corpus(tmp / "text.pkl")
    cfg = tiny_config(modalities=("text",), graph={"past": past, "future": 0},
                      model={"gcn_layers": layers}, train={"epochs": 4})
    cfg["data"]["extractors"] = {"text": "minilm"}
    cfg["data"]["cache_dir"] = str(tmp / "cache")
    model = tmp / "model"
    assert train_main(["--config", str(write_config(tmp / "cfg.yaml", cfg)), "--data", str(data),
                       "--out", str(model), "--no-progress"]) == 0
    if export:
        from export.__main__ import main as export_main

        args = ["--model", str(model), "--data", str(data), "--calib", "8", "--no-parity"] + (["--int8"] if int8 else [])
        assert export_main(args) == 0
    return model


# -- shared across the live-runtime test modules (built once per test session) --------------------

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

_MEMO: dict[str, object] = {}
_ROOT: list[Path] = []


def _workdir() -> Path:
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="ariigcn-live-tests-")))
        atexit.register(shutil.rmtree, _ROOT[0], True)
    return _ROOT[0]


def memo(key: str, make):
    if key not in _MEMO:
        _MEMO[key] = make()
    return _MEMO[key]


def text_model() -> Path:
    """The exported (FP32 + INT8) tiny text model, trained once per test session."""
    def make():
        d = _workdir() / "text_model"
        d.mkdir()
        return train_text_model(d, int8=True)
    return memo("text_model", make)


def speech() -> tuple[Path, dict]:
    """A generated two-voice conversation (8 utterances with 1 s gaps): (speech.wav, script)."""
    import json

    def make():
        from runtime.tools.make_speech import make_conversation

        d = _workdir() / "speech"
        make_conversation(d)
        return d / "speech.wav", json.loads((d / "script.json").read_text())
    return memo("speech", make)


def transcriber():
    """One faster-whisper model for all in-process tests."""
    def make():
        from runtime.asr import Transcriber

        return Transcriber()
    return memo("asr", make)


def voice_encoder():
    def make():
        from runtime.speakers import VoiceEncoder

        return VoiceEncoder()
    return memo("voice", make)


def visual_model() -> Path:
    """A tiny text + visual model whose manifest names the real ``minilm`` and ``fer`` extractors,
    exported (FP32) for the torch-free backends.

    No recordings exist here to train a visual model on, so its weights are freshly initialised
    (seeded) and saved with the project's model-directory API: its labels mean nothing, but the
    runtime must build, mask and feed the visual modality exactly as for a trained one.
    """
    def make():
        import torch

        from export.__main__ import main as export_main
        from train.config import config_from_dict
        from train.features.registry import get_extractor
        from train.features.text import MiniLMExtractor
        from train.model import ARIIGCN
        from train.model_dir import ModelManifest, save_model_dir

        d = _workdir() / "visual_model"
        fer = get_extractor("fer").identity
        text = MiniLMExtractor.default_identity()
        cfg_dict = tiny_config(modalities=("text", "visual"))
        cfg_dict["data"]["extractors"] = {"text": "minilm", "visual": "fer"}
        cfg_dict["data"]["path"] = str(d / "no-data.pkl")  # nothing to calibrate or check parity on
        cfg = config_from_dict(cfg_dict)
        dims = {"text": text.dim, "visual": fer.dim}
        torch.manual_seed(0)
        net = ARIIGCN(cfg, dims, 6).eval()
        labels = ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
        manifest = ModelManifest("text-visual", "iemocap", labels, dims, {"text": text, "visual": fer},
                                 cfg.graph.past, cfg.graph.future)
        model = save_model_dir(d / "model", net, cfg, manifest)
        assert export_main(["--model", str(model), "--no-parity"]) == 0
        return model
    return memo("visual_model", make)


def wer_of(events: list[dict], script: dict) -> float:
    hyp = " ".join(e["text"] for e in events if e["type"] == "utterance" and e["final"])
    ref = " ".join(u["text"] for u in script["utterances"])
    return word_error_rate(ref, hyp)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER (jiwer) on the runtime's normalised words (lower case, no punctuation)."""
    import jiwer

    from runtime.asr import normalize_words

    return float(jiwer.wer(" ".join(normalize_words(reference)), " ".join(normalize_words(hypothesis))))


def check_fastest_exported_backend(name: str, skipped: list[str]) -> None:
    """With no backend named, the runtime took the fastest of ``BACKEND_ORDER`` that loads here: a
    torch-free one the export provides (trt on a Jetson, onnx-int8 on a CPU), every faster one
    reported as skipped with its reason, torch never chosen while the export is there."""
    from export.backends import BACKENDS
    from runtime.recognizer import BACKEND_ORDER

    assert name in BACKEND_ORDER and name != "torch" and name in BACKENDS, name
    assert [note.split(":")[0] for note in skipped] == list(BACKEND_ORDER[: BACKEND_ORDER.index(name)]), skipped
