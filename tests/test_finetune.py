"""Context formatting, fine-tuning (LoRA) of the text encoder, resume, and the context extractor."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from train.data.corpus import Corpus, Dialogue
from train.common import InputError
from train.features.base import FeatureExtractor, UtteranceInput
from train.features.text_context import (
    ADAPTER_WEIGHTS,
    ENCODER_JSON,
    ContextFormat,
    ContextTextExtractor,
    encoder_identity,
    format_dialogue,
    format_input,
    format_turns,
)
from train.finetune_config import encoder_config_from_dict, load_encoder_config

REPO = Path(__file__).resolve().parents[1]
LABELS = ["happy", "sad", "neutral", "angry", "excited", "frustrated"]

# ---------------------------------------------------------------------------------------------
# Formatting: past only, k turns, speakers


def test_input_for_t_holds_only_t_and_its_newest_k_past_turns():
    texts = [f"word{i} said here" for i in range(8)]
    speakers = ["M", "F", "F", "M", "F", "M", "M", "F"]
    for k in (0, 1, 3, 8):  # 8: the most the runtime keeps, more than most utterances here have
        fmt = ContextFormat(turns=k)
        inputs = format_dialogue(texts, speakers, fmt)
        for t, s in enumerate(inputs):
            present = {i for i in range(8) if f"word{i} " in s}
            assert present == set(range(max(0, t - k), t + 1)), (k, t, s)  # never a later utterance
            assert s.startswith(f"A: word{t} said here")  # the target first, its speaker A
            assert s.count("[SEP]") == min(k, t)


def test_past_turns_newest_first_with_relative_and_named_speakers():
    texts = ["hello", "hi there", "how are you", "fine"]
    speakers = ["Ross", "Rachel", "Ross", "Joey"]
    rel = format_dialogue(texts, speakers, ContextFormat(turns=3))[3]
    # target Joey = A; going back: Ross (B), Rachel (C), Ross (B)
    assert rel == "A: fine [SEP] B: how are you [SEP] C: hi there [SEP] B: hello"
    named = format_dialogue(texts, speakers, ContextFormat(turns=2, speakers="name"))[3]
    assert named == "Joey: fine [SEP] Ross: how are you [SEP] Rachel: hi there"
    # the same speaker as the target keeps tag A in the context
    assert format_turns("yes", "Ross", [("no", "Rachel"), ("maybe", "Ross")], ContextFormat(turns=2)) == "A: yes [SEP] A: maybe [SEP] B: no"


def test_blank_target_gives_none_and_blank_context_is_skipped():
    fmt = ContextFormat(turns=2)
    assert format_turns("   ", "M", [("hi", "F")], fmt) is None
    assert format_turns(None, "M", [], fmt) is None
    assert format_turns("ok", "M", [("hi", "F"), ("", "M")], fmt) == "A: ok [SEP] B: hi"
    assert format_turns("a\n  b", "M", [], fmt) == "A: a b"  # whitespace collapsed


def test_format_input_matches_format_dialogue_and_ignores_extra_context():
    texts = ["one", "two", "three", "four"]
    speakers = ["M", "F", "M", "F"]
    fmt = ContextFormat(turns=2)
    item = UtteranceInput(text="four", speaker="F", context=[UtteranceInput(text=t, speaker=s) for t, s in zip(texts[:3], speakers[:3])])
    assert format_input(item, fmt) == format_dialogue(texts, speakers, fmt)[3]


def test_separator_is_one_token_for_both_tokenizers():
    """Training (transformers) and the ONNX runtime (tokenizers) must see the same ids."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from train.features.text import default_model_path

    text = format_turns("I can't believe it!", "M", [("Well...", "F"), ("Hi", "M")], ContextFormat(turns=2))
    hf = AutoTokenizer.from_pretrained(str(default_model_path()))(text)["input_ids"]
    tok = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
    tok.no_padding()  # the file pads to a fixed length; the runtime pads per batch
    raw = tok.encode(text).ids
    assert hf == raw
    assert hf.count(hf[-1]) == 3  # [SEP] twice inside + the final one: matched as the special token


