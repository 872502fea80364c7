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
integers 0, 1, ... in order of first appearance. When two centroids come within
``merge_threshold`` of each other, they were one voice split in two: the younger id is merged
into the older and never used again, and the assignment reports the merge so that the runtime
re-labels the past (a ``speaker_update`` event, the conversation graph's window). A speaker none
of whose utterances was long enough to found one (the conversation's first utterance, when it is
short) is *tentative*: its centroid is a short clip's noisy embedding, so it merges as soon as it
comes within ``threshold`` (the bar for joining) of another speaker.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.config import SAMPLE_RATE, SpeakerConfig
from train.common import InputError, atomic_file, file_sha256, python_m

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
            f"({e.name} is missing); run `{python_m('runtime.speakers --build')}` once where they are installed, "
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

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        """(n, samples) float32 equal-length windows -> (n, 256) unit-norm embeddings, one batch.

        Each window is volume-normalised like a whole utterance and embedded as one partial of
        its own length (not resemblyzer's 1.6 s): for comparing short stretches of one stream.
        """
        w = np.asarray(windows, np.float32)
        if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] < N_FFT:
            raise InputError(f"embed_windows needs (n, samples >= {N_FFT}) audio, got shape {w.shape}")
        rms = np.sqrt(np.mean((w * 32767.0) ** 2, axis=1))
        gain_db = NORM_TARGET_DBFS - 20 * np.log10(np.maximum(rms, 1e-9) / 32767.0)
        gain = np.where((rms > 0) & (gain_db > 0), 10 ** (gain_db / 20), 1.0).astype(np.float32)
        power = np.stack([power_spectrogram(row) for row in w * gain[:, None]])  # (n, frames, 201)
        return self.session.run(None, {"power": power})[0].astype(np.float32)


@dataclass
class SpeakerAssignment:
    speaker: int  # stable integer id, 0, 1, ... in order of first appearance
    similarity: float  # cosine similarity to that speaker's centroid before the update (1.0 for a new one)
    new: bool  # this utterance founded the speaker
    # (merged, into) pairs this assignment caused: two clusters that turned out to be one voice.
    # ``speaker`` is already the surviving id.
    merges: list[tuple[int, int]] = field(default_factory=list)


class SpeakerClusterer:
    """Online clustering of unit-norm embeddings into integer speaker ids, merging clusters that
    turn out to be one voice.

    Each speaker is the running mean of its utterances' embeddings. An utterance joins the most
    similar centroid, or founds a new speaker when every centroid is below ``threshold`` (open
    set) -- with ``n_speakers``, only while fewer than N exist. After each assignment, two
    centroids at least ``merge_threshold`` alike are one voice: the younger id is merged into the
    older one (its utterances join it; its id is never used again) and the merge is reported, so
    that whoever labelled past utterances with it can re-label them. A tentative speaker (no
    utterance of it was allowed to found one: ``may_found`` False throughout, i.e. short audio)
    merges at ``threshold`` instead: its centroid is no better than one short clip's embedding.
    """

    def __init__(self, n_speakers: int | None = None, threshold: float = 0.75, merge_threshold: float | None = None):
        if n_speakers is not None and n_speakers < 1:
            raise InputError(f"number of speakers must be >= 1, got {n_speakers}")
        self.n_speakers = n_speakers
        self.threshold = threshold
        self.merge_threshold = threshold if merge_threshold is None else merge_threshold
        self._sums: dict[int, np.ndarray] = {}
        self._counts: dict[int, int] = {}
        self._established: dict[int, bool] = {}  # some utterance of it could have founded a speaker
        self._next = 0

    @property
    def ids(self) -> list[int]:
        """Live speaker ids (merged ones are gone), oldest first."""
        return list(self._sums)

    @property
    def next_id(self) -> int:
        """The id the next new speaker will get."""
        return self._next

    @property
    def centroids(self) -> np.ndarray:
        """(speakers, dim) unit-norm centroids, in the order of :attr:`ids`."""
        if not self._sums:
            return np.zeros((0, 0), np.float32)
        c = np.stack(list(self._sums.values()))
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    def nearest(self, embedding: np.ndarray) -> tuple[int, float] | None:
        """(speaker, cosine) of the most similar centroid, or None with no speaker yet."""
        if not self._sums:
            return None
        e = np.asarray(embedding, np.float32)
        sims = self.centroids @ (e / (np.linalg.norm(e) or 1.0))
        k = int(np.argmax(sims))
        return self.ids[k], float(sims[k])

    def assign(self, embedding: np.ndarray, may_found: bool = True) -> SpeakerAssignment:
        """Assign one (dim,) embedding; ``may_found=False`` forbids a new speaker (short audio)."""
        e = np.asarray(embedding, np.float32)
        e = e / (np.linalg.norm(e) or 1.0)
        near = self.nearest(e)
        room = self.n_speakers is None or len(self._sums) < self.n_speakers
        if near is None or (room and may_found and near[1] < self.threshold):
            sid = self._next
            self._next += 1
            self._sums[sid], self._counts[sid] = e.copy(), 1
            self._established[sid] = may_found
            a = SpeakerAssignment(sid, 1.0, True)
        else:
            sid, sim = near
            self._sums[sid] = self._sums[sid] + e
            self._counts[sid] += 1
            self._established[sid] = self._established[sid] or may_found
            a = SpeakerAssignment(sid, sim, False)
        a.merges = self._merge()
        for merged, into in a.merges:
            if a.speaker == merged:
                a.speaker = into
        return a

    def _merge(self) -> list[tuple[int, int]]:
        merges = []
        while len(self._sums) > 1:
            ids = self.ids
            c = self.centroids
            sims = c @ c.T
            np.fill_diagonal(sims, -np.inf)
            established = np.array([self._established[k] for k in ids])
            bar = np.where(established[:, None] & established[None, :], self.merge_threshold,
                           min(self.threshold, self.merge_threshold))  # (S, S): a tentative pair's bar is the join bar
            i, j = np.unravel_index(int(np.argmax(sims - bar)), sims.shape)
            if sims[i, j] < bar[i, j]:
                break
            into, merged = min(ids[i], ids[j]), max(ids[i], ids[j])
            log.info("speakers %d and %d are one voice (centroid cosine %.3f%s): %d merged into %d",
                     into, merged, sims[i, j], "" if established[i] and established[j] else ", one tentative",
                     merged, into)
            self._sums[into] = self._sums[into] + self._sums.pop(merged)
            self._counts[into] += self._counts.pop(merged)
            self._established[into] = self._established[into] or self._established.pop(merged)
            merges.append((merged, into))
        return merges


