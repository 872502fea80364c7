"""Who is speaking: resemblyzer voice embeddings run with onnxruntime, and online clustering.

resemblyzer's encoder (a 3-layer LSTM over 40-band mel frames, 256-d L2-normalised output) lives
in its wheel as ``pretrained.pt``, and the package itself imports torch (and webrtcvad, which
needs ``pkg_resources``). The live runtime must not import torch, so :func:`ensure_encoder_onnx`
converts the checkpoint ONCE into an ONNX graph in a cache directory:

* the weights are read with ``torch.load(weights_only=True)`` (no code execution);
* the graph is written by hand with ``onnx.helper`` -- MatMul(mel filterbank) -> 3 x ONNX ``LSTM``
  -> Gemm -> Relu -> L2 norm -- rather than with ``torch.onnx.export``, so it does not depend on
  the exporter's handling of LSTMs;
* the file name carries the checkpoint's sha256, and the file is written to a temp name, then
  renamed, so a half-written model is never used.

Only that one-time build needs torch (and librosa for the mel filterbank). After it,
:class:`VoiceEncoder` needs numpy + onnxruntime: the STFT is done in numpy, exactly as
``librosa.feature.melspectrogram`` does for resemblyzer (hann 400, hop 160, centred, zero pad,
power 2), and an utterance's embedding is the normalised mean of the embeddings of its 1.6 s
partials, as ``resemblyzer.VoiceEncoder.embed_utterance`` computes it.

Clustering (:class:`SpeakerClusterer`): each speaker is a running-mean centroid of its
utterances' embeddings. An utterance joins the most similar centroid; it founds a new speaker
when its cosine similarity to every centroid is below ``threshold`` (open set,
``n_speakers=None``) -- or, with a fixed ``n_speakers``, only while fewer than N exist. Ids are
integers 0, 1, ... in order of first appearance and never change.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.config import SAMPLE_RATE, SpeakerConfig
from train.common import InputError, atomic_file, file_sha256

log = logging.getLogger(__name__)

N_FFT = 400  # 25 ms window
HOP = 160  # 10 ms step
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s partials
EMBED_DIM = 256
HIDDEN = 256
LAYERS = 3
BUILDER_VERSION = "1"  # bump when the ONNX graph built below changes
NORM_TARGET_DBFS = -30.0  # resemblyzer's volume normalisation (increase only)


def default_cache_dir() -> Path:
    return Path(os.environ.get("ARIIGCN_CACHE", Path.home() / ".cache" / "ariigcn"))


def resemblyzer_checkpoint() -> Path:
    """Path of ``pretrained.pt`` inside the resemblyzer wheel, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("resemblyzer is not installed (its wheel carries the voice encoder); pip install resemblyzer")
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    if not path.is_file():
        raise InputError("resemblyzer's voice encoder weights are missing", path=str(path))
    return path


def ensure_encoder_onnx(cache_dir: str | Path | None = None, checkpoint: str | Path | None = None) -> Path:
    """Return the cached ONNX voice encoder, building it from resemblyzer's weights if absent."""
    ckpt = Path(checkpoint) if checkpoint else resemblyzer_checkpoint()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / f"resemblyzer-{file_sha256(ckpt)[:16]}-v{BUILDER_VERSION}.onnx"
    if target.is_file():
        return target
    log.warning("building the ONNX voice encoder into %s (first run only; about 15 s)", cache)
    try:
        import torch  # noqa: F401  (only this one-time conversion needs it)
        import librosa  # noqa: F401
    except ImportError as e:
        raise InputError(
            f"the ONNX voice encoder is not built yet in {cache} and building it needs torch and librosa "
            f"({e.name} is missing); run `python -m runtime.speakers --build` once where they are installed, "
            "or copy the .onnx file into that directory"
        ) from None
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = build_encoder_onnx(ckpt)
    import onnx

    with atomic_file(target) as tmp:
        onnx.save(model, str(tmp))
    log.info("built ONNX voice encoder from %s in %.1f s -> %s", ckpt, time.perf_counter() - t0, target)
    return target


