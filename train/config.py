"""Typed configuration for data, graph, model, losses and training, loaded from YAML.

Every section is a dataclass; an unknown key anywhere is an :class:`InputError` naming the
file and the dotted key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from train.common import InputError

MODALITIES = ("text", "audio", "visual")
_UnionType = getattr(types, "UnionType", None)  # ``X | None`` hints (Python >= 3.10)


@dataclass
class DataConfig:
    dataset: str = "iemocap"
    path: str = "../shared/data/iemocap/iemocap_trainval.pkl"
    # Modalities the model uses, in node order. Any non-empty subset of MODALITIES.
    modalities: list[str] = field(default_factory=lambda: ["text"])
    # Modality -> feature extractor name (see train.features). A modality absent here must
    # already be in the data file (community feature pickles).
    extractors: dict[str, str] = field(default_factory=lambda: {"text": "minilm"})
    # Directory for cached extracted features (npz); relative to the current directory.
    cache_dir: str = "cache/features"
    # Media manifest for extracted audio / visual features (train.extract.media: a CSV of
    # dialogue_id, utterance_index, path, start, end); relative to the current directory.
    # None: the file must carry those modalities (community feature pickles).
    media: str | None = None
    # Modality -> cross-fitted training features of a fine-tuned encoder (the crossfit.npz that
    # python -m train.finetune writes with train.crossfit_folds): they replace that modality's
    # extracted features of the training dialogues (train.extract.crossfit). Empty: none.
    crossfit: dict[str, str] = field(default_factory=dict)
    # Training dialogues a second time as the live ASR heard them (train.data.asr_views): a JSON
    # lines file from python -m runtime.tools.asr_transcripts, or a list of them (one view each, e.g.
    # other voices); relative to the current directory. None: gold transcripts only.
    asr_transcripts: str | list[str] | None = None
    # "replace": the ASR transcripts instead of the gold ones; "add": beside them (train.data.asr_views).
    asr_mode: str = "replace"


@dataclass
class GraphConfig:
    # Intra-modal edges join utterance i to utterances i-past..i+future of the same modality.
    past: int = 4
    future: int = 0  # 0 = causal (streaming); the paper's bidirectional mode uses future > 0
    speaker_relations: bool = True  # same/other speaker as distinct relation types
    inter_modal: bool = True  # edges between the modalities of one utterance


@dataclass
class ModelConfig:
    hidden: int = 128
    proj_layers: int = 1  # depth of each per-modality projection MLP
    use_graph: bool = True  # False: projections + classifier only (the "no graph" ablation)
    gcn_layers: int = 2
    dropout: float = 0.3
    classifier_hidden: int = 128
    # Added by the model helper: LayerNorm over each modality's input vector before its
    # projection. Per utterance (no batch statistics), so causal/window results stay exact; it
    # rescales small-norm inputs (unit-length sentence embeddings) that otherwise train slowly.
    input_norm: bool = True
    # Per-feature standardisation of each modality's input by the training rows' mean and variance
    # (BatchNorm1d without affine parameters, cumulative statistics; a fixed affine map at
    # inference). For features whose dimensions differ in scale by orders of magnitude
    # (openSMILE audio in community pickles); see train/model/projection.py.
    input_standardise: bool = False
    # Seed ensemble: K > 1 ships the K seeds' models with their probabilities averaged
    # (train.model.ensemble); training runs one seed per member (train.seeds, K of them).
    ensemble: int = 1
    # Late fusion with the fine-tuned text encoder's own emotion head (train.model.text_head):
    # p = (1 - w) * p_graph + w * p_head, at inference only; 0 = off. Needs a text extractor whose
    # encoder directory holds head.safetensors (train.finetune writes it).
    text_head_weight: float = 0.0


@dataclass
class AdversarialConfig:
    enabled: bool = True
    # "paper": the paper's objective, joint: discriminators learn on detached features, each
    #   modality's generator learns to make the OTHER modalities' discriminators accept its features.
    # "alternating": the same objective, discriminator step then generator step (two optimizers).
    # "grl": symmetric domain confusion by gradient reversal of the whole discriminator loss.
    schedule: Literal["paper", "alternating", "grl"] = "paper"
    weight: float = 0.1
    grl_lambda: float = 1.0
    # R1 gradient penalty on the discriminators' real inputs (paper, alternating); 0 = off.
    r1: float = 1.0
    # The discriminators' learning rate is train.lr times this: they must keep up with the
    # generators for the game to settle (paper, alternating).
    d_lr_scale: float = 10.0
    # Generator form: "relu" (ReLU(W h + b), what the shipped text models were trained with) or
    # "affine" (W h + b: a unit off for all of one modality's inputs could never be turned back on).
    generator: Literal["relu", "affine"] = "relu"


@dataclass
class ContrastiveConfig:
    intra: bool = True  # same modality: different emotions pushed apart
    inter: bool = True  # across modalities: same emotion pulled together
    temperature: float = 0.1
    intra_weight: float = 0.1
    inter_weight: float = 0.1


@dataclass
class UtteranceConfig:
    """How the model weighs the utterance itself against its context (train.model.utterance)."""

    gate: bool = False  # learned gate between the utterance's own state and its graph state
    own_logits: bool = False  # a context-free head whose logits are added to the classifier's
    own_weight: float = 0.0  # weight of that head's own cross-entropy (needs own_logits)
    shift_weight: float = 1.0  # cross-entropy weight of training utterances that are emotion shifts
    # Weight of an auxiliary loss (training only, 0 = off): a head on the graph states of an
    # utterance and of its speaker's previous labelled one says whether the emotion shifted.
    shift_aux: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 60
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_dialogues: int = 16
    patience: int = 10  # early stopping on validation weighted F1
    class_weights: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])
    grad_clip: float = 5.0
    # First epoch that model selection may keep: earlier epochs are trained and logged but never
    # selected, and patience starts counting here. For parts that need epochs to settle (the
    # adversarial game) while validation wF1 saturates early; see configs/iemocap-multimodal.yaml.
    select_from: int = 1
    # Modality dropout: each training utterance, with this probability, loses one of its present
    # modalities (chosen uniformly; never its last one) for that step, so the model learns to
    # label utterances that miss a modality at test time (train.batch.drop_modalities).
    modality_dropout: float = 0.0
    # Context dropout: each training node, with this probability, loses all its incoming edges for
    # that step and is labelled from its own features alone (the RGCN's root weight), so that the
    # utterance itself carries weight next to the conversation (train.batch.drop_context).
    context_dropout: float = 0.0


@dataclass
class Config:
    name: str = "iemocap"
    data: DataConfig = field(default_factory=DataConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    utterance: UtteranceConfig = field(default_factory=UtteranceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, source: str = "config") -> None:
        mods = self.data.modalities
        if not mods:
            raise InputError("data.modalities is empty; name at least one of " + ", ".join(MODALITIES), path=source)
        for m in mods:
            if m not in MODALITIES:
                raise InputError(f"data.modalities: unknown modality {m!r}; expected one of {', '.join(MODALITIES)}", path=source)
        if len(set(mods)) != len(mods):
            raise InputError(f"data.modalities repeats a modality: {mods}", path=source)
        if self.graph.past < 0 or self.graph.future < 0:
            raise InputError("graph.past and graph.future must be >= 0", path=source)
        if self.adversarial.schedule not in ("paper", "alternating", "grl"):
            raise InputError(f"adversarial.schedule must be 'paper', 'alternating' or 'grl', not {self.adversarial.schedule!r}", path=source)
        if self.adversarial.d_lr_scale <= 0:
            raise InputError(f"adversarial.d_lr_scale must be > 0, got {self.adversarial.d_lr_scale}", path=source)
        if self.adversarial.r1 < 0:
            raise InputError(f"adversarial.r1 must be >= 0, got {self.adversarial.r1}", path=source)
        if self.contrastive.temperature <= 0:
            raise InputError("contrastive.temperature must be > 0", path=source)
        t = self.train
        if t.select_from < 1 or t.select_from > t.epochs:
            raise InputError(f"train.select_from must be in [1, train.epochs={t.epochs}], got {t.select_from}", path=source)
        if not 0.0 <= t.modality_dropout < 1.0:
            raise InputError(f"train.modality_dropout must be in [0, 1), got {t.modality_dropout}", path=source)
        if not 0.0 <= t.context_dropout < 1.0:
            raise InputError(f"train.context_dropout must be in [0, 1), got {t.context_dropout}", path=source)
        from train.data.asr_views import MODES as ASR_MODES

        if self.data.asr_mode not in ASR_MODES:
            raise InputError(f"data.asr_mode must be one of {', '.join(ASR_MODES)}, got {self.data.asr_mode!r}", path=source)
        if self.data.asr_transcripts and self.data.crossfit:
            raise InputError("data.asr_transcripts and data.crossfit do not go together: the ASR views would be "
                             "embedded by the fine-tuned encoder that saw their labels", path=source)
        if self.model.ensemble < 1:
            raise InputError(f"model.ensemble must be >= 1, got {self.model.ensemble}", path=source)
        if not 0.0 <= self.model.text_head_weight < 1.0:
            raise InputError(f"model.text_head_weight must be in [0, 1), got {self.model.text_head_weight}", path=source)
        if self.model.text_head_weight > 0 and "text" not in self.data.modalities:
            raise InputError("model.text_head_weight > 0 needs the text modality (data.modalities)", path=source)
        u = self.utterance
        if u.own_weight < 0 or u.shift_weight <= 0 or u.shift_aux < 0:
            raise InputError("utterance.own_weight and utterance.shift_aux must be >= 0 and utterance.shift_weight > 0", path=source)
        if u.own_weight > 0 and not u.own_logits:
            raise InputError("utterance.own_weight > 0 needs utterance.own_logits: true", path=source)


def _build(cls: type, raw: Any, where: str, source: str):
    """Recursively build dataclass ``cls`` from a YAML mapping, refusing unknown keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{where or 'top level'}: expected a mapping, got {type(raw).__name__}", path=source)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise InputError(f"unknown config key {dotted!r} (known here: {', '.join(sorted(names))})", path=source)
        kwargs[key] = _coerce(hints[key], value, dotted, source)
    return cls(**kwargs)