def test_context_format_checks():
    with pytest.raises(InputError, match="turns"):
        ContextFormat(turns=-1)
    with pytest.raises(InputError, match="speakers"):
        ContextFormat(speakers="gender")
    with pytest.raises(InputError, match="max_length"):
        ContextFormat(max_length=4)


# ---------------------------------------------------------------------------------------------
# Config


def test_encoder_configs_load_and_unknown_key_is_refused(tmp_path):
    for name in ("iemocap", "meld"):
        cfg = load_encoder_config(REPO / "configs" / f"{name}-encoder.yaml")
        assert cfg.name == name and cfg.data.dataset == name
        assert cfg.adapted_layers[-1] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlora:\n  rank: 8\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*lora\.rank"):
        load_encoder_config(bad)
    with pytest.raises(InputError, match="lora.layers"):
        encoder_config_from_dict({"lora": {"layers": 7}})
    with pytest.raises(InputError, match="cfg.yaml.*speakers"):
        encoder_config_from_dict({"context": {"speakers": "gender"}}, source="cfg.yaml")


# ---------------------------------------------------------------------------------------------
# Fine-tuning on synthetic dialogues

POSITIVE = ["I am so happy today", "this is wonderful news", "what a lovely day", "I love it so much"]
NEGATIVE = ["this is terrible and sad", "I feel awful", "everything went wrong", "I hate this so much"]


def synthetic_corpus(n_train: int = 6, n_valid: int = 2, length: int = 6, seed: int = 0) -> Corpus:
    """Dialogues whose labels follow the wording (0 happy / 1 sad), so a model can learn them."""
    rng = np.random.default_rng(seed)
    dialogues = []
    for k in range(n_train + n_valid):
        y = rng.integers(0, 2, size=length)
        texts = [str(rng.choice(POSITIVE if v == 0 else NEGATIVE)) for v in y]
        speakers = ["M" if i % 2 == 0 else "F" for i in range(length)]
        dialogues.append(Dialogue(id=f"d{k}", split="train" if k < n_train else "valid", speakers=speakers, labels=y.astype(np.int64), texts=texts))
    return Corpus(dataset="iemocap", labels=LABELS, dialogues=dialogues, source="synthetic")


def tiny_cfg(**train):
    return encoder_config_from_dict({
        "name": "tiny",
        "context": {"turns": 2, "max_length": 48},
        "lora": {"layers": 1, "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"epochs": 3, "batch_size": 8, "lr": 5e-3, "head_lr": 2e-2, "warmup": 0.0, "patience": 5, "checkpoint_every": 2, **train},
    }, source="tiny")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from train.encoder_tuning import finetune

    out = tmp_path_factory.mktemp("ft") / "enc"
    result = finetune(tiny_cfg(), out, corpus=synthetic_corpus(), progress=False)
    return result


def _train_loss(model, corpus, cfg) -> float:
    """Cross-entropy of ``model`` over the training split (eval mode: no dropout)."""
    import torch

    from train.encoder_tuning import build_examples

    ex = build_examples(corpus, "train", cfg.context)
    model.train(False)
    with torch.no_grad():
        logits = model.logits(model.embed(ex.texts))
        return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(ex.labels)))


def _load_trained(model, out: Path) -> None:
    import peft
    import torch
    from safetensors.torch import load_file

    peft.set_peft_model_state_dict(model.peft, load_file(str(out / ADAPTER_WEIGHTS)))
    head = load_file(str(out / "head.safetensors"))
    with torch.no_grad():
        model.head.weight.copy_(head["weight"])
        model.head.bias.copy_(head["bias"])


