"""The embeddable Recognizer: audio/frames in, one event per utterance out; capture never waits.

Uses a tiny model trained and exported with the project's own commands (tests/live_fixtures.py)
and generated two-voice speech (espeak-ng + sox).
"""
from __future__ import annotations

import re
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("onnxruntime")
if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
    pytest.skip("espeak-ng and sox are needed for test speech: apt-get install -y espeak-ng sox", allow_module_level=True)

from runtime.config import DEMO_FACE, RuntimeConfig  # noqa: E402
from runtime.recognizer import Recognizer  # noqa: E402
from runtime.speakers import SpeakerTracker  # noqa: E402
from runtime.tools.make_speech import read_wav  # noqa: E402
from tests import live_fixtures as fx  # noqa: E402

CHUNK = 512


def make_recognizer(model, backend=None, transcriber=None, **kw) -> Recognizer:
    cfg = RuntimeConfig()
    return Recognizer(model, backend, cfg, realtime=False, transcriber=transcriber or fx.transcriber(),
                      speakers=SpeakerTracker(cfg.speakers, encoder=fx.voice_encoder()), **kw)


def push_file(rec: Recognizer, audio: np.ndarray, frames=None, paced: bool = False) -> None:
    """Push audio in 32 ms chunks (and frames whose time has come), then end the audio.

    With frames, reading stays at most 2 s ahead of the segmenter (as ``--fast`` does): the
    recognizer keeps a bounded history of recent frames, which a file read at full speed outruns.
    ``paced``: also wait while the model thread is busy (as ``--fast`` does), so that no view of an
    utterance is out of date before the model thread reaches it (provisional labels are then all
    emitted, not skipped).
    """
    frames = list(frames or [])
    for i in range(0, len(audio), CHUNK):
        while (frames and rec.backlog_s > 2.0) or (paced and (rec.busy or rec.backlog_s > 0.5)):
            time.sleep(0.005)
        rec.push_audio(audio[i : i + CHUNK])
        while frames and frames[0][0] <= (i + CHUNK) / 16000:
            t, img = frames.pop(0)
            rec.push_frame(img, t)
    rec.end_audio()


def utterances(events):
    """Final utterance events."""
    return [e for e in events if e["type"] == "utterance" and e["final"]]


def check_speakers(utts, script):
    """Each scripted speaker maps to one id, and the two voices to different ids."""
    by_voice = {}
    for e in utts:
        truth = min(script["utterances"], key=lambda u: abs(u["start"] - e["start"]))["speaker"]
        by_voice.setdefault(truth, set()).add(e["speaker"])
    assert all(len(ids) == 1 for ids in by_voice.values()), by_voice
    assert len(set.union(*by_voice.values())) == len(by_voice) == 2, by_voice


@pytest.fixture(scope="module")
def speech():
    wav, script = fx.speech()
    return read_wav(wav), script


