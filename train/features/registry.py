"""Feature extractors by name and backend: ``get_extractor("minilm", backend="onnx", path=...)``.

Entries are ``"module:Class"`` strings imported only when asked for, so listing or resolving
names never pulls in torch, onnxruntime or openSMILE. The first backend registered for a name
is its default.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from train.common import InputError
from train.features.base import FeatureExtractor

# name -> backend -> "module:Class"; insertion order: the first backend is the default.
_REGISTRY: dict[str, dict[str, str]] = {}


def register(name: str, target: str, backend: str = "default") -> None:
    """Register ``target`` ("package.module:Class") as extractor ``name`` for ``backend``."""
    if ":" not in target:
        raise ValueError(f"target must be 'module:Class', got {target!r}")
    _REGISTRY.setdefault(name, {})[backend] = target


def known() -> dict[str, list[str]]:
    """Registered names and their backends (default first)."""
    return {name: list(backends) for name, backends in _REGISTRY.items()}


def default_backend(name: str) -> str:
    _check_name(name)
    return next(iter(_REGISTRY[name]))


def _describe() -> str:
    return "; ".join(f"{n} ({'|'.join(b)})" for n, b in known().items())


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise InputError(f"unknown feature extractor {name!r}; known: {_describe()}")


def resolve(name: str, backend: str | None = None) -> type:
    """The extractor class for ``name`` and ``backend`` (None: the name's default backend)."""
    _check_name(name)
    backend = backend or default_backend(name)
    if backend not in _REGISTRY[name]:
        raise InputError(f"feature extractor {name!r} has no backend {backend!r}; known: {_describe()}")
    target = _REGISTRY[name][backend]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise InputError(
            f"feature extractor {name!r} (backend {backend!r}) is not available: cannot import {e.name!r} "
            f"needed by {module_name}; install its dependencies (see README extras)"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InputError(f"feature extractor {name!r}: {module_name} defines no {attr}") from None


def get_extractor(name: str, backend: str | None = None, **kwargs: Any) -> FeatureExtractor:
    """Build extractor ``name`` with ``backend`` (None: its default); ``kwargs`` go to its constructor.

    An option the extractor does not take is an :class:`InputError` naming the ones it does.
    """
    cls = resolve(name, backend)
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise InputError(f"feature extractor {name!r} (backend {backend or default_backend(name)!r}) takes no option {', '.join(unknown)}; it takes: {', '.join(accepted) or 'none'}")
    return cls(**kwargs)


register("minilm", "train.features.text:MiniLMExtractor", backend="torch")
register("minilm", "train.features.text_onnx:OnnxMiniLMExtractor", backend="onnx")
register("mpnet", "train.features.text:MpnetExtractor", backend="torch")
register("mpnet", "train.features.text_onnx:OnnxMiniLMExtractor", backend="onnx")
register("is10", "train.features.audio:IS10Extractor")
register("whisper-enc", "train.features.audio:WhisperEncoderExtractor")
register("fer", "train.features.visual:FerExtractor")
# Fine-tuned encoders (train.finetune): context-aware MiniLM and utterance-level mpnet, one name per shipped encoder
# (encoders/<dataset>/ in the model search path, train.model_dir); path= names another encoder
# directory / ONNX export.
for _name, _cls in (("minilm-ctx-iemocap", "IemocapContextTextExtractor"), ("minilm-ctx-meld", "MeldContextTextExtractor"),
                    ("mpnet-ft-iemocap", "IemocapMpnetExtractor"), ("mpnet-ft-meld", "MeldMpnetExtractor")):
    register(_name, f"train.features.text_context:{_cls}", backend="torch")
    register(_name, "train.features.text_context:OnnxContextTextExtractor", backend="onnx")
del _name, _cls
