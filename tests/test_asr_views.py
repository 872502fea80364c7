"""data.asr_transcripts: training dialogues as the live ASR heard them (train.data.asr_views, runtime.tools.asr_transcripts)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from train.common import InputError
from train.data.asr_views import SUFFIX, add_asr_views, read_asr_transcripts
from train.data.corpus import Corpus, Dialogue


def _corpus():
    def d(i, split, texts):
        return Dialogue(i, split, ["M", "F"] * (len(texts) // 2) + ["M"] * (len(texts) % 2), np.arange(len(texts)) % 3,
                        texts=list(texts), features={"text": np.zeros((len(texts), 4), np.float32)})
    return Corpus("iemocap", ["a", "b", "c"], [d("t1", "train", ["Hi there.", "[LAUGHTER]", "Go away!"]),
                                              d("t2", "train", ["Fine.", "Good."]),
                                              d("v1", "valid", ["Okay.", "Bye."])], source="c.pkl")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_replace_and_add(tmp_path):
    f = _write(tmp_path / "asr.jsonl", [{"dialogue": "t1", "texts": ["Hi the air.", None, "Go way!"]}])
    c = _corpus()
    r = add_asr_views(c, f, "replace")
    assert [d.id for d in r.dialogues] == ["t1", "t2", "v1"]
    t1 = r.dialogues[0]
    assert t1.texts == ["Hi the air.", "[LAUGHTER]", "Go way!"]  # null keeps the gold text
    assert t1.features == {}  # the gold text's features do not describe the heard text
    assert np.array_equal(t1.labels, c.dialogues[0].labels) and t1.speakers == c.dialogues[0].speakers
    assert r.dialogues[1] is c.dialogues[1] and r.dialogues[2] is c.dialogues[2]
    a = add_asr_views(c, f, "add")
    assert [d.id for d in a.dialogues] == ["t1", "t1" + SUFFIX, "t2", "v1"]
    assert a.dialogues[0] is c.dialogues[0] and a.dialogues[1].texts[2] == "Go way!" and a.dialogues[1].split == "train"
    assert any("as the live ASR heard them" in n for n in a.notes)


def test_several_files_are_several_views(tmp_path):
    """data.asr_transcripts as a list: one view per file (e.g. other voices) beside or in place of the gold one."""
    f1 = _write(tmp_path / "ab.jsonl", [{"dialogue": "t1", "texts": ["Hi the air.", None, "Go way!"]}])
    f2 = _write(tmp_path / "cd.jsonl", [{"dialogue": "t1", "texts": ["High there.", None, "Go away."]},
                                        {"dialogue": "t2", "texts": ["Find.", "Good."]}])
    r = add_asr_views(_corpus(), [f1, f2], "replace")
    assert [d.id for d in r.dialogues] == ["t1", "t1~asr2", "t2", "v1"]
    assert r.dialogues[0].texts[0] == "Hi the air." and r.dialogues[1].texts[0] == "High there."
    assert r.dialogues[2].texts == ["Find.", "Good."]  # covered by the second file only: its one view replaces it
    a = add_asr_views(_corpus(), [f1, f2], "add")
    assert [d.id for d in a.dialogues] == ["t1", "t1" + SUFFIX, "t1~asr2", "t2", "t2" + SUFFIX, "v1"]
    assert add_asr_views(_corpus(), [f1], "add").dialogues[1].id == add_asr_views(_corpus(), f1, "add").dialogues[1].id
    with pytest.raises(InputError, match="empty list"):
        add_asr_views(_corpus(), [], "replace")


def test_a_config_names_several_transcript_files(tmp_path):
    from train.config import build_dataclass, DataConfig

    assert build_dataclass(DataConfig, {"asr_transcripts": ["a.jsonl", "b.jsonl"]}).asr_transcripts == ["a.jsonl", "b.jsonl"]
    assert build_dataclass(DataConfig, {"asr_transcripts": "a.jsonl"}).asr_transcripts == "a.jsonl"
    with pytest.raises(InputError, match="asr_transcripts"):
        build_dataclass(DataConfig, {"asr_transcripts": 3})


def test_resume_refuses_lines_spoken_with_other_voices(tmp_path):
    from runtime.tools.asr_transcripts import read_done

    f = _write(tmp_path / "t.jsonl", [{"dialogue": "a", "texts": ["x"], "voices": ["C", "D"]}])
    assert read_done(f, ["C", "D"]) == {"a": ["x"]}
    with pytest.raises(InputError, match="spoken with voices C D, this run's are A B"):
        read_done(f, ["A", "B"])
    old = _write(tmp_path / "old.jsonl", [{"dialogue": "a", "texts": ["x"]}])  # before --voices: the default
    from runtime.evaluate_live import checked_voices

    assert read_done(old, checked_voices(None)) == {"a": ["x"]}
    with pytest.raises(InputError, match="give another --out"):
        read_done(old, ["C", "D"])


@pytest.mark.parametrize("rows, match", [
    ([{"dialogue": "nope", "texts": ["x"]}], "not in c.pkl"),
    ([{"dialogue": "v1", "texts": ["x", "y"]}], "only training dialogues"),
    ([{"dialogue": "t2", "texts": ["x"]}], "has 2 utterances, its ASR transcripts 1"),
    ([{"dialogue": "t2", "texts": "Fine. Good."}], "list of strings or nulls"),
    ([{"texts": ["x", "y"]}], "line 1 is not an ASR transcript line"),
])
def test_bad_transcripts_are_refused_by_name(tmp_path, rows, match):
    f = _write(tmp_path / "asr.jsonl", rows)
    with pytest.raises(InputError, match=match) as e:
        add_asr_views(_corpus(), f)
    assert "asr.jsonl" in str(e.value)


def test_missing_file_mode_and_config_checks(tmp_path):
    from tests.test_model import make_cfg

    with pytest.raises(InputError, match="runtime.tools.asr_transcripts"):
        read_asr_transcripts(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="asr_mode"):
        add_asr_views(_corpus(), _write(tmp_path / "a.jsonl", []), "both")
    with pytest.raises(InputError, match="asr_mode must be one of replace, add"):
        make_cfg(["text"], data={"asr_transcripts": "a.jsonl", "asr_mode": "both"})
    with pytest.raises(InputError, match="do not go together"):
        make_cfg(["text"], data={"asr_transcripts": "a.jsonl", "crossfit": {"text": "c.npz"}})


def test_training_data_carries_the_heard_texts_features(tmp_path):
    """prepare_data embeds the ASR texts of the replaced dialogue; the others keep their gold features."""
    from tests.live_fixtures import write_text_corpus
    from tests.train_fixtures import tiny_config, write_config
    from train.config import load_config
    from train.data import load_corpus
    from train.trainer import prepare_data

    data = write_text_corpus(tmp_path / "text.pkl")
    corpus = load_corpus(data)
    target = corpus.split("train")[0]
    heard = ["I am so angry right now!"] * len(target)
    f = _write(tmp_path / "asr.jsonl", [{"dialogue": target.id, "texts": heard}])
    raw = tiny_config()
    raw["data"].update({"extractors": {"text": "minilm"}, "cache_dir": str(tmp_path / "cache"), "path": str(data)})
    plain = prepare_data(load_config(write_config(tmp_path / "a.yaml", raw)))
    raw["data"]["asr_transcripts"] = str(f)
    with_asr = prepare_data(load_config(write_config(tmp_path / "b.yaml", raw)))
    by_id = lambda p: {d.id: d for d in p.train}  # noqa: E731
    a, b = by_id(plain), by_id(with_asr)
    assert a.keys() == b.keys() and b[target.id].texts == heard
    x = b[target.id].features["text"]
    assert np.allclose(x, x[0], atol=1e-6) and not np.allclose(x, a[target.id].features["text"], atol=1e-3)
    other = next(i for i in a if i != target.id)
    assert np.array_equal(a[other].features["text"], b[other].features["text"])
    assert [d.id for d in with_asr.valid] == [d.id for d in plain.valid]
    raw["data"]["asr_transcripts"] = []  # refused, not read as "no transcripts"
    with pytest.raises(InputError, match="empty list"):
        prepare_data(load_config(write_config(tmp_path / "c.yaml", raw)))


def test_transcripts_file_resumes_and_drops_an_interrupted_line(tmp_path, caplog):
    from runtime.tools.asr_transcripts import read_done

    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"dialogue": "a", "texts": ["x", None]}) + "\n" + '{"dialogue": "b", "te', encoding="utf-8")
    assert read_done(f) == {"a": ["x", None]}
    assert f.read_text(encoding="utf-8").count("\n") == 1 and '"b"' not in f.read_text(encoding="utf-8")
    f.write_text('{"broken\n' + json.dumps({"dialogue": "a", "texts": []}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1"):
        read_done(f)


def test_resume_and_training_read_blank_lines_alike(tmp_path):
    from runtime.tools.asr_transcripts import read_done
    from train.data.asr_views import read_asr_transcripts

    f = tmp_path / "t.jsonl"
    rows = [json.dumps({"dialogue": d, "texts": [d]}) for d in ("a", "b")]
    f.write_text(rows[0] + "\n\n" + rows[1] + "\n\n", encoding="utf-8")
    assert read_done(f) == read_asr_transcripts(f) == {"a": ["a"], "b": ["b"]}
    # an interrupted write followed by blank lines is still the last line: dropped, not refused
    f.write_text(rows[0] + "\n" + '{"dialogue": "b", "te' + "\n\n", encoding="utf-8")
    assert read_done(f) == {"a": ["a"]} and read_asr_transcripts(f) == {"a": ["a"]}


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox")
def test_command_transcribes_a_training_dialogue_once(tmp_path, capsys):
    pytest.importorskip("faster_whisper")
    from runtime.tools.asr_transcripts import main
    from tests.live_fixtures import write_text_corpus

    data = write_text_corpus(tmp_path / "text.pkl")
    out = tmp_path / "asr.jsonl"
    args = ["--data", str(data), "--split", "train", "--dialogues", "1", "--out", str(out), "--work", str(tmp_path / "r")]
    assert main(args) == 0
    row = json.loads(out.read_text(encoding="utf-8"))
    from train.data import load_corpus

    d = load_corpus(data).split("train")[0]
    assert row["dialogue"] == d.id and len(row["texts"]) == len(d)
    heard = [t for t in row["texts"] if t]
    assert len(heard) >= len(d) - 1  # tiny.en hears these plain sentences
    from runtime.evaluate_live import word_edits

    edits, words = map(sum, zip(*(word_edits(g, t) for g, t in zip(d.texts, row["texts"]) if t)))
    assert edits / words <= 0.3
    assert "1 transcribed now" in capsys.readouterr().out
    assert main(args) == 0 and "0 transcribed now, 1 already there" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8").count("\n") == 1
    with pytest.raises(SystemExit):
        main([*args[:2], "--split", "test", "--out", str(out)])  # never a test split
