"""Per-utterance features for the live runtime: exactly the extractors the model's manifest names.

For each modality of the model, the manifest records the :class:`ExtractorIdentity` of the
extractor its training features came from. :class:`FeatureBuilder` builds that extractor through
:func:`train.features.registry.get_extractor` -- the same classes ``train.extract`` runs over a
corpus, so live features and training features have one definition -- and refuses to start when
the identity it gets differs (other weights, other settings): features from a different extractor
would make the model's outputs meaningless without any visible error.

* text: the transcript, with the past turns of the conversation as ``context`` (only encoders
  that read context use them, e.g. ``minilm-ctx-*``). With an exported backend (onnx, onnx-int8,
  trt) the registry's ``onnx`` twin is built from the export directory (torch-free; INT8 encoder
  for INT8 backends); with the torch backend, the extractor's default (torch) backend.
* audio: the utterance's 16 kHz samples (e.g. ``is10`` openSMILE).
* visual: the utterance's video frames (faces found and embedded by e.g. ``fer``); no frames or
  no face -> a NaN row.

A modality the model does not use is never computed. A NaN row (nothing to extract) means the
modality is masked out of the graph for that utterance (:mod:`train.graph`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.config import SAMPLE_RATE
from runtime.face import FrameFaces
from train.common import InputError
from train.features.base import MAX_CONTEXT_TURNS, FeatureExtractor, UtteranceInput
from train.model_dir import ModelManifest

log = logging.getLogger(__name__)

@dataclass
class UtteranceData:
    """What the features of one utterance are computed from.

    audio: (samples,) float32 16 kHz; frames: (H, W, 3) uint8 BGR images spanning the utterance.
    """

    text: str
    speaker: int
    audio: np.ndarray | None = None
    frames: Sequence[np.ndarray] = field(default_factory=list)
    frame_ids: Sequence[int] = ()  # ids of ``frames`` for the per-frame cache (see FeatureBuilder)


def _extractor_backend_for(model_backend: str | None) -> str | None:
    """Registry backend of the text extractor that goes with a model backend."""
    return "onnx" if model_backend and model_backend != "torch" else None


class FeatureBuilder:
    """``build(utterance, history) -> ({modality: (d,) float32}, {stage: ms})`` for one model.

    Args:
        manifest: the model's manifest (modalities and extractor identities).
        backend: the loaded model backend; exported backends supply the text encoder directory
            (``export_dir``) and precision.
        extractors: pre-built extractors by modality (tests, embedding); checked like the rest.
    """

    def __init__(self, manifest: ModelManifest, backend=None, extractors: dict[str, FeatureExtractor] | None = None):
        self.manifest = manifest
        self.extractors: dict[str, FeatureExtractor] = {}
        given = extractors or {}
        for modality in manifest.modalities:
            wanted = manifest.extractors.get(modality)
            if wanted is None or wanted.name == "precomputed":
                raise InputError(
                    f"model {manifest.name!r} was trained on precomputed {modality} features "
                    f"({wanted.version if wanted else 'unknown source'}); the live runtime can only compute features "
                    "with a named extractor (train it with data.extractors set, e.g. text: minilm)")
            ex = given.get(modality) or self._make(modality, wanted.name, backend)
            if ex.identity != wanted:
                raise InputError(
                    f"the {modality} extractor here ({ex.identity.name} {ex.identity.version}, {ex.identity.dim}-d) is not the one "
                    f"model {manifest.name!r} was trained with ({wanted.name} {wanted.version}, {wanted.dim}-d)")
            self.extractors[modality] = ex
        log.info("features: %s", ", ".join(f"{m}={e.identity.name}" for m, e in self.extractors.items()))
        # Per-frame visual results (the largest face or None), computed while the person speaks
        # (precompute_frame), so that at the end of an utterance only the frames not yet seen
        # remain to be done. Shared with the face evidence (runtime.face) when it is fer's.
        self.frame_faces: FrameFaces | None = FrameFaces(self.extractors["visual"]) if self.frame_cache else None

    @staticmethod
    def _make(modality: str, name: str, backend) -> FeatureExtractor:
        from train.features.registry import get_extractor, known

        if modality != "text":
            return get_extractor(name)
        reg_backend = _extractor_backend_for(getattr(backend, "name", None))
        if reg_backend == "onnx":
            if "onnx" not in known().get(name, []):
                raise InputError(f"text extractor {name!r} has no torch-free (onnx) form; use --backend torch")
            precision = "int8" if getattr(backend, "precision", "fp32") == "int8" else "fp32"
            export_dir = Path(backend.export_dir)
            try:
                return get_extractor(name, backend="onnx", path=export_dir, precision=precision)
            except InputError as e:
                if precision == "int8":  # an export without an INT8 encoder still has the FP32 one
                    log.warning("no INT8 text encoder in %s (%s); using the FP32 one", export_dir, e)
                    return get_extractor(name, backend="onnx", path=export_dir, precision="fp32")
                raise
        return get_extractor(name)

    @property
    def modalities(self) -> list[str]:
        return list(self.extractors)

    @property
    def frame_cache(self) -> bool:
        """Whether the visual extractor works frame by frame (``faces`` + ``select_frames``, as fer)."""
        ex = self.extractors.get("visual")
        return ex is not None and hasattr(ex, "faces") and hasattr(ex, "select_frames")

    def precompute_frame(self, frame_id: int, image: np.ndarray) -> None:
        """Compute (and cache) one frame's visual result ahead of the utterance's end."""
        if self.frame_faces is not None:
            self.frame_faces.face(frame_id, image)

    def _visual_row(self, utt: UtteranceData) -> np.ndarray | None:
        """Exactly ``FerExtractor.extract_frames``: the largest face's features averaged over the
        evenly spaced frames ``select_frames`` picks, None when none of them shows a face."""
        faces = self.frame_faces.of_utterance(list(utt.frames), list(utt.frame_ids))
        return np.mean([f.features for f in faces], axis=0).astype(np.float32) if faces else None

    def build(self, utt: UtteranceData, history: Sequence[UtteranceData] = ()) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Feature rows of one utterance and the milliseconds each modality took.

        ``history``: earlier utterances of the conversation, oldest first (context for text).
        """
        rows: dict[str, np.ndarray] = {}
        ms: dict[str, float] = {}
        for modality, ex in self.extractors.items():
            t0 = time.perf_counter()
            if modality == "text":
                ctx = [UtteranceInput(text=h.text, speaker=str(h.speaker)) for h in list(history)[-MAX_CONTEXT_TURNS:]]
                item = UtteranceInput(text=utt.text, speaker=str(utt.speaker), context=ctx)
            elif modality == "audio":
                item = UtteranceInput(speaker=str(utt.speaker), audio=utt.audio, sample_rate=SAMPLE_RATE)
            elif self.frame_cache and len(utt.frame_ids) == len(utt.frames):
                row = self._visual_row(utt)
                rows[modality] = np.full(ex.identity.dim, np.nan, np.float32) if row is None else row
                ms[modality] = (time.perf_counter() - t0) * 1000
                continue
            else:
                item = UtteranceInput(speaker=str(utt.speaker), frames=list(utt.frames) or None)
            row = np.asarray(ex.extract([item]), np.float32).reshape(-1)
            if row.shape[0] != ex.identity.dim:
                raise InputError(f"{modality} features are {row.shape[0]}-d but the model expects {ex.identity.dim}-d "
                                 f"(the {ex.identity.name} extractor returned a row of another width)")
            rows[modality] = row
            ms[modality] = (time.perf_counter() - t0) * 1000
        return rows, ms

    def warm_up(self) -> None:
        """Run each extractor once so the first utterance does not pay for lazy loading."""
        blank = UtteranceData(text="hello", speaker=0, audio=np.zeros(SAMPLE_RATE, np.float32),
                              frames=[np.zeros((64, 64, 3), np.uint8)])
        self.build(blank)