def test_one_event_per_utterance(speech):
    audio, script = speech
    model = fx.text_model()
    rec = make_recognizer(model).start()
    fx.check_fastest_exported_backend(rec.backend.name, rec.backend_notes)
    push_file(rec, audio, paced=True)
    events = list(rec.events(timeout=60))
    utts = utterances(events)
    assert len(utts) == len(script["utterances"]) == 8
    assert [e["index"] for e in utts] == list(range(8))
    assert fx.wer_of(events, script) <= 0.25
    assert {e["emotion"] for e in utts} <= set(rec.labels)
    for e in utts:
        assert set(e["probs"]) == set(rec.labels) and abs(sum(e["probs"].values()) - 1) < 1e-3
        assert {"vad", "asr", "speaker", "features", "model", "total"} <= set(e["latency_ms"])
        truth = min(script["utterances"], key=lambda u: abs(u["start"] - e["start"]))
        assert abs(truth["start"] - e["start"]) < 0.3 and abs(truth["end"] - e["end"]) < 0.3
    check_speakers(utts, script)
    assert events[0]["type"] == "status" and events[0]["state"] == "started"
    assert events[-1]["type"] == "status" and events[-1]["state"] == "stopped" and events[-1]["utterances"] == 8
    # provisional labels: at the pause ending each utterance (before its boundary pause), with the
    # index of its final event, which follows it. A provisional view whose final view arrived
    # before the model thread reached it is skipped as out of date (a loaded machine), and counted.
    prov = [e for e in events if e["type"] == "utterance" and not e["final"]]
    assert {e["index"] for e in prov} <= set(range(8)) and prov
    assert len(prov) == events[-1]["provisional"]
    assert len(prov) + events[-1]["provisional_skipped"] >= 7
    for p in prov:
        later = events[events.index(p) + 1 :]
        fin = [e for e in later if e["type"] == "utterance" and e["final"] and e["index"] == p["index"]]
        assert len(fin) == 1 and fin[0]["start"] == p["start"] and fin[0]["end"] >= p["end"]
        assert p["latency_ms"]["vad"] < fin[0]["latency_ms"]["vad"]  # the VAD pause vs the boundary pause
    for e in utts:
        assert e["latency_ms"]["after_close"] <= e["latency_ms"]["total"]


class GatedTranscriber:
    """The real transcriber behind a gate: the model thread blocks until the test opens it.
    ``skip_words``: a decode whose transcript holds any of these words finds "no words" (None),
    so one spoken utterance is lost in every view of it, whatever order the views are decoded in
    (a final is decoded again with its own settings, so counting calls would not say which)."""

    def __init__(self, inner, skip_words=()):
        self.inner, self.gate, self.skip, self.calls = inner, threading.Event(), {w.lower() for w in skip_words}, 0
        self.model_path = inner.model_path

    def transcribe(self, audio, **settings):
        self.gate.wait(60)
        self.calls += 1
        out = self.inner.transcribe(audio, **settings)
        if out is not None and self.skip & set(re.findall(r"[a-z]+", out.text.lower())):
            return None
        return out


def test_a_replays_speaker_check_waits_for_the_model_thread(speech):
    """In a replay (``realtime=False``) the speaker-change detector reads the speaker tracker only
    once the model thread has taken in every utterance handed over, so what the tracker knows at a
    confirmation follows from the audio, not from how far segmentation ran ahead on a loaded
    machine (the media test's live labels must equal offline ones on every run). Live capture
    reads the tracker as it stands."""
    audio, _ = speech
    gated = GatedTranscriber(fx.transcriber())
    rec = make_recognizer(fx.text_model(), transcriber=gated).start()
    voices = rec.segmenter.detector.voices
    assert voices.voices is rec.speakers
    push_file(rec, audio)  # unpaced: views are handed over while the model thread waits at the gate
    deadline = time.monotonic() + 30
    while rec.backlog_s > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.busy
    read: list[bool] = []
    sides = audio[: 2 * 16000], audio[2 * 16000 : 4 * 16000]
    reader = threading.Thread(target=lambda: read.append(voices.would_split(*sides)), daemon=True)
    reader.start()
    reader.join(1.0)
    assert reader.is_alive() and not read, "the tracker was read while views were still pending"
    gated.gate.set()
    reader.join(60)
    assert read and not rec.busy
    assert len(utterances(list(rec.events()))) >= 7
    rec.close()
    cfg = RuntimeConfig()
    live = Recognizer(fx.text_model(), None, cfg, realtime=True, transcriber=fx.transcriber(),
                      speakers=SpeakerTracker(cfg.speakers, encoder=fx.voice_encoder()))
    assert live.segmenter.detector.voices is live.speakers


