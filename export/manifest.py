"""The export manifest: what an export directory holds and which trained model it came from.

``DIR/manifest.json`` (format ``ariigcn-export``) records every file with its SHA-256, size,
role and precision; the ONNX opset; the maximum window and the graph model's input names; the
model's label names and feature-extractor identities (a copy of the model directory's manifest,
so a torch-free runtime needs nothing else); the parity figures measured at export; and the
*model version*, a hash of the model directory's weights, config and manifest.

:func:`check_export` refuses an export whose files were replaced (an artifact from another
export) or, given the model directory, one made from another version of the model.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.common import ExportMismatchError, InputError, file_sha256, python_m, write_text_atomic
from train.features.base import ExtractorIdentity

MANIFEST_FILE = "manifest.json"
EXPORT_SUBDIR = "export"  # a model's own export: <model dir>/export
FORMAT = "ariigcn-export"
FORMAT_VERSION = 1

# File roles.
GRAPH = "graph"  # per-step graph model: window features + relations -> probabilities
TEXT_ENCODER = "text_encoder"
TOKENIZER = "tokenizer"
TEXT_CONTEXT = "text_context"  # context.json of a fine-tuned context encoder: how inputs are formatted
ENGINE = "trt_engine"


@dataclass
class FileEntry:
    """One exported file. ``precision``: fp32 | fp16 | int8 (None for a tokenizer)."""

    role: str
    precision: str | None
    sha256: str
    bytes: int
    details: dict[str, Any] = field(default_factory=dict)  # e.g. quantisation method, calibration size

    def to_dict(self) -> dict[str, Any]:
        d = {"role": self.role, "precision": self.precision, "sha256": self.sha256, "bytes": self.bytes}
        if self.details:
            d["details"] = self.details
        return d


@dataclass
class ExportManifest:
    """Contents of an export directory's ``manifest.json``.

    model: the model directory's own manifest (labels, dims, extractors, graph past/future).
    model_version: :func:`model_version` of the model directory exported.
    window: the largest window (number of newest utterances) the graph model accepts.
    graph_io: input/output names and the relation set of the graph ONNX.
    files: file name (relative to the export directory) -> entry.
    parity: figures measured at export (see export.__main__).
    """

    model: dict[str, Any]
    model_version: str
    opset: int
    window: int
    graph_io: dict[str, Any]
    files: dict[str, FileEntry] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    tools: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.model["labels"])

    @property
    def extractors(self) -> dict[str, ExtractorIdentity]:
        return {m: ExtractorIdentity(**e) for m, e in self.model["extractors"].items()}

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(d) for m, d in self.model["dims"].items()}

    def file(self, role: str, precision: str | None = None) -> str | None:
        """Name of the file with this role (and precision), or None."""
        for name, entry in self.files.items():
            if entry.role == role and (precision is None or entry.precision == precision):
                return name
        return None

    def add_file(self, directory: str | Path, name: str, role: str, precision: str | None, **details: Any) -> None:
        path = Path(directory) / name
        self.files[name] = FileEntry(role=role, precision=precision, sha256=file_sha256(path), bytes=path.stat().st_size, details=details)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model_version": self.model_version,
            "opset": self.opset,
            "window": self.window,
            "labels": self.labels,
            "extractors": {m: e.to_dict() for m, e in self.extractors.items()},
            "graph_io": self.graph_io,
            "files": {n: e.to_dict() for n, e in sorted(self.files.items())},
            "parity": self.parity,
            "tools": self.tools,
            "model": self.model,
        }

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path


def model_version(model_dir: str | Path) -> str:
    """Short hash that changes whenever the model directory's weights, config or manifest do."""
    from train.model_dir import CONFIG_FILE, MANIFEST_FILE as MODEL_MANIFEST, WEIGHTS_FILE

    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for name in (WEIGHTS_FILE, CONFIG_FILE, MODEL_MANIFEST):
        f = model_dir / name
        if not f.is_file():
            raise InputError(f"model directory is missing {name}", path=str(model_dir))
        h.update(name.encode() + b"\0" + file_sha256(f).encode() + b"\n")
    return h.hexdigest()[:16]


def is_export_dir(directory: str | Path) -> bool:
    """True when ``directory`` holds an export manifest (not a model directory's manifest)."""
    f = Path(directory) / MANIFEST_FILE
    if not f.is_file():
        return False
    try:
        return json.loads(f.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_export_manifest(directory: str | Path) -> ExportManifest:
    """Parse ``DIR/manifest.json``; InputError naming the file for anything missing or malformed."""
    f = Path(directory) / MANIFEST_FILE
    if not f.is_file():
        raise InputError(f"no export manifest.json here (export with: {python_m('export --model NAME --out DIR')})", path=str(directory))
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"unreadable export manifest: {e}", path=str(f)) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise InputError(f"not an {FORMAT} manifest (a model directory? export it with {python_m('export')})", path=str(f))
    if raw.get("format_version") != FORMAT_VERSION:
        raise InputError(f"export manifest format_version {raw.get('format_version')!r}; this version reads {FORMAT_VERSION}", path=str(f))
    try:
        files = {
            str(n): FileEntry(role=str(e["role"]), precision=e.get("precision"), sha256=str(e["sha256"]), bytes=int(e["bytes"]), details=dict(e.get("details", {})))
            for n, e in raw["files"].items()
        }
        m = ExportManifest(
            model=dict(raw["model"]),
            model_version=str(raw["model_version"]),
            opset=int(raw["opset"]),
            window=int(raw["window"]),
            graph_io=dict(raw["graph_io"]),
            files=files,
            parity=dict(raw.get("parity", {})),
            created=str(raw.get("created", "")),
            tools=dict(raw.get("tools", {})),
        )
        _ = m.labels, m.extractors, m.dims  # validate the embedded model manifest
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"export manifest lacks or garbles field {e}", path=str(f)) from None
    return m


def check_export(directory: str | Path, *, model_dir: str | Path | None = None, files: list[str] | None = None) -> ExportManifest:
    """Read and verify an export directory; returns its manifest.

    Checks that every listed file (or just ``files``) exists with the recorded SHA-256 — a file
    from another export fails here — and, when ``model_dir`` is given, that the export was made
    from that exact model version.
    """
    directory = Path(directory)
    manifest = read_export_manifest(directory)
    rerun = f"re-export it: {python_m(f'export --model {model_dir} --int8')}" if model_dir is not None else f"re-run {python_m('export')}"
    for name in files if files is not None else list(manifest.files):
        entry = manifest.files.get(name)
        if entry is None:
            raise ExportMismatchError(f"export manifest lists no file {name!r}", path=str(directory))
        path = directory / name
        if not path.is_file():
            raise ExportMismatchError(f"exported file {name} is missing", path=str(directory), advice=rerun)
        if path.stat().st_size != entry.bytes or file_sha256(path) != entry.sha256:
            raise ExportMismatchError(
                f"{name} does not match the export manifest (an artifact from another export or model version)",
                path=str(directory), advice=rerun,
            )
    if model_dir is not None:
        current = model_version(model_dir)
        if current != manifest.model_version:
            raise ExportMismatchError(
                f"the export was made from model version {manifest.model_version}, the model directory is version {current}",
                path=str(directory), advice=rerun,
            )
    return manifest
