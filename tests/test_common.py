"""train.common (atomic writes, the file hash) and the concepts defined once for all floors:
the conversation window, "a row is present when all its values are finite", the past text turns."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from train.common import InputError, atomic_dir, atomic_file, file_sha256, move_into_place, write_text_atomic


def test_atomic_file_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.onnx"
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".onnx" and tmp != target  # suffix kept
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    mode = stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.onnx"]


def test_atomic_dir_replaces_a_whole_directory(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_move_into_place_and_the_file_hash(tmp_path):
    src = tmp_path / "rec.partial.wav"
    src.write_bytes(b"abc")
    os.chmod(src, 0o600)
    dst = move_into_place(src, tmp_path / "rec.wav")
    assert not src.exists() and dst.read_bytes() == b"abc" and stat.S_IMODE(dst.stat().st_mode) & 0o044
    assert file_sha256(dst) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    write_text_atomic(dst, "abcd")  # new size and mtime: the memo does not serve the old digest
    assert file_sha256(dst) == "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"


def test_conversation_window_keeps_the_newest_utterances_in_order():
    from train.graph import ConversationWindow

    w = ConversationWindow(3)
    for i in range(5):
        w.append({"text": np.full(2, i, np.float32), "audio": [float(i)]}, speaker=i % 2)
    feats, speakers = w.arrays(["text", "audio"])
    assert len(w) == 3 and feats["text"][:, 0].tolist() == [2, 3, 4] and feats["audio"].shape == (3, 1)
    assert speakers.tolist() == [0, 1, 0] and speakers.dtype == np.int64
    with pytest.raises(ValueError):
        ConversationWindow(0)


def test_a_row_is_present_when_all_its_values_are_finite():
    from train.graph import present_rows

    x = np.array([[1.0, 2.0], [np.nan, 1.0], [np.inf, 0.0], [0.0, 0.0]])
    assert present_rows(x).tolist() == [True, False, False, True]
    assert bool(present_rows(x[0])) and not bool(present_rows(x[1]))  # one row too


def test_an_encoder_reading_more_past_turns_than_the_runtime_keeps_is_refused():
    from train.features.base import MAX_CONTEXT_TURNS
    from train.features.text_context import ContextFormat

    assert ContextFormat(turns=MAX_CONTEXT_TURNS).turns == MAX_CONTEXT_TURNS
    with pytest.raises(InputError, match=f"0..{MAX_CONTEXT_TURNS}"):
        ContextFormat(turns=MAX_CONTEXT_TURNS + 1)


def test_advice_names_the_interpreter_that_runs(tmp_path, monkeypatch):
    """Commands in error messages are spelled so that they run when pasted: from the repository
    root with the project's virtual environment that is ``.venv/bin/python -m ...`` (a bare
    ``python`` there lacks the packages), elsewhere the interpreter's full path."""
    import sys
    from pathlib import Path

    from export.backends import resolve_export_dir
    from train.common import python_m

    if sys.prefix == sys.base_prefix:
        assert python_m("export") == "python -m export"
        return
    exe = Path(sys.executable)
    monkeypatch.chdir(tmp_path)
    assert python_m("export --int8") == f"{exe} -m export --int8"
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    if exe.is_relative_to(root):  # the README's set-up: .venv in the repository
        assert python_m("export") == f"{exe.relative_to(root)} -m export"
    model = tmp_path / "model"  # a model directory without its export
    model.mkdir()
    with pytest.raises(InputError) as e:
        resolve_export_dir(model)
    assert f"export it with: {python_m('export --model')} {model} --out" in str(e.value), str(e.value)