class RecordingTranscriber:
    """The real transcriber; records each call's settings and what it returned."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.model_path = inner.model_path

    def transcribe(self, audio, **settings):
        out = self.inner.transcribe(audio, **settings)
        self.calls.append((len(audio), settings, out.text if out is not None else None))
        return out


def test_final_transcripts_are_prompted_with_the_previous_finals(speech):
    """A final view is decoded with asr.beam_size and the last asr.prompt_utterances final transcripts
    as Whisper's prompt, in order; a provisional view greedily, without a prompt."""
    audio, script = speech
    rec_asr = RecordingTranscriber(fx.transcriber())
    rec = make_recognizer(fx.text_model(), "onnx", transcriber=rec_asr).start()
    push_file(rec, audio, paced=True)
    utts = utterances(list(rec.events(timeout=60)))
    assert len(utts) == 8
    cfg = RuntimeConfig().asr
    finals = [c for c in rec_asr.calls if c[1]["beam_size"] == cfg.beam_size]
    provisional = [c for c in rec_asr.calls if c[1]["beam_size"] == cfg.provisional_beam_size]
    assert cfg.beam_size != cfg.provisional_beam_size and cfg.prompt_utterances >= 2
    assert len(finals) == 8 and provisional and len(finals) + len(provisional) == len(rec_asr.calls)
    assert all(c[1]["prompt"] is None for c in provisional)
    for i, (_, settings, _) in enumerate(finals):
        said = [e["text"] for e in utts[:i]][-cfg.prompt_utterances:]
        assert settings["prompt"] == (" ".join(said) or None), i
    assert [c[2] for c in finals] == [e["text"] for e in utts]


@pytest.mark.parametrize("early_decode_ms", [64, 300])
def test_a_provisional_label_is_decoded_before_its_pause_is_long_enough_to_show(speech, early_decode_ms):
    """With early decoding (the default) each provisional view is transcribed once, as soon as its
    pause begins, and the view shown later takes that transcript (no ASR left: ``asr`` 0 ms);
    with ``early_decode_ms`` >= ``provisional_pause_ms`` the shown view is decoded itself."""
    audio, script = speech
    rec_asr = RecordingTranscriber(fx.transcriber())
    cfg = RuntimeConfig()
    cfg.segmentation.early_decode_ms = early_decode_ms
    rec = Recognizer(fx.text_model(), "onnx", cfg, realtime=False, transcriber=rec_asr,
                     speakers=SpeakerTracker(cfg.speakers, encoder=fx.voice_encoder())).start()
    for i in range(0, len(audio), CHUNK):  # each chunk once the last is segmented and labelled
        while rec.busy or rec.backlog_s > 0:
            time.sleep(0.002)
        rec.push_audio(audio[i : i + CHUNK])
    rec.end_audio()
    events = list(rec.events(timeout=60))
    assert len(utterances(events)) == 8
    prov = [e for e in events if e["type"] == "utterance" and not e["final"]]
    stopped = events[-1]
    decodes = [c for c in rec_asr.calls if c[1]["beam_size"] == cfg.asr.provisional_beam_size]
    assert len(prov) >= 7 and stopped["provisional_skipped"] == 0  # nothing is out of date
    if early_decode_ms < cfg.segmentation.provisional_pause_ms:
        assert stopped["early_decodes"] == len(decodes) >= len(prov)
        assert all(e["latency_ms"]["asr"] == 0.0 for e in prov)
    else:
        assert stopped["early_decodes"] == 0 and len(decodes) == len(prov)
        assert all(e["latency_ms"]["asr"] > 0.0 for e in prov)


def test_capture_never_waits_for_the_model(speech):
    """All 29 s of audio are accepted while the model thread is blocked; nothing is lost."""
    audio, script = speech
    gated = GatedTranscriber(fx.transcriber())
    rec = make_recognizer(fx.text_model(), "onnx", transcriber=gated).start()
    t0 = time.perf_counter()
    for i in range(0, len(audio), CHUNK):
        rec.push_audio(audio[i : i + CHUNK])
    pushed_in = time.perf_counter() - t0
    rec.end_audio()
    time.sleep(0.5)
    assert not utterances(rec.poll())  # the model has produced nothing: pushing did not wait for it
    assert gated.calls == 0 and pushed_in < 5.0
    gated.gate.set()
    utts = utterances(list(rec.events(timeout=60)))
    assert len(utts) == 8 and fx.wer_of(utts, script) <= 0.25