def build_encoder_onnx(checkpoint: Path):
    """ONNX graph: power spectrogram (B, T, 201) -> embeddings (B, 256), L2-normalised.

    Needs torch (to read the checkpoint, weights only) and librosa (mel filterbank).
    """
    import librosa
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)["model_state"]
    sd = {k: v.numpy().astype(np.float32) for k, v in state.items()}

    def gates_to_onnx(w: np.ndarray) -> np.ndarray:
        # torch stacks gates as (input, forget, cell, output); ONNX as (input, output, forget, cell)
        i, f, g, o = np.split(w, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)  # (40, 201)
    inits = [numpy_helper.from_array(fb.T.copy(), "mel_fb")]
    nodes = [
        helper.make_node("MatMul", ["power", "mel_fb"], ["mel"]),  # (B, T, 40)
        helper.make_node("Transpose", ["mel"], ["x0"], perm=[1, 0, 2]),  # (T, B, 40)
    ]
    x = "x0"
    for layer in range(LAYERS):
        w = gates_to_onnx(sd[f"lstm.weight_ih_l{layer}"])[None]
        r = gates_to_onnx(sd[f"lstm.weight_hh_l{layer}"])[None]
        b = np.concatenate([gates_to_onnx(sd[f"lstm.bias_ih_l{layer}"]), gates_to_onnx(sd[f"lstm.bias_hh_l{layer}"])])[None]
        inits += [numpy_helper.from_array(a, f"{n}{layer}") for a, n in ((w, "W"), (r, "R"), (b, "B"))]
        nodes.append(helper.make_node("LSTM", [x, f"W{layer}", f"R{layer}", f"B{layer}"], [f"Y{layer}", f"Yh{layer}"], hidden_size=HIDDEN))
        if layer < LAYERS - 1:
            nodes.append(helper.make_node("Squeeze", [f"Y{layer}", "axis1"], [f"x{layer + 1}"]))  # (T, B, H)
            x = f"x{layer + 1}"
    inits += [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], np.int64), "axes_last"),
        numpy_helper.from_array(sd["linear.weight"], "lin_w"),
        numpy_helper.from_array(sd["linear.bias"], "lin_b"),
    ]
    nodes += [
        helper.make_node("Squeeze", [f"Yh{LAYERS - 1}", "axis0"], ["h"]),  # (B, H): last layer's final state
        helper.make_node("Gemm", ["h", "lin_w", "lin_b"], ["lin"], transB=1),
        helper.make_node("Relu", ["lin"], ["raw"]),
        helper.make_node("ReduceL2", ["raw", "axes_last"], ["norm"], keepdims=1),
        helper.make_node("Div", ["raw", "norm"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "resemblyzer_voice_encoder",
        [helper.make_tensor_value_info("power", TensorProto.FLOAT, ["batch", "frames", N_FFT // 2 + 1])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBED_DIM])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="ariigcn.runtime.speakers")
    model.doc_string = f"resemblyzer {checkpoint.name} (sha256 {file_sha256(checkpoint)}), builder v{BUILDER_VERSION}"
    onnx.checker.check_model(model)
    return model


_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic hann


def power_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(samples,) float32 -> (frames, 201) float32 power spectrum, frames = 1 + samples // 160.

    Matches ``librosa.stft(center=True, pad_mode="constant")`` with hann 400 / hop 160, squared.
    """
    padded = np.pad(wav.astype(np.float32), N_FFT // 2)
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0])
    )
    spec = np.fft.rfft(frames * _WINDOW, axis=1)
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float32)


def partial_slices(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[slice]:
    """Frame slices of the 1.6 s partials resemblyzer averages (its compute_partial_slices)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((SAMPLE_RATE / rate) / HOP))
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    last_start = slices[-1].start * HOP
    coverage = (n_samples - last_start) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


class VoiceEncoder:
    """resemblyzer's speaker encoder on onnxruntime: ``embed(audio) -> (256,) float32``, unit norm."""

    def __init__(self, cache_dir: str | Path | None = None, model_path: str | Path | None = None, threads: int = 1):
        from train.common import make_session

        path = Path(model_path) if model_path else ensure_encoder_onnx(cache_dir)
        self.session = make_session(path, providers=["CPUExecutionProvider"], threads=threads, what="ONNX voice encoder")
        self.path = path

    def embed(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """(samples,) float32 mono at 16 kHz -> (256,) float32 unit-norm embedding."""
        if sample_rate != SAMPLE_RATE:
            raise InputError(f"voice encoder needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
        wav = np.asarray(audio, np.float32)
        if wav.size == 0:
            raise InputError("cannot embed an empty utterance")
        rms = float(np.sqrt(np.mean((wav * 32767.0) ** 2)))
        if rms > 0:
            gain_db = NORM_TARGET_DBFS - 20 * np.log10(rms / 32767.0)
            if gain_db > 0:  # resemblyzer normalises volume upward only
                wav = wav * np.float32(10 ** (gain_db / 20))
        slices = partial_slices(len(wav))
        need = slices[-1].stop * HOP
        if need >= len(wav):
            wav = np.pad(wav, (0, need - len(wav)))
        power = power_spectrogram(wav)
        batch = np.stack([power[s] for s in slices])  # (partials, 160, 201)
        partials = self.session.run(None, {"power": batch})[0]
        mean = partials.mean(axis=0)
        return (mean / np.linalg.norm(mean)).astype(np.float32)


@dataclass
class SpeakerAssignment:
    speaker: int  # stable integer id, 0, 1, ... in order of first appearance
    similarity: float  # cosine similarity to that speaker's centroid before the update (1.0 for a new one)
    new: bool  # this utterance founded the speaker


class SpeakerClusterer:
    """Online clustering of unit-norm embeddings into stable integer speaker ids."""

    def __init__(self, n_speakers: int | None = None, threshold: float = 0.75):
        if n_speakers is not None and n_speakers < 1:
            raise InputError(f"number of speakers must be >= 1, got {n_speakers}")
        self.n_speakers = n_speakers
        self.threshold = threshold
        self._sums: list[np.ndarray] = []
        self._counts: list[int] = []

    @property
    def centroids(self) -> np.ndarray:
        """(speakers, dim) unit-norm centroids."""
        if not self._sums:
            return np.zeros((0, 0), np.float32)
        c = np.stack(self._sums)
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    def assign(self, embedding: np.ndarray, may_found: bool = True) -> SpeakerAssignment:
        """Assign one (dim,) embedding; ``may_found=False`` forbids a new speaker (short audio)."""
        e = np.asarray(embedding, np.float32)
        e = e / (np.linalg.norm(e) or 1.0)
        if self._sums:
            sims = self.centroids @ e
            best = int(np.argmax(sims))
            best_sim = float(sims[best])
        else:
            best, best_sim = -1, -1.0
        room = self.n_speakers is None or len(self._sums) < self.n_speakers
        if best < 0 or (room and may_found and best_sim < self.threshold):
            self._sums.append(e.copy())
            self._counts.append(1)
            return SpeakerAssignment(len(self._sums) - 1, 1.0, True)
        self._sums[best] += e
        self._counts[best] += 1
        return SpeakerAssignment(best, best_sim, False)


class SpeakerTracker:
    """Voice encoder + clusterer: ``assign(audio) -> SpeakerAssignment`` per utterance."""

    def __init__(self, cfg: SpeakerConfig | None = None, encoder: VoiceEncoder | None = None):
        self.cfg = cfg or SpeakerConfig()
        self.encoder = encoder or VoiceEncoder(self.cfg.cache_dir)
        self.clusterer = SpeakerClusterer(self.cfg.n_speakers, self.cfg.threshold)

    def assign(self, audio: np.ndarray) -> SpeakerAssignment:
        emb = self.encoder.embed(audio)
        long_enough = len(audio) >= self.cfg.min_new_speaker_s * SAMPLE_RATE
        a = self.clusterer.assign(emb, may_found=long_enough)
        log.debug("speaker %d (sim %.3f%s)", a.speaker, a.similarity, ", new" if a.new else "")
        return a


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m runtime.speakers", description="Build the ONNX voice encoder cache.")
    p.add_argument("--build", action="store_true", help="convert resemblyzer's weights to ONNX (needs torch once)")
    p.add_argument("--cache-dir", default=None, help="default: $ARIIGCN_CACHE or ~/.cache/ariigcn")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_encoder_onnx(args.cache_dir))
    return 0


if __name__ == "__main__":
    from train.common import run_cli

    raise SystemExit(run_cli(main))
