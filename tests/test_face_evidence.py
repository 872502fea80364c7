"""Face evidence (runtime.face): the fer expression model's own reading of each utterance's face.

Checked against fer run frame by frame on the same frames; shared with the visual features of a
model that uses fer (one face-model run per frame); in a session, with a text-only model, the
utterances seen with a face carry it and those without a face (or without video) carry null.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("cv2")

from runtime.config import DEMO_FACE  # noqa: E402
from runtime.face import FrameFaces, UtteranceFaces, face_evidence  # noqa: E402
from train.features.visual import EMOTIONS, FerExtractor  # noqa: E402


def frames_with_faces(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[bool]]:
    """``n`` 360x480 frames: the demo face at varying places and brightness, every third one blank."""
    import cv2

    face = cv2.imread(str(DEMO_FACE))
    rng = np.random.default_rng(seed)
    frames, has = [], []
    for k in range(n):
        canvas = np.full((360, 480, 3), 90, np.uint8)
        if k % 3 != 2:
            x, y = int(rng.integers(0, 160)), int(rng.integers(0, 40))
            img = face[:, ::-1] if k % 2 else face
            canvas[y : y + 320, x : x + 320] = np.clip(img.astype(int) + int(rng.integers(-40, 40)), 0, 255)
        frames.append(canvas)
        has.append(k % 3 != 2)
    return frames, has


def test_evidence_is_fer_averaged_over_the_frames_with_a_face():
    frames, has = frames_with_faces(6)  # <= max_frames (8): every frame is used
    faces = UtteranceFaces()
    ev = faces.evidence(frames, list(range(10, 16)))
    reference = FerExtractor(output="probs")
    per_frame = [reference.faces(f, largest_only=True) for f in frames]
    assert [bool(p) for p in per_frame] == has  # the blank frames have no face, the others one
    expected = np.mean([p[0].probs for p in per_frame if p], axis=0)
    assert ev is not None and ev["frames"] == sum(has) == 4
    assert list(ev["probs"]) == list(EMOTIONS)
    np.testing.assert_allclose([ev["probs"][e] for e in EMOTIONS], expected, atol=1e-5)
    assert abs(sum(ev["probs"].values()) - 1.0) < 1e-3
    assert max(ev["probs"], key=ev["probs"].get) == "happy"  # the astronaut smiles
    # no face in any frame, or no frames at all: null
    blank = [np.full((360, 480, 3), 90, np.uint8)] * 3
    assert faces.evidence(blank, [20, 21, 22]) is None
    assert faces.evidence([], []) is None
    assert face_evidence([]) is None


def test_long_utterances_use_the_visual_features_frames():
    """More frames than max_frames: the evenly spaced ones select_frames picks, each run once."""
    frames, has = frames_with_faces(20)
    faces = UtteranceFaces()
    picked = faces.frames.extractor.select_frames(20)
    assert len(picked) == 8
    ev = faces.evidence(frames, list(range(20)))
    assert ev["frames"] == sum(has[j] for j in picked)
    assert faces.frames.computed == 8
    assert faces.evidence(frames, list(range(20))) == ev and faces.frames.computed == 8  # cached
    with pytest.raises(ValueError, match="2 frames but 3 frame ids"):
        faces.evidence(frames[:2], [0, 1, 2])


def test_a_model_using_fer_shares_one_face_run_per_frame():
    """With a fer visual model, the visual features and the face evidence read one cache."""
    from export.backends import load_backend
    from runtime.features import FeatureBuilder, UtteranceData
    from tests import live_fixtures as fx

    backend = load_backend(fx.visual_model(), "onnx")
    fb = FeatureBuilder(backend.manifest, backend)
    faces = UtteranceFaces.for_features(fb)
    assert faces.frames is fb.frame_faces
    frames, has = frames_with_faces(6, seed=1)
    ids = list(range(100, 106))
    rows, _ = fb.build(UtteranceData(text="hello there", speaker=0, frames=frames, frame_ids=ids))
    ev = faces.evidence(frames, ids)
    assert np.isfinite(rows["visual"]).all() and ev["frames"] == sum(has)
    assert fb.frame_faces.computed == 6  # not 12
    # without a fer visual extractor (a text-only model) the evidence loads its own face model
    text = load_backend(fx.text_model(), "onnx")
    own = UtteranceFaces.for_features(FeatureBuilder(text.manifest, text))
    assert isinstance(own.frames, FrameFaces) and own.frames.extractor.output == "probs"


@pytest.mark.parametrize("video", [True, False])
def test_session_events_carry_face_with_a_text_only_model(video):
    """A text-only model: utterances with the face on screen carry fer's reading, the ones after
    the face is gone carry null, and a session without video carries null throughout."""
    import shutil

    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed for test speech")
    pytest.importorskip("faster_whisper")
    import cv2

    from runtime.tools.make_speech import read_wav
    from tests import live_fixtures as fx
    from tests.test_recognizer import make_recognizer, push_file, utterances

    wav, script = fx.speech()
    audio = read_wav(wav)
    face = cv2.imread(str(DEMO_FACE))
    blank = np.full_like(face, 128)
    half = script["utterances"][4]["start"] - 0.2
    frames = [(k / 5, face if k / 5 < half else blank) for k in range(int(len(audio) / 16000 * 5))]
    rec = make_recognizer(fx.text_model(), "onnx", video=video).start()
    assert rec.features.modalities == ["text"]
    push_file(rec, audio, frames if video else None)
    utts = utterances(list(rec.events(timeout=90)))
    assert len(utts) == 8
    if not video:
        assert rec.faces is None and all(e["face"] is None for e in utts)
        return
    for e in utts[:4]:
        assert e["face"]["frames"] > 0 and abs(sum(e["face"]["probs"].values()) - 1) < 1e-3
        assert max(e["face"]["probs"], key=e["face"]["probs"].get) == "happy"
        assert "face" in e["latency_ms"]
    assert all(e["face"] is None for e in utts[4:])
    assert all(e["modalities"] == ["text"] for e in utts)  # the evidence is not fed to the model


def test_overlay_shows_the_top_face_expression_beside_the_label():
    from runtime.overlay import Overlay, headline

    event = {"type": "utterance", "emotion": "sad", "probs": {"sad": 0.7, "happy": 0.3}, "speaker": 1, "text": "hi",
             "face": {"probs": {e: (0.9 if e == "surprise" else 0.1 / 6) for e in EMOTIONS}, "frames": 3}}
    assert headline(event) == "sad 0.70  speaker 1  | face: surprise 0.90"
    assert headline({**event, "face": None}) == "sad 0.70  speaker 1"
    overlay = Overlay()
    frame = np.zeros((240, 640, 3), np.uint8)
    with_face, without = overlay.draw(frame, event), overlay.draw(frame, {**event, "face": None})
    assert (with_face[:34, 200:] != without[:34, 200:]).any()  # the bar's right part shows it
