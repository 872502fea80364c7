"""Typed configuration of a text-encoder fine-tuning run (``configs/<name>-encoder.yaml``).

Sections: ``base`` (the frozen encoder it starts from: ``minilm`` or ``mpnet``), ``data`` (corpus),
``context`` (the input format, :class:`ContextFormat`), ``lora`` (which layers adapt and how) and
``train`` (optimisation, selection, checkpoints, cross-fitting). Loaded like
the model configs: an unknown key is an :class:`InputError` naming the file and the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from train.config import apply_overrides, build_dataclass, read_yaml  # the one YAML -> dataclass loader
from train.common import InputError
from train.features.text_context import ContextFormat, get_base


@dataclass
class EncoderDataConfig:
    dataset: str = "iemocap"
    path: str = "../shared/data/iemocap/iemocap_trainval.pkl"


@dataclass
class AdapterConfig:
    # Adapt the top `layers` transformer layers. The layers below stay frozen, so their outputs
    # are computed once per run and each step runs forward+backward through the top ones only.
    layers: int = 2
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    # Suffixes (under encoder.layer.<i>.) of the linear layers that get LoRA matrices; empty: all
    # of the base's (train.features.text_context.BASES: BERT's query/key/value/... for MiniLM,
    # attention.attn.q/k/v/o, intermediate.dense, output.dense for mpnet).
    targets: list[str] = field(default_factory=list)


@dataclass
class EncoderTrainConfig:
    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-4  # LoRA matrices
    head_lr: float = 2e-3  # the emotion classifier on the sentence embedding (training only)
    weight_decay: float = 0.01
    warmup: float = 0.06  # fraction of all steps with a linear warm-up, then linear decay to 0
    grad_clip: float = 1.0
    patience: int = 2  # epochs without a better validation weighted F1 before stopping
    class_weights: bool = False
    seed: int = 0
    checkpoint_every: int = 50  # optimizer steps between resumable checkpoints (also each epoch end)
    max_train_dialogues: int = 0  # 0 = all; a cap for quick trials
    # k > 1: also train k encoders, each on the training dialogues outside one of k folds, and
    # embed each fold with the encoder that did not see its labels (crossfit.npz): features of
    # the training split like those the graph model meets at validation. 0 = none.
    crossfit_folds: int = 0


@dataclass
class EncoderConfig:
    name: str = "iemocap"
    base: str = "minilm"  # the frozen encoder fine-tuned: minilm (all-MiniLM-L6-v2) or mpnet (all-mpnet-base-v2)
    data: EncoderDataConfig = field(default_factory=EncoderDataConfig)
    context: ContextFormat = field(default_factory=ContextFormat)
    lora: AdapterConfig = field(default_factory=AdapterConfig)
    train: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def adapted_layers(self) -> list[int]:
        """Indices of the transformer layers that carry LoRA matrices (the top ``lora.layers``)."""
        n = get_base(self.base).n_layers
        return list(range(n - self.lora.layers, n))

    @property
    def lora_targets(self) -> list[str]:
        """The LoRA target suffixes: ``lora.targets``, or all of the base's when that list is empty."""
        return list(self.lora.targets) or list(get_base(self.base).lora_targets)

    def validate(self, source: str = "config") -> None:
        base = get_base(self.base, source)
        if not 1 <= self.lora.layers <= base.n_layers:
            raise InputError(f"lora.layers must be in 1..{base.n_layers} ({base.key} has {base.n_layers} layers), got {self.lora.layers}", path=source)
        if self.lora.r < 1:
            raise InputError(f"lora.r must be >= 1, got {self.lora.r}", path=source)
        bad = [t for t in self.lora.targets if t not in base.lora_targets]
        if bad:
            raise InputError(f"lora.targets: unknown {bad} for base {base.key}; choose from {', '.join(base.lora_targets)} (or leave the list empty: all)", path=source)
        t = self.train
        if t.crossfit_folds == 1 or t.crossfit_folds < 0:
            raise InputError(f"train.crossfit_folds must be 0 (none) or >= 2, got {t.crossfit_folds}", path=source)
        for key, value, low in (("epochs", t.epochs, 1), ("batch_size", t.batch_size, 1), ("checkpoint_every", t.checkpoint_every, 1), ("patience", t.patience, 1), ("max_train_dialogues", t.max_train_dialogues, 0)):
            if value < low:
                raise InputError(f"train.{key} must be >= {low}, got {value}", path=source)
        if not 0.0 <= t.warmup < 1.0:
            raise InputError(f"train.warmup must be in [0, 1), got {t.warmup}", path=source)
        if t.lr <= 0 or t.head_lr <= 0:
            raise InputError("train.lr and train.head_lr must be > 0", path=source)


def encoder_config_from_dict(raw: dict[str, Any], source: str = "config") -> EncoderConfig:
    try:
        cfg = build_dataclass(EncoderConfig, raw, source)
    except InputError as e:
        if e.path is None:  # raised by ContextFormat's own checks, which do not know the file
            raise InputError(str(e), path=source) from None
        raise
    cfg.validate(source)
    return cfg


def load_encoder_config(path: str | Path, overrides: Sequence[str] = ()) -> EncoderConfig:
    """Load ``configs/<name>-encoder.yaml`` with ``--set KEY=VALUE`` ``overrides``
    (:func:`train.config.apply_overrides`); errors name the file and the offending key."""
    cfg = encoder_config_from_dict(read_yaml(path), source=str(path))  # the file's own errors name it
    if not overrides:
        return cfg
    return encoder_config_from_dict(apply_overrides(cfg.to_dict(), overrides), source=f"{path} with --set {' '.join(overrides)}")
