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


def test_encoder_config_set_overrides_are_checked_like_the_file():
    """``train.finetune --set``: the 4-turn context encoders of the README are the 8-turn configs
    with two values changed; a bad value or key is refused naming the file and the override."""
    for name in ("iemocap", "meld"):
        path = REPO / "configs" / f"{name}-ctx8-encoder.yaml"
        assert load_encoder_config(path).context.turns == 8 and load_encoder_config(path).adapted_layers == [0, 1, 2, 3, 4, 5]
        cfg = load_encoder_config(path, ["context.turns=4", "context.max_length=160"])
        assert (cfg.context.turns, cfg.context.max_length, cfg.lora.layers) == (4, 160, 6)
    with pytest.raises(InputError, match=r"ctx8-encoder\.yaml with --set context\.turns=9.*0\.\.8"):
        load_encoder_config(path, ["context.turns=9"])
    with pytest.raises(InputError, match="lora.rr"):
        load_encoder_config(path, ["lora.rr=9"])
    with pytest.raises(InputError, match="KEY=VALUE"):
        load_encoder_config(path, ["context.turns"])


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


# ---------------------------------------------------------------------------------------------
# Bases, the kept frozen-layer cache, cross-fitted training features


def test_base_choice_is_checked():
    cfg = encoder_config_from_dict({"base": "mpnet", "lora": {"layers": 12, "targets": []}}, source="c.yaml")
    assert cfg.adapted_layers == list(range(12)) and "attention.attn.q" in cfg.lora_targets
    with pytest.raises(InputError, match="unknown base encoder 'bert'"):
        encoder_config_from_dict({"base": "bert"}, source="c.yaml")
    with pytest.raises(InputError, match="lora.layers must be in 1..6"):
        encoder_config_from_dict({"lora": {"layers": 7}}, source="c.yaml")
    with pytest.raises(InputError, match="unknown.*for base mpnet"):  # BERT's names are not mpnet's
        encoder_config_from_dict({"base": "mpnet", "lora": {"targets": ["attention.self.query"]}}, source="c.yaml")
    with pytest.raises(InputError, match="crossfit_folds must be 0 .* or >= 2"):
        encoder_config_from_dict({"train": {"crossfit_folds": 1}}, source="c.yaml")
    # speakers "none" with no turns: the transcript alone, as the frozen encoder reads it
    fmt = ContextFormat(turns=0, speakers="none")
    assert format_turns("  Hello   there ", "M", [("before", "F")], fmt) == "Hello there"
    assert format_turns("Hi", "M", [("before", "F")], ContextFormat(turns=1, speakers="none")) == "Hi [SEP] before"


def test_kept_frozen_cache_is_reused_and_keyed_by_the_texts(tmp_path):
    import torch

    from train.encoder_tuning import BottomCache, ContextEncoder

    cfg = tiny_cfg()
    model = ContextEncoder(cfg, len(LABELS))
    texts = ["short", "a much longer sentence than the first one", "middle one here"]
    first = BottomCache(model, texts, "x", progress=False, store=tmp_path)
    shards = list(tmp_path.glob("*/shard-*.safetensors"))
    assert len(shards) == 1
    again = BottomCache(model, texts, "x", progress=False, store=tmp_path)  # read back, not recomputed
    for a, b in zip(first.states, again.states):
        assert torch.equal(a, b)
    other = BottomCache(model, texts[:2], "x", progress=False, store=tmp_path)  # other texts: another key
    assert len(list(tmp_path.glob("*/shard-*.safetensors"))) == 2 and torch.equal(other.states[1], first.states[1])
    sub = first.subset([2, 0])
    assert len(sub) == 2 and sub.lengths.tolist() == [first.lengths[2], first.lengths[0]]


@pytest.fixture(scope="module")
def crossfitted(tmp_path_factory):
    """The tiny config cross-fitted over 2 folds, its parts run as separate calls (as parallel
    processes would), the encoder's features written into a feature cache."""
    from train.encoder_tuning import finetune

    root = tmp_path_factory.mktemp("cf")
    cfg = tiny_cfg(crossfit_folds=2)
    corpus = synthetic_corpus()
    kw = dict(corpus=corpus, progress=False, frozen_cache=root / "frozen")
    first = finetune(cfg, root / "enc", part="fold-2", **kw)
    assert not first.finished and not (root / "enc" / "crossfit.npz").exists()
    finetune(cfg, root / "enc", part="main", features_cache=root / "features", **kw)
    assert not (root / "enc" / "crossfit.npz").exists()  # fold 1 is still missing
    last = finetune(cfg, root / "enc", part="fold-1", **kw)
    assert last.finished and (root / "enc" / "crossfit.npz").is_file()
    return root, cfg, corpus


