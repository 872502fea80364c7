r"""A synthetic multimodal IEMOCAP stand-in for the paper's claim, in the DialogueRNN/MMGCN layout.

The claim (AR-IIGCN, arXiv 2312.16778): modalities live in heterogeneous spaces, each is weak on
its own, and fusing them in a speaker-aware conversation graph (after aligning their spaces)
recognises emotions that no single modality can. This generator writes a corpus that has exactly
those properties and nothing tuned to any model. Every choice below was fixed from the claim
before any model was trained on it; ``seed`` fixes every random draw.

Conversations (IEMOCAP's shape)
    ``n_train`` + ``n_test`` dialogues (default 120 + 31, IEMOCAP's split sizes), 20-70
    utterances each, two speakers "M"/"F" who take the turn with probability 0.8. Emotions (the
    six IEMOCAP labels) follow each speaker's own Markov chain: a speaker keeps their previous
    emotion with probability ``inertia`` (0.7) and otherwise draws one uniformly, so the past
    turns of the same speaker carry information (what the graph's speaker relations can use).

Each modality is weak alone
    The label ``y`` in 0..5 is split into three coarse cues, one per modality: text carries
    ``y mod 2``, audio ``y mod 3`` and visual ``y // 2``. Any two cues determine ``y`` (the
    Chinese remainder theorem for text+audio; each visual pair holds one even and one odd label,
    and meets each audio pair once), so one modality alone can at best tell 3 (text) or 2
    (audio, visual) labels apart, while any two modalities can tell all six.

    A cue is a point in a 16-d latent space: a prototype per cue value (Gaussian, scaled to norm
    2) plus unit Gaussian noise, plus a per-(dialogue, speaker) offset of norm 0.5 (a voice, a
    face). With this noise a modality reads its own cue correctly roughly nine times in ten, so
    fusion has redundancy to correct single-modality errors, and no modality is perfect.

Heterogeneous spaces
    The 16-d latent of modality m is embedded in its published width (text 100, audio 1582,
    visual 342) by a random orthonormal map ``Q_m`` (its own rotation), with isotropic noise
    (0.3) in every observed dimension, then scaled and offset per modality:

    .. math::
        x^m = s^m \odot (Q_m z^m + 0.3\,\epsilon) + o^m

    text: ``s = 0.05``, ``o = 0`` (a small-norm embedding); audio: per-dimension
    ``s ~ LogNormal(0, 1.5)``, ``o ~ LogNormal(1, 1.5)`` (openSMILE-like: positive, wildly
    different scales); visual: ``s = 1``, ``o ~ N(0.5, 0.5)``. So the three modalities differ in
    rotation, scale, offset and dimension.

Missing modalities at test time
    In the test split each utterance loses one modality (chosen uniformly) with probability
    ``missing`` (0.2); its row is all zeros, the community files' convention
    (:mod:`train.data.checks` reads an all-zero row as "missing"). Train (and the validation
    that loaders carve from it) has every modality.

Layout: DialogueRNN's ``IEMOCAP_features_raw.pkl`` / MMGCN's ``IEMOCAP_features.pkl`` list of 9:
``videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence,
trainVid, testVid`` (:mod:`train.data.dialoguernn`).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.data.corpus import IEMOCAP_LABELS

DIMS = {"text": 100, "audio": 1582, "visual": 342}  # MMGCN IEMOCAP_features.pkl widths
LATENT = 16
N_LABELS = len(IEMOCAP_LABELS)


def cues(y: np.ndarray) -> dict[str, np.ndarray]:
    """Each modality's coarse cue of labels ``y`` (see the module docstring). (n,) -> modality -> (n,)."""
    y = np.asarray(y)
    return {"text": y % 2, "audio": y % 3, "visual": y // 2}


@dataclass(frozen=True)
class BenchmarkSpec:
    """The generator's knobs; the defaults are the benchmark. ``seed`` fixes every draw."""

    seed: int = 0
    n_train: int = 120
    n_test: int = 31
    min_len: int = 20
    max_len: int = 70
    inertia: float = 0.7  # P(a speaker keeps their previous emotion)
    switch: float = 0.8  # P(the other speaker takes the next turn)
    proto_norm: float = 2.0  # cue prototypes' norm in the latent space
    noise: float = 1.0  # latent noise per component
    speaker_shift: float = 0.5  # norm of each (dialogue, speaker) latent offset
    obs_noise: float = 0.3  # isotropic noise in every observed dimension
    missing: float = 0.2  # P(a test utterance loses one modality)
    dims: dict[str, int] = field(default_factory=lambda: dict(DIMS))


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(rows, cols)))
    return q