def _type_name(hint: Any) -> str:
    """How a type hint reads in an error message: ``float``, ``list of int``, ``str or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if hint is float:
        return "a number (float)"
    if hint is bool:
        return "true or false (bool)"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "a mapping (section)"
    if isinstance(hint, type):
        return hint.__name__
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list:
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "a mapping"
    if origin is typing.Union or (_UnionType is not None and isinstance(hint, _UnionType)):
        return " or ".join(_type_name(a) for a in args)
    return str(hint)


def _coerce(hint: Any, value: Any, dotted: str, source: str) -> Any:
    """``value`` checked against (and converted to) the type ``hint``; InputError naming the
    key, the expected type and the value otherwise. Every hint a config field uses is checked:
    int, float, str, bool, Literal, Optional/Union, list[X], dict[K, V] and nested dataclasses."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def wrong() -> InputError:
        return InputError(f"{dotted}: expected {_type_name(hint)}, got {value!r}", path=source)

    if hint is Any:
        return value
    if hint is type(None):
        if value is not None:
            raise wrong()
        return None
    if origin is typing.Union or (_UnionType is not None and isinstance(hint, _UnionType)):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _coerce(arm, value, dotted, source)
            except InputError:
                continue
        raise wrong()
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, dotted, source)
    if hint is float:
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; take it as the number meant
            try:
                return float(value)
            except ValueError:
                raise wrong() from None
        raise wrong()
    if hint in (int, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise wrong()
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise wrong()
        return Path(value)
    if origin is list:
        if not isinstance(value, list):
            raise wrong()
        item = args[0] if args else Any
        return [_coerce(item, v, f"{dotted}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong()
        key_t, val_t = args if args else (Any, Any)
        return {_coerce(key_t, k, f"{dotted} (key {k!r})", source): _coerce(val_t, v, f"{dotted}.{k}", source)
                for k, v in value.items()}
    if origin is Literal:
        if value not in args:
            raise wrong()
        return value
    raise TypeError(f"config field {dotted}: the loader cannot check type {hint!r}")  # a programming error


def build_dataclass(cls: type, raw: Any, source: str = "config"):
    """Build dataclass ``cls`` (nested sections included) from a parsed YAML mapping.

    The one YAML -> dataclass builder of the project (training, encoder and runtime configs):
    unknown keys and wrongly typed values are :class:`InputError` naming ``source`` and the key.
    """
    return _build(cls, raw, "", source)


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse a YAML file into a mapping; a missing file or bad YAML is a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", path=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=str(path)) from None
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {str(e).splitlines()[0]}", path=str(path)) from None
    except OSError as e:
        raise InputError(f"cannot read the {what}: {e.strerror}", path=str(path)) from None
    return raw or {}


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    cfg = build_dataclass(Config, raw, source)
    cfg.validate(source)
    return cfg


def load_config(path: str | Path) -> Config:
    """Load a YAML config; errors name the file and the offending key."""
    return config_from_dict(read_yaml(path), source=str(path))


# ---------------------------------------------------------------------------------------------
# --set KEY=VALUE overrides (the training commands' option)


def parse_override(text: str):
    """``train.lr=0.0005`` -> (["train", "lr"], 0.0005); the value is parsed as YAML."""
    if "=" not in text:
        raise InputError(f"--set expects KEY=VALUE (e.g. train.lr=0.0005), got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        raise InputError(f"--set {key}: value {value!r} is not valid YAML") from None
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise InputError(f"--set {'.'.join(keys)}: {k!r} is not a section")
            node = nxt
        node[keys[-1]] = value
    return raw


def load_config_with_overrides(path: str, overrides: Sequence[str] = ()):
    """The YAML config at ``path`` with ``--set`` overrides applied, checked like any config."""
    cfg = load_config(path)  # checks the file itself first, so its own errors name it
    if not overrides:
        return cfg
    raw = apply_overrides(cfg.to_dict(), overrides)
    return config_from_dict(raw, source=f"{path} with --set {' '.join(overrides)}")