class SpeakerTracker:
    """Voice encoder + clusterer: ``assign(audio) -> SpeakerAssignment`` per utterance.

    Thread-safe: the segmenter thread may ask :meth:`nearest` (speaker change confirmation) while
    the model thread assigns.
    """

    def __init__(self, cfg: SpeakerConfig | None = None, encoder: VoiceEncoder | None = None):
        self.cfg = cfg or SpeakerConfig()
        self.encoder = encoder or VoiceEncoder(self.cfg.cache_dir)
        self.clusterer = SpeakerClusterer(self.cfg.n_speakers, self.cfg.threshold, self.cfg.merge_threshold)
        self._lock = threading.Lock()
        self._last: tuple[object, np.ndarray] | None = None  # (key, embedding) of the last utterance embedded

    def _embed(self, audio: np.ndarray, key) -> np.ndarray:
        """The voice embedding of ``audio``; the last one again for the same ``key`` (a provisional
        view and the final one of an utterance often hold the very same audio)."""
        last = self._last  # read once: the segmenter thread embeds too (would_split -> peek)
        if key is not None and last is not None and last[0] == key:
            return last[1]
        emb = self.encoder.embed(audio)
        if key is not None:
            self._last = (key, emb)
        return emb

    def assign(self, audio: np.ndarray, key=None) -> SpeakerAssignment:
        """Assign one utterance's audio to a speaker (see :meth:`_embed` for ``key``)."""
        emb = self._embed(audio, key)
        long_enough = len(audio) >= self.cfg.min_new_speaker_s * SAMPLE_RATE
        with self._lock:
            a = self.clusterer.assign(emb, may_found=long_enough)
        log.debug("speaker %d (sim %.3f%s)", a.speaker, a.similarity, ", new" if a.new else "")
        return a

    def peek(self, audio: np.ndarray, key=None) -> int:
        """The speaker ``audio`` would most likely get, without changing anything (provisional
        labels): the nearest speaker when it is similar enough or no new one may be founded, else
        the id a new speaker would get."""
        emb = self._embed(audio, key)
        with self._lock:
            near = self.clusterer.nearest(emb)
            c = self.clusterer
            room = c.n_speakers is None or len(c.ids) < c.n_speakers
            long_enough = len(audio) >= self.cfg.min_new_speaker_s * SAMPLE_RATE
            if near is not None and (near[1] >= c.threshold or not room or not long_enough):
                return near[0]
            return c.next_id

    def would_split(self, before: np.ndarray, after: np.ndarray) -> bool:
        """Whether ``before`` and then ``after`` would get two different speakers, without changing
        anything (speaker-change confirmation). With speakers known: their :meth:`peek` differ.
        With none yet, ``before`` would found the first speaker and ``after`` a second one: below
        ``threshold`` against ``before``, room for two, and each side long enough to found a
        speaker (``min_new_speaker_s``: a shorter clip's voice embedding is too unsure to tell two
        people apart; a 0.6 s first word split a speaker in two without this).
        Without this, the conversation's opening turns answered within a VAD pause stay one
        utterance whose voice then looks like both speakers (README, "0.25 s gaps")."""
        if self.known:
            return self.peek(before) != self.peek(after)
        c = self.clusterer
        shortest = self.cfg.min_new_speaker_s * SAMPLE_RATE
        if (c.n_speakers is not None and c.n_speakers < 2) or min(len(before), len(after)) < shortest:
            return False
        return float(self.encoder.embed(before) @ self.encoder.embed(after)) < c.threshold  # unit-norm: cosine

    def nearest(self, audio: np.ndarray) -> tuple[int, float] | None:
        """(speaker, cosine) of the known voice nearest to ``audio``; None before any speaker."""
        emb = self.encoder.embed(audio)
        with self._lock:
            return self.clusterer.nearest(emb)

    @property
    def known(self) -> int:
        """Speakers known so far."""
        with self._lock:
            return len(self.clusterer.ids)


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
