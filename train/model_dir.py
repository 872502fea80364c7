"""Model directories: what a trained model is on disk, and how to find, write and read one.

A model directory holds

* ``model.safetensors`` — the weights (no pickle anywhere);
* ``config.yaml``       — the resolved config the model was trained with;
* ``manifest.json``     — label names, modalities and their feature dimensions, and the
  :class:`~train.features.base.ExtractorIdentity` of each modality's feature extractor, so a
  runtime builds exactly the same features;
* ``metrics.json``      — validation figures per seed and their mean ± std (written by training);
* ``confusion.png``, ``curves.png`` — figures (optional for loading).

A model is named by its directory, or by a name looked up in the **model search path**
(:func:`model_search_path`): the directories in ``$ARIIGCN_MODEL_PATH`` (``os.pathsep``-separated),
then those the running program added with :func:`add_model_search_dirs` (the live runtime adds
its shipped models, ``runtime/models``). ``DIR/<name>/`` is model ``<name>``, ``DIR/encoders/<name>/``
fine-tuned text encoder ``<name>`` (:func:`train.features.text_context.resolve_encoder_dir`).
This package knows no other package's folders. :func:`read_manifest` is torch-free (the live
runtime with ONNX backends calls it); :func:`load_model` needs torch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from train.config import Config, config_from_dict, read_yaml
from train.common import InputError, atomic_file, write_text_atomic
from train.features.base import ExtractorIdentity

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
CONFUSION_PNG = "confusion.png"
CURVES_PNG = "curves.png"
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE)

MANIFEST_FORMAT = "ariigcn-model"
MANIFEST_VERSION = 1


@dataclass
class ModelManifest:
    """What ``manifest.json`` says about a model.

    labels: emotion names, index = class id. dims: modality -> input feature width, in the
    model's node order. extractors: modality -> identity of the extractor that makes its
    features (name "precomputed" when the features came with the training data file).
    """

    name: str
    dataset: str
    labels: list[str]
    dims: dict[str, int]
    extractors: dict[str, ExtractorIdentity]
    past: int
    future: int
    format_version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return list(self.dims)

    @property
    def causal(self) -> bool:
        return self.future == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": self.format_version,
            "name": self.name,
            "dataset": self.dataset,
            "labels": list(self.labels),
            "dims": dict(self.dims),
            "extractors": {m: e.to_dict() for m, e in self.extractors.items()},
            "graph": {"past": self.past, "future": self.future, "causal": self.causal},
            **({"extra": self.extra} if self.extra else {}),
        }


def precomputed_identity(modality: str, dim: int, source: str) -> ExtractorIdentity:
    """Identity for features that came inside the data file (no extractor can rebuild them)."""
    return ExtractorIdentity(name="precomputed", modality=modality, dim=int(dim), version=str(source))


# ---------------------------------------------------------------------------------------------
# Finding a model directory


MODEL_PATH_ENV = "ARIIGCN_MODEL_PATH"
_program_dirs: list[Path] = []  # added by the running program (add_model_search_dirs)


def add_model_search_dirs(*dirs: str | os.PathLike) -> None:
    """Let this process find models (and encoders) by name in ``dirs``, after ``$ARIIGCN_MODEL_PATH``.

    Called by the program that owns the directories: the live runtime adds its shipped models.
    """
    for d in dirs:
        d = Path(d)
        if d not in _program_dirs:
            _program_dirs.append(d)


def model_search_path(search_path: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """Where names are looked up, in order: ``search_path`` when given, else ``$ARIIGCN_MODEL_PATH``
    then the program's directories (:func:`add_model_search_dirs`)."""
    if search_path is not None:
        return [Path(d) for d in search_path]
    env = [Path(p).expanduser() for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    return env + [d for d in _program_dirs if d not in env]


def search_path_hint(kind: str, names: Sequence[str], search_path: Sequence[Path]) -> str:
    """What an InputError says about the names a search path offers (or how to give one)."""
    if not search_path:
        return (f"no {kind} search path: give a directory, or set {MODEL_PATH_ENV} to directories "
                "holding models by name (in a checkout: runtime/models)")
    where = os.pathsep.join(str(d) for d in search_path)
    return f"{kind}s found by name in {where}: {', '.join(names) or 'none'}"


def model_names(search_path: Sequence[str | os.PathLike] | None = None) -> list[str]:
    """Names of the models the search path offers."""
    names = {p.name for d in model_search_path(search_path) if d.is_dir()
             for p in d.iterdir() if (p / MANIFEST_FILE).is_file()}
    return sorted(names)


def resolve_model_dir(name_or_dir: str | os.PathLike, search_path: Sequence[str | os.PathLike] | None = None) -> Path:
    """A model directory, or a model's name (``"iemocap"``) in the search path -> an existing model directory.

    A path that exists wins over a name. Raises InputError when neither exists; the directory's
    files are checked by :func:`check_model_dir`.
    """
    text = str(name_or_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        check_model_dir(path)
        return path
    if path.exists():
        raise InputError("not a model directory (it is a file)", path=text)
    dirs = model_search_path(search_path)
    looks_like_name = os.sep not in text and "/" not in text and not text.startswith(".")
    if looks_like_name:
        for d in dirs:
            if (d / text).is_dir():
                check_model_dir(d / text)
                return d / text
    hint = search_path_hint("model", model_names(search_path), dirs)
    raise InputError(f"no such model directory or model name ({hint})", path=text)


def check_model_dir(path: Path) -> None:
    """InputError naming the first required file a model directory lacks, or saying that its
    weights file is truncated or corrupt (:func:`check_weights_file`)."""
    for name in REQUIRED_FILES:
        if not (Path(path) / name).is_file():
            raise InputError(f"model directory is missing {name}", path=str(path))
    check_weights_file(Path(path) / WEIGHTS_FILE)


DAMAGED_ADVICE = "the model directory is damaged: copy it again (for a shipped model: git checkout runtime/models)"


def check_weights_file(file: Path) -> None:
    """InputError unless ``file`` is a whole safetensors file: its 8-byte header length, JSON
    header and the tensor data the header describes must all be there. Reads only the header."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 0 or 8 + n > size:
                raise InputError(f"{WEIGHTS_FILE} is truncated: the file has {size} bytes, fewer than its header "
                                 f"({max(n, 0) + 8} bytes)", path=str(file.parent), advice=DAMAGED_ADVICE)
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise InputError(f"{WEIGHTS_FILE} is corrupt: its header is not a safetensors header", path=str(file.parent),
                         advice=DAMAGED_ADVICE) from None
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise InputError(f"{WEIGHTS_FILE} is truncated: the file has {size} bytes, its header describes {need}",
                         path=str(file.parent), advice=DAMAGED_ADVICE)


# ---------------------------------------------------------------------------------------------
# Reading (torch-free)


def read_manifest(path: str | os.PathLike) -> ModelManifest:
    """Read ``manifest.json`` of a model directory (or a shipped name); torch-free."""
    directory = resolve_model_dir(path)
    file = directory / MANIFEST_FILE
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"unreadable manifest: {e}", path=str(file)) from None
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise InputError(f"not an {MANIFEST_FORMAT} manifest", path=str(file))
    if raw.get("format_version") != MANIFEST_VERSION:
        raise InputError(
            f"manifest format_version {raw.get('format_version')!r}; this version reads {MANIFEST_VERSION}",
            path=str(file))
    try:
        dims = {str(m): int(d) for m, d in raw["dims"].items()}
        extractors = {}
        for m, e in raw["extractors"].items():
            extractors[str(m)] = ExtractorIdentity(name=str(e["name"]), modality=str(e["modality"]),
                                                   dim=int(e["dim"]), version=str(e["version"]))
        return ModelManifest(
            name=str(raw["name"]), dataset=str(raw["dataset"]), labels=[str(x) for x in raw["labels"]],
            dims=dims, extractors=extractors, past=int(raw["graph"]["past"]),
            future=int(raw["graph"]["future"]), format_version=int(raw["format_version"]),
            extra=dict(raw.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"manifest lacks or garbles field {e}", path=str(file)) from None


def read_config(path: str | os.PathLike) -> Config:
    directory = resolve_model_dir(path)
    file = directory / CONFIG_FILE
    return config_from_dict(read_yaml(file, "model config"), source=str(file))


def read_metrics(path: str | os.PathLike) -> dict[str, Any] | None:
    file = resolve_model_dir(path) / METRICS_FILE
    if not file.is_file():
        return None
    return json.loads(file.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Writing


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def save_model_dir(directory: Path, model, cfg: Config, manifest: ModelManifest,
                   metrics: dict[str, Any] | None = None) -> Path:
    """Write weights, resolved config, manifest (and metrics) of ``model`` into ``directory``.

    The manifest is written last, so a directory with a manifest has all its other files.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_file(directory / WEIGHTS_FILE) as tmp:  # readable by all, as shipped models must be
        save_file(state, str(tmp), metadata={"format": MANIFEST_FORMAT, "name": manifest.name})
    write_text_atomic(directory / CONFIG_FILE,
                      yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))
    if metrics is not None:
        write_json(directory / METRICS_FILE, metrics)
    write_json(directory / MANIFEST_FILE, manifest.to_dict())
    return directory


# ---------------------------------------------------------------------------------------------
# Loading (torch)


def load_model(path: str | os.PathLike, device: str = "cpu"):
    """Rebuild the trained model of a model directory: returns ``(model, manifest, config)``.

    The model is in eval mode on ``device``. Weights that do not fit the architecture the
    config describes are an InputError naming the weights file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from train.model import build_model

    directory = resolve_model_dir(path)
    manifest = read_manifest(directory)
    cfg = read_config(directory)
    if list(cfg.data.modalities) != manifest.modalities:
        raise InputError(f"config modalities {cfg.data.modalities} differ from manifest dims "
                         f"{manifest.modalities}", path=str(directory))
    model = build_model(cfg, manifest.dims, len(manifest.labels))
    file = directory / WEIGHTS_FILE
    try:
        state = load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"unreadable weights: {e}", path=str(file)) from None
    expected = model.state_dict()
    for name, tensor in state.items():  # same names, other shapes: one line naming the first (torch lists them all)
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise InputError(f"weights do not match the model in config.yaml: {name} has shape "
                             f"{tuple(tensor.shape)}, the model {tuple(expected[name].shape)}", path=str(file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            what.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise InputError("weights do not match the model in config.yaml: " + "; ".join(what), path=str(file))
    model.to(device).eval()
    return model, manifest, cfg
