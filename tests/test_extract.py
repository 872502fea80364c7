"""Feature extraction over a corpus: the npz cache, attach_features, media manifests and the CLI."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import wave
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from train.data.corpus import Corpus, Dialogue
from train.common import InputError, run_cli
from train.extract import attach_features, cache_path, extract_corpus
from train.extract.__main__ import main as cli_main
from train.features import registry
from train.features.base import ExtractorIdentity, UtteranceInput
from train.features.cache import FeatureFile, content_key, plan_reuse
from train.features.text import MiniLMExtractor

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

SENTENCES = {
    "d1": ["Hi, how are you?", "I'm great, thanks!", "I can't believe you did that.", "Sorry, I didn't mean it."],
    "d2": ["Where were you last night?", "", "Don't lie to me!"],
    "d3": ["This is wonderful news.", "Hi, how are you?"],  # a repeat of d1[0]: computed once
}


class Counting:
    """Wraps an extractor and counts the utterances it was asked to compute."""

    def __init__(self, inner, identity: ExtractorIdentity | None = None):
        self.inner = inner
        self.identity = identity or inner.identity
        self.batch_size = getattr(inner, "batch_size", 32)
        self.seen: list[UtteranceInput] = []

    def __getattr__(self, name):  # other attributes (context_turns, ...) are the inner extractor's
        return getattr(self.inner, name)

    def extract(self, items: Sequence[UtteranceInput]) -> np.ndarray:
        self.seen.extend(items)
        return self.inner.extract(items)


def make_corpus(sentences=SENTENCES, source="synthetic.pkl") -> Corpus:
    dialogues = []
    for i, (did, texts) in enumerate(sentences.items()):
        n = len(texts)
        dialogues.append(
            Dialogue(id=did, split="train" if i else "valid", speakers=["M", "F"] * (n // 2) + ["M"] * (n % 2),
                     labels=np.arange(n, dtype=np.int64) % 6, texts=list(texts))
        )
    return Corpus(dataset="iemocap", labels=["happy", "sad", "neutral", "angry", "excited", "frustrated"], dialogues=dialogues, source=source, format="cosmic")


@pytest.fixture(scope="module")
def minilm() -> MiniLMExtractor:
    ex = MiniLMExtractor(device="cpu", batch_size=16)
    ex.model
    return ex


# --- the cache file -------------------------------------------------------------------------


def test_feature_file_round_trip_and_atomic_write(tmp_path):
    ident = ExtractorIdentity("toy", "text", 3, "v1")
    ff = FeatureFile(ident, {"a b/1": np.arange(6, dtype=np.float32).reshape(2, 3), "z": np.full((1, 3), np.nan, np.float32)},
                     {"a b/1": ["k1", "k2"], "z": ["k3"]}, {"dataset": "x"})
    path = ff.save(tmp_path / "f.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]  # no temp file left
    back = FeatureFile.load(path)
    assert back.identity == ident and back.meta == {"dataset": "x"}
    assert list(back.features) == ["a b/1", "z"] and back.keys == ff.keys
    np.testing.assert_array_equal(back.features["a b/1"], ff.features["a b/1"])
    assert np.isnan(back.features["z"]).all()
    with np.load(path, allow_pickle=False) as z:  # plain arrays only: readable without pickle
        assert z["a b/1"].shape == (2, 3)


def test_foreign_file_is_refused_and_kept(tmp_path):
    precious = tmp_path / "data.npz"
    precious.write_text("not a feature file")
    with pytest.raises(InputError, match="data.npz: not a readable feature file"):
        FeatureFile.load(precious)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="no __meta__"):
        FeatureFile.load(tmp_path / "other.npz")
    toy = Counting(_Toy())
    with pytest.raises(InputError):
        extract_corpus(make_corpus(), toy, precious, progress=False)
    assert precious.read_text() == "not a feature file" and not toy.seen


def test_plan_reuse_by_key_and_identity():
    ident = ExtractorIdentity("toy", "text", 2, "v1")
    old = FeatureFile(ident, {"a": np.array([[1, 2], [3, 4]], np.float32)}, {"a": ["k1", "k2"]})
    plan = plan_reuse(old, ident, {"a": ["k2", "kx"], "b": ["k1"]})
    assert plan.reused == 2 and plan.total == 3 and plan.pending == [("a", 1)]
    np.testing.assert_array_equal(plan.features["a"][0], [3, 4])
    np.testing.assert_array_equal(plan.features["b"][0], [1, 2])
    other = plan_reuse(old, ExtractorIdentity("toy", "text", 2, "v2"), {"a": ["k1", "k2"]})
    assert other.reused == 0 and len(other.pending) == 2


# --- extraction with reuse ------------------------------------------------------------------


def test_extract_reuses_rows_and_recomputes_only_changes(tmp_path, minilm):
    out = tmp_path / "feats.npz"
    first = Counting(minilm)
    feats, stats = extract_corpus(make_corpus(), first, out, progress=False)
    n = sum(len(t) for t in SENTENCES.values())
    assert (stats.total, stats.reused, stats.computed, stats.empty) == (n, 0, n, 1)
    assert len(first.seen) == n - 1  # the repeated sentence is computed once
    assert feats["d1"].shape == (4, 384) and feats["d1"].dtype == np.float32
    assert np.isnan(feats["d2"][1]).all() and np.isfinite(feats["d2"][[0, 2]]).all()
    np.testing.assert_array_equal(feats["d3"][1], feats["d1"][0])

    again = Counting(minilm)
    feats2, stats2 = extract_corpus(make_corpus(), again, out, progress=False)
    assert again.seen == [] and stats2.reused == n and stats2.computed == 0
    for did in feats:
        np.testing.assert_array_equal(feats2[did], feats[did])

    edited = {k: list(v) for k, v in SENTENCES.items()}
    edited["d1"][2] = "I can't believe you actually did that."
    one = Counting(minilm)
    feats3, stats3 = extract_corpus(make_corpus(edited), one, out, progress=False)
    assert [it.text for it in one.seen] == [edited["d1"][2]] and stats3.computed == 1 and stats3.reused == n - 1
    np.testing.assert_array_equal(feats3["d1"][[0, 1, 3]], feats["d1"][[0, 1, 3]])
    assert not np.array_equal(feats3["d1"][2], feats["d1"][2])
    np.testing.assert_allclose(feats3["d1"][2], minilm.encode([edited["d1"][2]])[0], atol=1e-5)
    assert FeatureFile.load(out).keys["d1"][2] == content_key("text", edited["d1"][2])

    new_identity = ExtractorIdentity("minilm", "text", 384, minilm.identity.version + "-other")
    fresh = Counting(minilm, identity=new_identity)
    _, stats4 = extract_corpus(make_corpus(edited), fresh, out, progress=False)
    assert stats4.reused == 0 and len(fresh.seen) == n - 1
    assert FeatureFile.load(out).identity == new_identity


class _Toy:
    """A cheap deterministic text extractor: (len, vowels, words); NaN for blank text."""

    identity = ExtractorIdentity("toy", "text", 3, "1")
    batch_size = 2

    def extract(self, items):
        return np.array([[len(t), sum(c in "aeiou" for c in t), len(t.split())] if (t := it.text or "").strip() else [np.nan] * 3
                         for it in items], dtype=np.float32).reshape(len(items), 3)


def test_attach_features_fills_every_dialogue(tmp_path):
    corpus = make_corpus()
    out = attach_features(corpus, {"text": Counting(_Toy())}, tmp_path / "cache", progress=False)
    assert out is corpus
    for d in corpus.dialogues:
        assert d.features["text"].shape == (len(d), 3) and d.features["text"].dtype == np.float32
    np.testing.assert_array_equal(corpus.dialogues[0].features["text"][0], [16, 6, 4])
    files = list((tmp_path / "cache").iterdir())
    assert files == [cache_path(tmp_path / "cache", corpus, _Toy.identity)]
    assert files[0].name.startswith("iemocap_synthetic_toy_")
    counting = Counting(_Toy())
    attach_features(make_corpus(), {"text": counting}, tmp_path / "cache", progress=False)
    assert counting.seen == []  # served from the cache


def test_attach_features_by_name_uses_the_registry(tmp_path, minilm):
    corpus = make_corpus({"d1": SENTENCES["d1"]})
    attach_features(corpus, {"text": "minilm"}, tmp_path, extractor_kwargs={"text": {"batch_size": 4}}, progress=False)
    np.testing.assert_allclose(corpus.dialogues[0].features["text"], minilm.encode(SENTENCES["d1"]), atol=1e-5)


def test_attach_features_bad_input(tmp_path):
    no_text = make_corpus()
    for d in no_text.dialogues:
        d.texts = None
    with pytest.raises(InputError, match="corpus has none"):
        attach_features(no_text, {"text": _Toy()}, tmp_path, progress=False)
    with pytest.raises(InputError, match="unknown modality 'smell'"):
        attach_features(make_corpus(), {"smell": _Toy()}, tmp_path, progress=False)
    with pytest.raises(InputError, match="makes text features, not audio"):
        attach_features(make_corpus(), {"audio": _Toy()}, tmp_path, progress=False)
    with pytest.raises(InputError, match="audio features need the recordings.*dialogue_id, utterance_index, path, start, end"):
        attach_features(make_corpus(), {"audio": _Rms()}, tmp_path, progress=False)
    with pytest.raises(InputError, match="unknown feature extractor 'nope'"):
        attach_features(make_corpus(), {"text": "nope"}, tmp_path, progress=False)


# --- audio / visual through a media manifest ------------------------------------------------


class _Rms:
    """Audio extractor for tests: (RMS, seconds); NaN row without audio."""

    identity = ExtractorIdentity("rms", "audio", 2, "1")

    def extract(self, items):
        return np.array([[np.sqrt(np.mean(it.audio**2)), len(it.audio) / it.sample_rate] if it.audio is not None and len(it.audio) else [np.nan] * 2
                         for it in items], dtype=np.float32).reshape(len(items), 2)


class _MeanPixel:
    """Visual extractor for tests: (mean B, mean G, mean R, frames); NaN row without frames."""

    identity = ExtractorIdentity("meanpix", "visual", 4, "1")

    def extract(self, items):
        rows = []
        for it in items:
            f = list(it.frames or [])
            rows.append([*np.mean([x.reshape(-1, 3).mean(0) for x in f], 0), len(f)] if f else [np.nan] * 4)
        return np.array(rows, dtype=np.float32).reshape(len(items), 4)


def _write_wav(path: Path, segments: list[tuple[float, float]], sr: int = 16000) -> None:
    """Silence with (seconds, amplitude) tones one after the other."""
    audio = np.concatenate([amp * np.sin(2 * np.pi * 220 * np.arange(int(sec * sr)) / sr) for sec, amp in segments])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr)
        w.writeframes((audio * 32767).astype("<i2").tobytes())


def test_audio_and_visual_from_manifest(tmp_path):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("av")
    _write_wav(tmp_path / "d2.wav", [(1.0, 0.1), (1.0, 0.5), (1.0, 0.0)])
    video = cv2.VideoWriter(str(tmp_path / "d2.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(30):  # 1 s dark, 1 s bright, 1 s mid-grey
        video.write(np.full((24, 32, 3), (20, 230, 120)[i // 10], np.uint8))
    video.release()
    (tmp_path / "audio.csv").write_text(
        "dialogue_id,utterance_index,path,start,end\nd2,0,d2.wav,0.0,1.0\nd2,1,d2.wav,1.0,2.0\nd2,2,d2.wav,2.0,\nelsewhere,0,d2.wav,,\n"
    )
    (tmp_path / "video.csv").write_text("dialogue_id,utterance_index,path,start,end\nd2,0,d2.avi,0.0,0.9\nd2,1,d2.avi,1.0,1.9\n")
    corpus = make_corpus({"d1": SENTENCES["d1"], "d2": SENTENCES["d2"]})
    attach_features(corpus, {"audio": _Rms()}, tmp_path / "cache", media=tmp_path / "audio.csv", progress=False)
    a = corpus.dialogues[1].features["audio"]
    np.testing.assert_allclose(a[:, 0], [0.1 / np.sqrt(2), 0.5 / np.sqrt(2), 0.0], atol=2e-3)
    np.testing.assert_allclose(a[:, 1], [1.0, 1.0, 1.0], atol=1e-3)
    assert np.isnan(corpus.dialogues[0].features["audio"]).all()  # d1 has no recordings: masked, not zero

    attach_features(corpus, {"visual": _MeanPixel()}, tmp_path / "cache", media=tmp_path / "video.csv", progress=False)
    v = corpus.dialogues[1].features["visual"]
    assert v[0, :3].mean() < 40 and v[1, :3].mean() > 200 and np.isnan(v[2]).all()
    assert 3 <= v[0, 3] <= 5  # 4 frames per second of span

    with pytest.raises(InputError, match=r"bad.csv: row 2: media file not found"):
        (tmp_path / "bad.csv").write_text("dialogue_id,utterance_index,path,start,end\nd2,0,missing.wav,0,1\n")
        attach_features(corpus, {"audio": _Rms()}, tmp_path / "cache", media=tmp_path / "bad.csv", progress=False)
    with pytest.raises(InputError, match=r"lacks column\(s\) path"):
        (tmp_path / "bad.csv").write_text("dialogue_id,utterance_index,file\nd2,0,x\n")
        attach_features(corpus, {"audio": _Rms()}, tmp_path / "cache", media=tmp_path / "bad.csv", progress=False)
    with pytest.raises(InputError, match=r"row 2: end 1.0 <= start 2.0"):
        (tmp_path / "bad.csv").write_text("dialogue_id,utterance_index,path,start,end\nd2,0,d2.wav,2,1\n")
        attach_features(corpus, {"audio": _Rms()}, tmp_path / "cache", media=tmp_path / "bad.csv", progress=False)


# --- the CLI --------------------------------------------------------------------------------


def write_cosmic_iemocap(path: Path, sentences=SENTENCES) -> None:
    """A small IEMOCAP file in COSMIC's layout: [speakers, labels, sentences, train, test, valid]."""
    ids = list(sentences)
    speakers = {d: ["M", "F"] * (len(s) // 2) + ["M"] * (len(s) % 2) for d, s in sentences.items()}
    labels = {d: [i % 6 for i in range(len(s))] for d, s in sentences.items()}
    with open(path, "wb") as f:
        pickle.dump([speakers, labels, {d: list(s) for d, s in sentences.items()}, ids[:2], [], ids[2:]], f, protocol=2)


def test_cli_end_to_end(tmp_path, minilm, capsys):
    data = tmp_path / "iemocap_small.pkl"
    out = tmp_path / "out" / "text.npz"
    sentences = {k: [s or "Okay." for s in v] for k, v in SENTENCES.items()}  # the loader refuses nothing here
    write_cosmic_iemocap(data, sentences)
    n = sum(len(v) for v in sentences.values())

    assert run_cli(cli_main, ["text", "--data", str(data), "--out", str(out), "--batch-size", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"reused 0/{n} utterances" in printed and f"3 dialogues, {n} utterances x 384" in printed
    with np.load(out, allow_pickle=False) as z:
        assert z["d2"].shape == (3, 384) and z["__keys__/d2"].shape == (3,)
        np.testing.assert_allclose(z["d2"], minilm.encode(sentences["d2"]), atol=1e-5)
        d1 = z["d1"]

    assert run_cli(cli_main, ["text", "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert f"reused {n}/{n} utterances, computed 0" in capsys.readouterr().out

    sentences["d1"][1] = "I'm not great at all."
    write_cosmic_iemocap(data, sentences)
    assert run_cli(cli_main, ["text", "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert f"reused {n - 1}/{n} utterances, computed 1" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["d1"][[0, 2, 3]], d1[[0, 2, 3]])


def _run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.extract", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    r = _run_module("text", "--data", str(tmp_path / "missing.pkl"), "--out", str(tmp_path / "o.npz"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.pkl" in lines[0], r.stderr
    assert not (tmp_path / "o.npz").exists()

    data = tmp_path / "d.pkl"
    write_cosmic_iemocap(data)
    r = _run_module("audio", "--data", str(data), "--out", str(tmp_path / "a.npz"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and "needs --media MANIFEST" in r.stderr

    r = _run_module("text", "--data", str(data), "--out", str(tmp_path / "o.npz"), "--backend", "onnx")
    assert r.returncode == 2 and "--encoder DIR" in r.stderr

    r = _run_module("text", "--data", str(tmp_path / "missing.pkl"), "--out", str(tmp_path / "o.npz"), "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr  # --debug keeps the traceback


@pytest.mark.skipif(not (SHARED / "iemocap" / "iemocap_trainval.pkl").is_file(), reason=f"shared data not found at {SHARED}")
def test_real_iemocap_dialogues(tmp_path, minilm):
    from train.data import load_corpus

    corpus = load_corpus(SHARED / "iemocap" / "iemocap_trainval.pkl")
    corpus.dialogues = corpus.dialogues[:2]
    attach_features(corpus, {"text": minilm}, tmp_path, progress=False)
    for d in corpus.dialogues:
        f = d.features["text"]
        assert f.shape == (len(d), 384)
        blank = np.array([not t.strip() for t in d.texts])
        assert np.isfinite(f[~blank]).all() and np.isnan(f[blank]).all()


class _PastAware(_Toy):
    """Toy encoder that reads one past turn (like a context fine-tuned encoder would)."""

    identity = ExtractorIdentity("past", "text", 3, "1")
    context_turns = 1

    def extract(self, items):
        self.contexts = [[c.text for c in it.context] for it in items]
        return super().extract(items)


def test_context_aware_extractor_gets_past_turns_and_keys_follow_them(tmp_path):
    ex = Counting(_PastAware())
    extract_corpus(make_corpus({"d1": ["A b.", "C d.", "E f."]}), ex, tmp_path / "p.npz", progress=False)
    assert sorted([c.text for c in it.context] for it in ex.seen) == [[], ["A b."], ["C d."]]
    again = Counting(_PastAware())
    extract_corpus(make_corpus({"d1": ["A b.", "Changed.", "E f."]}), again, tmp_path / "p.npz", progress=False)
    # the changed turn and the turn that sees it as context are recomputed
    assert sorted(it.text for it in again.seen) == ["Changed.", "E f."]