def test_utterance_without_words_gets_no_event(speech):
    """The ASR finds no words in utterance 2 ("Thank you, I was really nervous about the
    interview."): a warning, no label, and the rest carry on."""
    audio, script = speech
    gated = GatedTranscriber(fx.transcriber(), skip_words=["thank", "nervous", "interview"])
    gated.gate.set()
    rec = make_recognizer(fx.text_model(), "onnx", transcriber=gated).start()
    push_file(rec, audio)
    events = list(rec.events(timeout=60))
    utts = utterances(events)
    assert len(utts) == 7 and [e["index"] for e in utts] == list(range(7))
    warn = [e for e in events if e["type"] == "warning" and "no words" in e["message"]]
    assert len(warn) == 1 and abs(warn[0]["start"] - script["utterances"][2]["start"]) < 0.3
    assert utts[2]["start"] > script["utterances"][3]["start"] - 0.3  # event 2 is spoken utterance 3


def test_visual_modality_from_frames_and_masked_without_faces(speech):
    """A text+visual model: utterances seen with a face use both modalities; once the faces are
    gone the visual modality is masked out (with a warning) and labelling goes on."""
    import cv2

    audio, script = speech
    face = cv2.imread(str(DEMO_FACE))
    blank = np.full_like(face, 128)
    half = script["utterances"][4]["start"] - 0.2
    frames = [(k / 5, face if k / 5 < half else blank) for k in range(int(len(audio) / 16000 * 5))]
    rec = make_recognizer(fx.visual_model(), "torch", video=True).start()
    assert rec.features.modalities == ["text", "visual"]
    push_file(rec, audio, frames)
    events = list(rec.events(timeout=90))
    utts = utterances(events)
    assert len(utts) == 8
    assert all(e["modalities"] == ["text", "visual"] for e in utts[:4])
    assert all(e["modalities"] == ["text"] for e in utts[4:])
    assert any(e["type"] == "warning" and "no face" in e["message"] for e in events)
    assert all("features.visual" in e["latency_ms"] for e in utts)


def test_model_without_video_needs_no_frames(speech):
    """A text-only model never computes visual features, even when frames are pushed."""
    rec = make_recognizer(fx.text_model(), "onnx", video=True)
    assert rec.features.modalities == ["text"]
    assert "visual" not in rec.features.extractors


def test_visual_cache_gives_the_extractors_result():
    """Frames precomputed while someone speaks + the rest at the end == FerExtractor.extract."""
    import cv2

    from runtime.features import FeatureBuilder, UtteranceData
    from export.backends import load_backend
    from train.features.base import UtteranceInput

    face = cv2.imread(str(DEMO_FACE))
    rng = np.random.default_rng(0)
    frames = []
    for k in range(23):  # faces of varying position/brightness, some frames without a face
        if k % 5 == 4:
            frames.append(np.full((360, 480, 3), 100, np.uint8))
            continue
        canvas = np.full((360, 480, 3), 60, np.uint8)
        x, y = int(rng.integers(0, 160)), int(rng.integers(0, 40))
        canvas[y : y + 320, x : x + 320] = np.clip(face.astype(int) + int(rng.integers(-30, 30)), 0, 255)
        frames.append(canvas)
    backend = load_backend(fx.visual_model(), "onnx")
    fb = FeatureBuilder(backend.manifest, backend)
    assert fb.frame_cache
    for k in range(0, 23, 2):  # the background thread got to every other frame
        fb.precompute_frame(100 + k, frames[k])
    rows, _ = fb.build(UtteranceData(text="hello there", speaker=0, frames=frames, frame_ids=list(range(100, 123))))
    expected = fb.extractors["visual"].extract([UtteranceInput(frames=frames)])[0]
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(rows["visual"], expected)
    blank = [np.full((360, 480, 3), 100, np.uint8)] * 3
    rows, _ = fb.build(UtteranceData(text="hi", speaker=0, frames=blank, frame_ids=[500, 501, 502]))
    assert np.isnan(rows["visual"]).all()