def test_crossfit_rows_come_from_the_encoder_that_did_not_see_them(crossfitted):
    import torch

    from train.encoder_tuning import ContextEncoder, build_examples
    from train.encoder_tuning.loop import fold_of
    from train.features.cache import FeatureFile

    root, cfg, corpus = crossfitted
    out = root / "enc"
    ff = FeatureFile.load(out / "crossfit.npz")
    assert ff.identity == encoder_identity(out) and ff.meta["crossfit"]["folds"] == 2
    folds = fold_of([d.id for d in corpus.split("train")], 2, cfg.train.seed)
    assert set(ff.features) == set(folds) and sorted(set(folds.values())) == [0, 1]
    ex = build_examples(corpus, "train", cfg.context)
    models = {}
    for f in (0, 1):
        models[f] = ContextEncoder(cfg, len(LABELS))
        models[f].load_adapter(out / "folds" / f"fold-{f + 1}" / "best")
        models[f].train(False)
    main = ContextEncoder(cfg, len(LABELS))
    main.load_adapter(out)
    main.train(False)
    with torch.no_grad():
        for r, (did, i) in enumerate(ex.where):
            row = ff.features[did][i]
            own = models[folds[did]].embed([ex.texts[r]])[0].numpy()
            np.testing.assert_allclose(row, own, atol=1e-5)  # embedded by the fold's encoder...
            assert np.abs(row - main.embed([ex.texts[r]])[0].numpy()).max() > 1e-4  # ...not the main one


def test_features_cache_and_crossfit_feed_the_graph_training(crossfitted, tmp_path):
    from train.extract import attach_features
    from train.extract.crossfit import apply_crossfit
    from train.features.cache import FeatureFile

    root, cfg, corpus = crossfitted
    out = root / "enc"
    ex = ContextTextExtractor(out, device="cpu")
    # the features the fine-tuner wrote from its cached frozen layers = the extractor's own
    fresh = synthetic_corpus()
    attach_features(fresh, {"text": ex}, tmp_path / "own", progress=False)
    prefilled = synthetic_corpus()
    files = list((root / "features").glob("*.npz"))
    assert len(files) == 1 and FeatureFile.load(files[0]).identity == ex.identity
    attach_features(prefilled, {"text": ex}, root / "features", progress=False)  # all rows reused
    for a, b in zip(fresh.dialogues, prefilled.dialogues):
        np.testing.assert_allclose(a.features["text"], b.features["text"], atol=2e-5)
    valid_before = [d.features["text"].copy() for d in prefilled.split("valid")]
    n = apply_crossfit(prefilled, "text", out / "crossfit.npz", ex.identity)
    assert n == sum(len(d) for d in prefilled.split("train"))
    crossfit = FeatureFile.load(out / "crossfit.npz")
    for d in prefilled.split("train"):
        np.testing.assert_array_equal(d.features["text"], crossfit.features[d.id])
    for d, before in zip(prefilled.split("valid"), valid_before):  # validation keeps the encoder's own features
        np.testing.assert_array_equal(d.features["text"], before)
    # another encoder's features, edited transcripts, a missing file: one-line errors
    from train.features.base import ExtractorIdentity

    with pytest.raises(InputError, match="cross-fitted features of minilm-ctx-tiny"):
        apply_crossfit(prefilled, "text", out / "crossfit.npz", ExtractorIdentity("minilm", "text", 384, "st-x"))
    edited = synthetic_corpus()
    attach_features(edited, {"text": ex}, root / "features", progress=False)
    edited.dialogues[0].texts[1] = "not what was embedded"
    with pytest.raises(InputError, match="transcripts of this dialogue differ"):
        apply_crossfit(edited, "text", out / "crossfit.npz", ex.identity)
    with pytest.raises(InputError, match="cross-fitted features not found.*crossfit_folds"):
        apply_crossfit(edited, "text", tmp_path / "none.npz", ex.identity)


class _TinyEncoder(ContextTextExtractor):
    """A registry entry for the cross-fitted tiny encoder (its directory is set by the test)."""

    directory = ""

    def __init__(self, path=None, *, device=None, batch_size=32):
        super().__init__(path or self.directory, device=device, batch_size=batch_size)