def _labels(rng: np.random.Generator, speakers: list[str], inertia: float) -> np.ndarray:
    last: dict[str, int] = {}
    out = np.empty(len(speakers), np.int64)
    for i, s in enumerate(speakers):
        if s in last and rng.random() < inertia:
            out[i] = last[s]
        else:
            out[i] = rng.integers(N_LABELS)
        last[s] = int(out[i])
    return out


def make_benchmark(spec: BenchmarkSpec = BenchmarkSpec()) -> list:
    """The corpus as the 9-field list a DialogueRNN/MMGCN IEMOCAP pickle holds (see the module docstring)."""
    small = {m: d for m, d in spec.dims.items() if d < LATENT}
    if small or set(spec.dims) != set(DIMS):
        raise ValueError(f"dims must give text, audio and visual widths of at least {LATENT}, got {spec.dims}")
    rng = np.random.default_rng(spec.seed)
    n_cues = {"text": 2, "audio": 3, "visual": 3}
    protos, embed, scale, offset = {}, {}, {}, {}
    for m, dim in spec.dims.items():
        p = rng.normal(size=(n_cues[m], LATENT))
        protos[m] = spec.proto_norm * p / np.linalg.norm(p, axis=1, keepdims=True)
        embed[m] = _orthonormal(rng, dim, LATENT)
        if m == "text":
            scale[m], offset[m] = np.full(dim, 0.05), np.zeros(dim)
        elif m == "audio":
            scale[m], offset[m] = rng.lognormal(0.0, 1.5, dim), rng.lognormal(1.0, 1.5, dim)
        else:
            scale[m], offset[m] = np.ones(dim), rng.normal(0.5, 0.5, dim)

    ids, spk, labels, sentences = {}, {}, {}, {}
    feats: dict[str, dict] = {m: {} for m in DIMS}
    train_ids, test_ids = [], []
    for k in range(spec.n_train + spec.n_test):
        test = k >= spec.n_train
        vid = f"Ses0{1 + k % 5}{'FM'[k % 2]}_synth{k:03d}"
        n = int(rng.integers(spec.min_len, spec.max_len + 1))
        speakers = ["M" if rng.random() < 0.5 else "F"]
        for _ in range(n - 1):
            speakers.append(({"M": "F", "F": "M"}[speakers[-1]]) if rng.random() < spec.switch else speakers[-1])
        y = _labels(rng, speakers, spec.inertia)
        c = cues(y)
        shift = {m: {s: spec.speaker_shift * v / np.linalg.norm(v) for s in ("M", "F")
                     for v in [rng.normal(size=LATENT)]} for m in spec.dims}
        drop = np.full(n, -1)
        if test:
            lose = rng.random(n) < spec.missing
            drop[lose] = rng.integers(0, len(spec.dims), int(lose.sum()))
        for j, (m, dim) in enumerate(spec.dims.items()):
            z = protos[m][c[m]] + spec.noise * rng.normal(size=(n, LATENT))
            z += np.stack([shift[m][s] for s in speakers])
            x = scale[m] * (z @ embed[m].T + spec.obs_noise * rng.normal(size=(n, dim))) + offset[m]
            x[drop == j] = 0.0
            feats[m][vid] = [row for row in x.astype(np.float32)]
        ids[vid] = [f"{vid}_{i:03d}" for i in range(n)]
        spk[vid] = speakers
        labels[vid] = [int(v) for v in y]
        sentences[vid] = [f"utterance {i} of {vid}" for i in range(n)]
        (test_ids if test else train_ids).append(vid)
    return [ids, spk, labels, feats["text"], feats["audio"], feats["visual"], sentences, train_ids, test_ids]


def write_benchmark(path: str | Path, spec: BenchmarkSpec = BenchmarkSpec()) -> Path:
    """Pickle :func:`make_benchmark` to ``path`` atomically (temp file + rename)."""
    from train.common import write_bytes_atomic

    return write_bytes_atomic(path, pickle.dumps(make_benchmark(spec), protocol=4))