def test_live_events_equal_offline_causal_evaluation(speech):
    """The whole runtime (torch backend): each event's probabilities equal the offline evaluation
    of the same conversation -- the transcripts embedded by the training extractor, the speakers
    found, the whole dialogue through ``train.backends`` at once."""
    from export.backends import load_backend
    from train.data.corpus import Dialogue
    from train.features.base import UtteranceInput
    from train.features.registry import get_extractor

    audio, _ = speech
    rec = make_recognizer(fx.text_model(), "torch").start()
    push_file(rec, audio)
    utts = utterances(list(rec.events(timeout=60)))
    assert len(utts) == 8
    text = get_extractor("minilm").extract([UtteranceInput(text=e["text"]) for e in utts])
    backend = load_backend(fx.text_model(), "torch")
    d = Dialogue("live", "test", [str(e["speaker"]) for e in utts], np.full(8, -1, np.int64), features={"text": text})
    offline = backend.predict([d])[0]
    live = np.array([[e["probs"][lab] for lab in rec.labels] for e in utts])
    np.testing.assert_allclose(live, offline, atol=2e-5)  # events round probabilities to 5 decimals
    assert [e["emotion"] for e in utts] == [rec.labels[i] for i in offline.argmax(1)]


# -- bad input: each handled without a crash, and said in the events --------------------------------


def run_audio(audio, model=None, **cfg_sets):
    rec = make_recognizer(model or fx.text_model(), "onnx").start()
    push_file(rec, audio.astype(np.float32))
    return list(rec.events(timeout=120))


def test_all_silence():
    events = run_audio(np.zeros(16000 * 10, np.float32))
    assert not [e for e in events if e["type"] == "utterance"]
    warn = [e for e in events if e["type"] == "warning"]
    assert len(warn) == 1 and "no speech found in 10.0 s" in warn[0]["message"]
    assert events[-1]["state"] == "stopped" and events[-1]["utterances"] == 0


def test_burst_of_noise_without_words(speech):
    """2 s of loud noise between two utterances: the noise gets no label (the VAD ignores it or the
    ASR finds no words in it, said in a warning); both utterances are labelled."""
    audio, script = speech
    u0, u1 = script["utterances"][:2]
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(32000) * 0.1).astype(np.float32)
    a = np.concatenate([audio[: int((u0["end"] + 1.0) * 16000)], noise, np.zeros(16000, np.float32),
                        audio[int((u1["start"] - 0.3) * 16000) : int((u1["end"] + 1.0) * 16000)]])
    events = run_audio(a)
    utts = utterances(events)
    assert len(utts) == 2 and fx.wer_of(utts, {"utterances": [u0, u1]}) <= 0.25
    noise_at = (u0["end"] + 1.0, u0["end"] + 3.0)
    assert not [e for e in events if e["type"] == "utterance" and e["start"] < noise_at[1] and e["end"] > noise_at[0]]


def test_sixty_seconds_without_a_boundary_pause(tmp_path):
    """One speaker talks for ~60 s with only short pauses: cut at max_utterance_s (15 s) at a
    pause, every piece labelled, and each cut said in a warning."""
    from runtime.tools.make_speech import make_conversation, read_wav

    sentences = [("A", t) for t in ["I finally got the job offer this morning.", "I was really nervous about it.",
                                    "The interview took almost three hours.", "They asked me about everything I did.",
                                    "Then they showed me the office and the team.", "I think I will like it there."]] * 4
    make_conversation(tmp_path, sentences, gaps=[0.3] * (len(sentences) - 1))
    audio = read_wav(tmp_path / "speech.wav")
    assert len(audio) / 16000 > 55
    events = run_audio(audio)
    utts = utterances(events)
    assert len(utts) >= 4 and all(e["end"] - e["start"] <= 15.05 for e in utts)
    cut = [e for e in events if e["type"] == "warning" and "max_utterance_s" in e["message"]]
    assert len(cut) >= 3 and all(w["source"] == "segmentation" for w in cut)
    assert {e["speaker"] for e in utts} == {0}
    assert fx.wer_of(utts, {"utterances": [{"text": t} for _, t in sentences]}) <= 0.3