def test_graph_training_data_swaps_in_the_crossfitted_features(crossfitted):
    """data.crossfit of a graph config: the training split gets the out-of-fold rows, validation
    the encoder's own features."""
    from train.config import config_from_dict
    from train.features.cache import FeatureFile
    from train.features.registry import register
    from train.trainer import prepare_data

    root, cfg, corpus = crossfitted
    _TinyEncoder.directory = str(root / "enc")
    register("tiny-crossfit-test", f"{__name__}:_TinyEncoder", backend="torch")
    data = {"dataset": "iemocap", "modalities": ["text"], "extractors": {"text": "tiny-crossfit-test"}, "cache_dir": str(root / "features")}
    plain = prepare_data(config_from_dict({"data": data}, source="g.yaml"), corpus=synthetic_corpus())
    swapped = prepare_data(config_from_dict({"data": {**data, "crossfit": {"text": str(root / "enc" / "crossfit.npz")}}}, source="g.yaml"),
                           corpus=synthetic_corpus())
    crossfit = FeatureFile.load(root / "enc" / "crossfit.npz")
    for d, p in zip(swapped.train, plain.train):
        np.testing.assert_array_equal(d.features["text"], crossfit.features[d.id])
        assert np.abs(d.features["text"] - p.features["text"]).max() > 1e-4
    for d, p in zip(swapped.valid, plain.valid):
        np.testing.assert_array_equal(d.features["text"], p.features["text"])
    with pytest.raises(InputError, match="data.crossfit names 'audio'"):
        prepare_data(config_from_dict({"data": {**data, "crossfit": {"audio": "x.npz"}}}, source="g.yaml"), corpus=synthetic_corpus())


def test_mpnet_base_layers_split_at_the_cache_give_the_sentence_embedding():
    """bottom() then top() of mpnet (relative position bias recomputed above the cache) equals
    sentence-transformers' all-mpnet-base-v2 before any training (LoRA starts as the identity)."""
    import torch

    from train.encoder_tuning import ContextEncoder
    from train.features.text import MpnetExtractor

    try:
        ref_ex = MpnetExtractor(device="cpu")
    except InputError:
        pytest.skip("all-mpnet-base-v2 is not assembled (python -m train.setup_encoders)")
    cfg = load_encoder_config(REPO / "configs" / "iemocap-mpnet-encoder.yaml")
    model = ContextEncoder(cfg, len(LABELS))
    model.train(False)
    texts = ["Okay.", "Guess what, we won the championship game today!", "hmm"]
    with torch.no_grad():
        got = model.embed(texts).numpy()
        ids, mask = model.tokenize(texts[1:2])
        alone = model.top(model.bottom(ids, mask), mask).numpy()
    ref = ref_ex.encode(texts)
    np.testing.assert_allclose(got, ref, atol=1e-5)  # padded batch
    np.testing.assert_allclose(alone[0], ref[1], atol=1e-5)


def test_int8_calibration_comes_from_the_encoders_own_training_inputs(trained, tmp_path, caplog):
    """A fine-tuned encoder's smoothed INT8 is calibrated on its own training inputs, formatted as
    it reads them (``export.text_encoder.calibration_for``); without its data, on the built-in
    sentences, said in a warning."""
    import logging
    import shutil

    from export.text_encoder import BUILTIN_CALIBRATION, CALIBRATION_SAMPLES, CALIBRATION_TEXTS, calibration_for
    from tests import synthetic_pickles as sp
    from train.data import load_corpus
    from train.encoder_tuning import build_examples
    from train.features.text_context import ContextFormat

    enc = tmp_path / "enc"
    shutil.copytree(trained.out, enc)
    data = sp.write_pickle(tmp_path / "corpus.pkl", sp.make_cosmic_iemocap(n_dialogues=40, n_valid=4, n_test=0, min_len=4, max_len=8).obj)
    info = json.loads((enc / "encoder.json").read_text())
    info["training"]["data"], info["dataset"] = str(data), "iemocap"
    (enc / "encoder.json").write_text(json.dumps(info))

    cal = calibration_for(enc)
    corpus = load_corpus(data, dataset="iemocap")
    fmt = ContextFormat(**info["context"])
    train_inputs = build_examples(corpus, "train", fmt).texts
    assert len(cal.texts) == min(CALIBRATION_SAMPLES, len(train_inputs)) > 0
    assert set(cal.texts) <= set(train_inputs) and cal.source == f"{len(cal.texts)} training inputs of corpus.pkl"
    assert any(t.startswith("A: ") for t in cal.texts)  # formatted with the speaker tags this encoder reads
    assert calibration_for(enc) == cal  # the same texts every time: the export cache's key names them

    info["training"]["data"] = str(tmp_path / "gone.pkl")
    (enc / "encoder.json").write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING, logger="export.text_encoder"):
        fallback = calibration_for(enc)
    assert fallback.source == BUILTIN_CALIBRATION and list(fallback.texts) == CALIBRATION_TEXTS
    assert "gone.pkl" in caplog.text and "built-in sentences" in caplog.text
    assert calibration_for(None).source == BUILTIN_CALIBRATION