def test_tiny_finetune_lowers_loss_and_writes_an_encoder_directory(trained):
    import torch

    from train.encoder_tuning import ContextEncoder

    assert trained.finished and len(trained.progress.history) == 3
    cfg, corpus = tiny_cfg(), synthetic_corpus()
    torch.manual_seed(cfg.train.seed)  # the initial weights the run started from
    model = ContextEncoder(cfg, len(LABELS))
    before = _train_loss(model, corpus, cfg)
    _load_trained(model, trained.out)
    after = _train_loss(model, corpus, cfg)
    assert after < 0.6 * before, (before, after)
    out = trained.out
    for f in ("adapter_config.json", ADAPTER_WEIGHTS, ENCODER_JSON, "head.safetensors", "metrics.json", "README.md"):
        assert (out / f).is_file(), f
    assert not (out / "checkpoint").exists() and not (out / "best").exists()
    info = json.loads((out / ENCODER_JSON).read_text())
    assert info["context"]["turns"] == 2 and info["adapter"]["layers"] == [5]
    assert info["selection"]["split"] == "valid"
    assert (out / ADAPTER_WEIGHTS).stat().st_size < 200_000  # only the adapter, never the base weights


def test_adapter_round_trip_gives_the_training_models_embeddings(trained):
    """Embeddings of the saved adapter through the extractor (adapter merged into the standard
    model) equal those of the training model (LoRA unmerged, frozen layers run separately)."""
    import torch

    from train.encoder_tuning import ContextEncoder

    cfg = tiny_cfg()
    model = ContextEncoder(cfg, len(LABELS))
    _load_trained(model, trained.out)
    model.train(False)
    corpus = synthetic_corpus()
    d = corpus.dialogues[-1]
    texts = format_dialogue(d.texts, d.speakers, cfg.context)
    with torch.no_grad():
        ref = model.embed(texts).numpy()
    ex = ContextTextExtractor(trained.out, device="cpu", batch_size=4)
    assert isinstance(ex, FeatureExtractor) and ex.context_turns == 2
    items = [UtteranceInput(text=t, speaker=s, context=[UtteranceInput(text=pt, speaker=ps) for pt, ps in zip(d.texts[:i], d.speakers[:i])]) for i, (t, s) in enumerate(zip(d.texts, d.speakers))]
    got = ex.extract(items)
    assert got.shape == (len(items), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-5)
    # the adapter changed the encoder: the base model gives other embeddings for the same inputs
    from train.features.text import MiniLMExtractor

    base = MiniLMExtractor(device="cpu").encode(texts)
    assert np.abs(base - got).max() > 1e-3
    # blank transcript -> NaN row; the same words in another context -> another embedding
    two = ex.extract([UtteranceInput(text=" ", speaker="M"), UtteranceInput(text=d.texts[3], speaker=d.speakers[3])])
    assert np.isnan(two[0]).all() and np.abs(two[1] - got[3]).max() > 1e-4


def test_resume_continues_from_the_saved_step(trained, tmp_path):
    """Stopped after 3 steps and resumed, a run ends with the same adapter as an uninterrupted one."""
    from train.encoder_tuning import finetune

    out = tmp_path / "enc"
    corpus = synthetic_corpus()
    part = finetune(tiny_cfg(), out, corpus=corpus, progress=False, max_steps=3)
    assert not part.finished and part.progress.step == 3 and (out / "checkpoint" / "optim.pt").is_file()
    with pytest.raises(InputError, match="--resume"):  # a checkpoint is never overwritten silently
        finetune(tiny_cfg(), out, corpus=corpus, progress=False)
    with pytest.raises(InputError, match="another config.*train.lr"):
        finetune(tiny_cfg(lr=1e-3), out, corpus=corpus, progress=False, resume=True)
    done = finetune(tiny_cfg(), out, corpus=corpus, progress=False, resume=True)
    assert done.finished and done.progress.step == trained.progress.step
    assert [h["step"] for h in done.progress.history] == [h["step"] for h in trained.progress.history]
    np.testing.assert_allclose([h["train_loss"] for h in done.progress.history], [h["train_loss"] for h in trained.progress.history], rtol=1e-5)
    assert (out / ADAPTER_WEIGHTS).read_bytes() == (trained.out / ADAPTER_WEIGHTS).read_bytes()
    assert encoder_identity(out) == encoder_identity(trained.out)