def test_two_people_talking_over_each_other(speech):
    """The second voice starts 1 s before the first one ends: no crash, every word-bearing piece
    labelled once as final, and the session ends normally."""
    audio, script = speech
    u0, u1 = script["utterances"][:2]
    a = audio[int((u0["start"] - 0.3) * 16000) : int((u0["end"]) * 16000)]
    b = audio[int(u1["start"] * 16000) : int((u1["end"] + 1.0) * 16000)]
    mix = np.zeros(16000 + len(a) + len(b), np.float32)
    mix[16000 : 16000 + len(a)] += a
    off = 16000 + len(a) - 16000
    mix[off : off + len(b)] += b
    events = run_audio(np.concatenate([mix, np.zeros(16000, np.float32)]))
    utts = utterances(events)
    assert 1 <= len(utts) <= 3
    assert len({e["index"] for e in utts}) == len(utts)
    assert events[-1]["type"] == "status" and events[-1]["state"] == "stopped" and not events[-1]["error"]


# -- event delivery never blocks the pipeline (issue #13 items 12-15) -----------------------------


def run_with_deadline(fn, seconds: float):
    """Run ``fn`` on a thread; fail (instead of hanging the test run) if it has not returned in time."""
    out, errors = [], []

    def body():
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)
    th = threading.Thread(target=body, daemon=True)
    th.start()
    th.join(seconds)
    assert not th.is_alive(), f"still running after {seconds} s (it hangs)"
    if errors:
        raise errors[0]
    return out[0]


def test_module_docstring_usage_runs_on_one_thread(speech):
    """The module docstring's example, executed as written on one thread (it used to iterate
    events() before end_audio() and hang forever)."""
    import runtime.recognizer as module

    audio, script = speech
    code = module.__doc__.split("::", 1)[1].split("\n\n", 2)[1]
    code = "\n".join(line[4:] for line in code.splitlines())
    seen = []
    code = code.replace("    ...", "    seen.append(event)")
    chunks = [audio[i : i + CHUNK] for i in range(0, len(audio), CHUNK)]
    namespace = {"Recognizer": lambda model, realtime: make_recognizer(fx.text_model(), "onnx"),
                 "chunks": chunks, "seen": seen}
    run_with_deadline(lambda: exec(code, namespace), 120)
    assert len(utterances(seen)) == 8
    assert seen[-1]["type"] == "status" and seen[-1]["state"] == "stopped"


def test_waiting_for_events_on_the_pushing_thread_is_an_error_not_a_hang(speech):
    audio, _ = speech
    rec = make_recognizer(fx.text_model(), "onnx").start()

    def push_then_wait():
        rec.push_audio(audio[:CHUNK])
        return list(rec.events())

    with pytest.raises(RuntimeError, match="call end_audio"):
        run_with_deadline(push_then_wait, 10)
    rec.push_audio(audio[CHUNK : 2 * CHUNK])
    assert [e["state"] for e in rec.events(timeout=0.5)] == ["started"]  # with a timeout: returns
    rec.end_audio()
    events = run_with_deadline(lambda: list(rec.events()), 60)  # after end_audio: to the end
    assert events[-1]["state"] == "stopped"