def test_identity_changes_with_adapter_weights_and_context_format(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    base_id = encoder_identity(trained.out)
    assert base_id.name == "minilm-ctx-tiny" and base_id.dim == 384 and ";k2;relative;48" in base_id.version
    assert ContextTextExtractor(trained.out).identity == base_id  # stable, torch-free
    changed = tmp_path / "changed"
    shutil.copytree(trained.out, changed)
    w = load_file(str(changed / ADAPTER_WEIGHTS))
    key = sorted(w)[0]
    w[key] = w[key] + 1e-3
    save_file(w, str(changed / ADAPTER_WEIGHTS))
    assert encoder_identity(changed).version != base_id.version
    reformat = tmp_path / "reformat"
    shutil.copytree(trained.out, reformat)
    info = json.loads((reformat / ENCODER_JSON).read_text())
    info["context"]["turns"] = 3
    (reformat / ENCODER_JSON).write_text(json.dumps(info))
    assert encoder_identity(reformat).version != base_id.version
    # figures and notes in encoder.json do not change outputs, so not the identity either
    same = tmp_path / "same"
    shutil.copytree(trained.out, same)
    info = json.loads((same / ENCODER_JSON).read_text())
    info["selection"]["weighted_f1"] = 0.0
    (same / ENCODER_JSON).write_text(json.dumps(info))
    assert encoder_identity(same) == base_id


def test_registry_and_attach_features_use_the_context(trained, tmp_path):
    from train.extract import attach_features
    from train.features.registry import get_extractor, known

    assert {"minilm-ctx-iemocap", "minilm-ctx-meld"} <= set(known())
    ex = get_extractor("minilm-ctx-iemocap", path=str(trained.out), batch_size=8)
    assert ex.identity.name == "minilm-ctx-tiny"  # named by the encoder directory it loads
    corpus = synthetic_corpus(n_train=2, n_valid=1)
    attach_features(corpus, {"text": ex}, tmp_path / "cache", progress=False)
    d = corpus.dialogues[0]
    fmt = ex.format
    direct = ex.encode_formatted(format_dialogue(d.texts, d.speakers, fmt))
    np.testing.assert_allclose(d.features["text"], direct, atol=1e-5)
    # editing utterance 0 changes the rows that see it (itself and the next k=2), not the others
    edited = synthetic_corpus(n_train=2, n_valid=1)
    edited.dialogues[0].texts[0] = "something completely different"
    attach_features(edited, {"text": ex}, tmp_path / "cache", progress=False)
    diff = np.abs(edited.dialogues[0].features["text"] - direct).max(axis=1)
    assert (diff[:3] > 1e-4).all() and (diff[3:] < 1e-5).all(), diff


def test_onnx_export_of_the_merged_encoder_matches_torch(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from export.text_encoder import export_context_encoder
    from train.features.text_context import OnnxContextTextExtractor

    export_context_encoder(trained.out, tmp_path / "onnx")
    onnx_ex = OnnxContextTextExtractor(tmp_path / "onnx")
    torch_ex = ContextTextExtractor(trained.out, device="cpu")
    assert onnx_ex.identity == torch_ex.identity
    d = synthetic_corpus().dialogues[-1]
    items = [UtteranceInput(text=t, speaker=s, context=[UtteranceInput(text=pt, speaker=ps) for pt, ps in zip(d.texts[:i], d.speakers[:i])]) for i, (t, s) in enumerate(zip(d.texts, d.speakers))]
    np.testing.assert_allclose(onnx_ex.extract(items), torch_ex.extract(items), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# CLI errors


def _cli(*args, cwd=REPO):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "train.finetune", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_cli_bad_input_is_one_line(tmp_path):
    r = _cli("--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "config file not found" in r.stderr
    r = _cli("--config", str(REPO / "configs" / "iemocap-encoder.yaml"), "--out", str(tmp_path / "o"), "--resume")
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--config", str(REPO / "configs" / "iemocap-encoder.yaml"), "--data", str(tmp_path / "none.pkl"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "none.pkl" in r.stderr and "Traceback" not in r.stderr


def test_extractor_refuses_a_directory_without_adapter(tmp_path):
    with pytest.raises(InputError, match="missing encoder.json|no such"):
        ContextTextExtractor(tmp_path)