def test_unread_events_are_dropped_oldest_first_and_counted(speech):
    """Nobody reads events: the model thread never blocks, close() returns, the newest events are
    kept (the stopped event last) and the drops are counted."""
    audio, _ = speech
    rec = make_recognizer(fx.text_model(), "onnx", max_events=3).start()
    for i in range(0, len(audio), CHUNK):
        rec.push_audio(audio[i : i + CHUNK])
    run_with_deadline(rec.close, 120)
    kept = list(rec.events(timeout=5))
    assert len(kept) == 3
    stopped = kept[-1]
    assert stopped["state"] == "stopped" and stopped["utterances"] == 8
    total = 1 + stopped["provisional"] + 8 + 1  # started, provisional and final utterance events, stopped
    # provisional views were made; pushed unpaced, some or all may be overtaken by their finals
    # before the model thread reaches them (provisional_skipped), which then emit no event
    assert stopped["provisional"] + stopped["provisional_skipped"] >= 1
    assert stopped["events_dropped"] == total - 3
    assert [e["index"] for e in utterances(kept)][-1] == 7 and kept[-2]["type"] == "utterance" and kept[-2]["final"]


def test_on_event_runs_on_its_own_thread_and_cannot_block(speech):
    """A callback that never returns blocks neither warn() on a capture thread, nor the model
    thread, nor close()."""
    audio, _ = speech
    threads, release = [], threading.Event()

    def on_event(ev):
        threads.append(threading.current_thread().name)
        release.wait()  # stuck until the test ends

    rec = make_recognizer(fx.text_model(), "onnx", on_event=on_event).start()
    capture = threading.Thread(target=lambda: [rec.warn(f"capture hiccup {k}", source="audio") for k in range(50)])
    capture.start()
    capture.join(5)
    assert not capture.is_alive()  # warn() returned 50 times although on_event is stuck
    for i in range(0, len(audio), CHUNK):
        rec.push_audio(audio[i : i + CHUNK])
    t0 = time.monotonic()
    run_with_deadline(rec.close, 120)
    assert time.monotonic() - t0 < 120
    events = list(rec.events(timeout=5))
    assert len(utterances(events)) == 8  # the pipeline finished although on_event is stuck
    assert threads == ["recognizer-callbacks"]
    release.set()


def test_warnings_and_arrival_times_stay_bounded(speech):
    """A long session: stats.warnings keeps the newest, the arrival-time log is pruned as the
    segmenter goes (it once grew by one entry per pushed chunk for the whole session)."""
    from runtime.recognizer import MAX_WARNINGS_KEPT

    rec = make_recognizer(fx.text_model(), "onnx")
    rec.realtime = True  # arrival times are kept for realtime sources
    rec.start()
    for k in range(3 * MAX_WARNINGS_KEPT):
        rec.warn(f"warning {k}")
    silence = np.zeros(CHUNK, np.float32)
    for _ in range(3000):  # 96 s of silence
        rec.push_audio(silence)
        while rec.backlog_s > 1.0:
            time.sleep(0.002)
    assert len(rec.stats.warnings) == MAX_WARNINGS_KEPT and rec.stats.warnings_total == 3 * MAX_WARNINGS_KEPT
    assert rec.stats.warnings[-1] == f"warning {3 * MAX_WARNINGS_KEPT - 1}"
    assert len(rec._arrivals) < 100, len(rec._arrivals)  # bounded by the segmenter's backlog, not the session
    rec.close()


def test_abort_drops_what_is_not_labelled_and_says_so(speech):
    audio, _ = speech
    gated = GatedTranscriber(fx.transcriber())
    rec = make_recognizer(fx.text_model(), "onnx", transcriber=gated).start()
    for i in range(0, len(audio), CHUNK):
        rec.push_audio(audio[i : i + CHUNK])
    while rec.stats.segments < 3:  # some utterances closed and waiting for the (blocked) model thread
        time.sleep(0.01)
    rec.abort("interrupted")
    gated.gate.set()
    events = run_with_deadline(lambda: list(rec.events()), 60)
    stopped = events[-1]
    assert stopped["state"] == "stopped" and stopped["reason"] == "interrupted"
    assert stopped["utterances"] + stopped["dropped_utterances"] == stopped["segments"]
    assert stopped["dropped_utterances"] >= 1
    assert stopped["utterances"] + stopped["dropped_utterances"] + stopped["no_words"] >= 3
