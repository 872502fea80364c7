"""VAD segmentation, ASR and speaker ids on generated two-voice speech (espeak-ng + sox)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.config import AsrConfig, SpeakerConfig, VadConfig
from tests.live_fixtures import word_error_rate
from train.common import InputError

SR = 16000
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are needed to generate test speech: apt-get install -y espeak-ng sox",
)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to generate test speech: apt-get install -y espeak-ng sox")
    from runtime.tools.make_speech import make_conversation, read_wav

    out = tmp_path_factory.mktemp("speech")
    meta = make_conversation(out)
    return read_wav(out / "speech.wav"), meta["utterances"], out


@pytest.fixture(scope="module")
def utterances(speech):
    from runtime.vad import UtteranceSegmenter

    wav, _, _ = speech
    return list(UtteranceSegmenter().run(wav[i : i + 512] for i in range(0, len(wav), 512)))


@pytest.fixture(scope="module")
def transcriber():
    from runtime.asr import Transcriber

    return Transcriber(AsrConfig())


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from runtime.speakers import VoiceEncoder

    pytest.importorskip("torch", reason="building the ONNX voice encoder once needs torch")
    return VoiceEncoder(cache_dir=tmp_path_factory.mktemp("cache"))


@needs_espeak
def test_generated_speech_is_the_same_every_time(tmp_path):
    """Same text, same voice: the same samples. Corpora made of it (runtime.tools.make_media_corpus),
    the features extracted from them and the models trained on them must be reproducible; sox's
    default dither draws a new seed per run and changed a quarter of the samples by 1-2 LSB."""
    from runtime.tools.make_speech import VOICES, synthesize

    runs = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        runs.append(synthesize("I put the keys on the table", VOICES["B"], tmp_path / str(i)))
    assert len(runs[0]) > SR // 2
    assert np.array_equal(runs[0], runs[1]), f"{np.mean(runs[0] != runs[1]):.0%} of the samples differ"


# -- VAD -------------------------------------------------------------------------------------


def test_script_has_two_voices_and_gaps(speech):
    _, script, out = speech
    assert len(script) >= 6 and {u["speaker"] for u in script} == {"A", "B"}
    gaps = [b["start"] - a["end"] for a, b in zip(script, script[1:])]
    assert min(gaps) >= 0.9
    assert (out / "script.txt").read_text().count("\n") == len(script)


def test_vad_one_utterance_per_scripted_utterance(speech, utterances):
    _, script, _ = speech
    assert len(utterances) == len(script)
    for u, ref in zip(utterances, script):
        # speech bounds within 150 ms of the truth; audio covers the speech plus padding
        assert abs(u.start_s - ref["start"]) < 0.15 and abs(u.end_s - ref["end"]) < 0.15, (u, ref)
        assert u.audio_start <= u.start and u.audio_start + len(u.audio) >= u.end
        assert u.reason == "silence"
        # the end was decided after min_silence_ms of silence, not later than one window more
        assert 0.3 <= (u.decided_at - u.end) / SR <= 0.3 + 512 / SR + 1e-9
    # padded audio never overlaps between utterances
    for a, b in zip(utterances, utterances[1:]):
        assert a.audio_start + len(a.audio) <= b.audio_start


def test_vad_does_not_depend_on_chunk_size(speech, utterances):
    from runtime.vad import UtteranceSegmenter

    wav, _, _ = speech
    rng = np.random.default_rng(0)
    cuts = np.cumsum(rng.integers(1, 3000, size=len(wav) // 500))
    chunks = np.split(wav, cuts[cuts < len(wav)])
    other = list(UtteranceSegmenter().run(chunks))
    assert [(u.start, u.end, len(u.audio)) for u in other] == [(u.start, u.end, len(u.audio)) for u in utterances]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(other, utterances))


def test_vad_silence_and_noise_give_no_utterance():
    from runtime.vad import UtteranceSegmenter

    seg = UtteranceSegmenter()
    assert list(seg.run([np.zeros(SR * 3, np.float32)])) == []
    seg.reset()
    noise = np.random.default_rng(1).standard_normal(SR * 3).astype(np.float32) * 0.01
    assert list(seg.run([noise])) == []


def test_vad_cuts_long_speech_at_max_length(speech):
    from runtime.vad import UtteranceSegmenter

    wav, script, _ = speech
    # three utterances back to back with only 120 ms pauses: one "speech" run of ~8 s
    parts = []
    for ref in script[:3]:
        parts += [wav[int(ref["start"] * SR) : int(ref["end"] * SR)], np.zeros(int(0.12 * SR), np.float32)]
    joined = np.concatenate([np.zeros(SR // 2, np.float32)] + parts + [np.zeros(SR, np.float32)])
    assert len(list(UtteranceSegmenter(VadConfig(min_silence_ms=300)).run([joined]))) == 1
    cut = list(UtteranceSegmenter(VadConfig(max_utterance_s=4.0)).run([joined]))
    assert len(cut) >= 2
    assert all(u.end - u.start <= 4.0 * SR for u in cut)
    assert cut[0].reason == "max_length"
    # the cut falls in a pause (the latest one >= 100 ms), not mid-word: the 100 ms after it are quiet
    after = joined[cut[0].end : cut[0].end + SR // 10]
    speech_rms = np.sqrt(np.mean(joined[cut[0].start : cut[0].end] ** 2))
    assert np.sqrt(np.mean(after**2)) < 0.1 * speech_rms
    assert cut[1].start >= cut[0].end + SR // 10


def test_vad_bad_model_path(tmp_path):
    from runtime.vad import SileroVAD

    with pytest.raises(InputError, match="not found"):
        SileroVAD(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(InputError, match="cannot load the VAD model"):
        SileroVAD(bad)


# -- ASR -------------------------------------------------------------------------------------


def test_asr_word_error_rate_on_generated_speech(speech, utterances, transcriber):
    from runtime.asr import normalize_words

    _, script, _ = speech
    hyps = []
    for u in utterances:
        t = transcriber.transcribe(u.audio)
        assert t is not None, "a scripted utterance produced no transcript"
        hyps.append(t.text)
    ref_all = " ".join(r["text"] for r in script)
    wer = word_error_rate(ref_all, " ".join(hyps))
    assert wer <= 0.25, (wer, hyps)
    assert len(normalize_words(ref_all)) >= 50


def test_word_error_rate_compares_normalised_words():
    assert word_error_rate("Hello, world!", "hello world") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5  # one substitution + one deletion
    assert word_error_rate("a b", "a b c d") == 1.0  # two insertions


@pytest.fixture(scope="module")
def transcriber_30s():
    from runtime.asr import Transcriber

    return Transcriber(AsrConfig(context_s=30.0))


@pytest.mark.parametrize("window", ["10s", "30s"])
def test_asr_guards_against_hallucinations(window, request):
    transcriber = request.getfixturevalue("transcriber" if window == "10s" else "transcriber_30s")
    rng = np.random.default_rng(2)
    assert transcriber.transcribe(np.zeros(3 * SR, np.float32)) is None
    assert transcriber.transcribe(rng.standard_normal(3 * SR).astype(np.float32) * 1e-3) is None  # below level gate
    # loud noise passes the level gate; Whisper's output on it must still be refused
    assert transcriber.transcribe(rng.standard_normal(3 * SR).astype(np.float32) * 0.05) is None
    hum = (0.1 * np.sin(2 * np.pi * 120 * np.arange(3 * SR) / SR)).astype(np.float32)
    assert transcriber.transcribe(hum) is None
    brown = np.cumsum(rng.standard_normal(2 * SR))
    brown = (0.03 * (brown - brown.mean()) / brown.std()).astype(np.float32)
    assert transcriber.transcribe(brown) is None
    clicks = np.zeros(2 * SR, np.float32)
    clicks[rng.integers(0, 2 * SR, 20)] = 0.5
    assert transcriber.transcribe(clicks) is None


def test_asr_keeps_a_real_thank_you(tmp_path, transcriber):
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed: apt-get install -y espeak-ng sox")
    from runtime.tools.make_speech import VOICES, synthesize

    t = transcriber.transcribe(np.pad(synthesize("Thank you very much.", VOICES["A"], tmp_path), SR // 4))
    assert t is not None and "thank" in t.text.lower()


@needs_espeak
@pytest.mark.parametrize("window", ["10s", "30s"])
def test_asr_prompt_conditions_on_what_was_said_before(tmp_path, window, request):
    """The previous transcripts given as the prompt steer the spelling of a rare word, on both decode
    paths; without them tiny.en hears "grunion" as a common word."""
    from runtime.tools.make_speech import VOICES, synthesize

    transcriber = request.getfixturevalue("transcriber" if window == "10s" else "transcriber_30s")
    audio = np.pad(synthesize("Did you ask Kate about the grunion?", VOICES["A"], tmp_path), SR // 4)
    plain = transcriber.transcribe(audio)
    prompted = transcriber.transcribe(audio, prompt="Kate and the grunion. The grunion run tonight.")
    assert plain is not None and "grunion" not in plain.text.lower()
    assert prompted is not None and "grunion" in prompted.text.lower()
    # an empty prompt is no prompt
    assert transcriber.transcribe(audio, prompt="  ").text == plain.text


@needs_espeak
def test_asr_long_utterance_is_transcribed_whole(tmp_path, transcriber):
    """An utterance longer than the short window (Whisper's 30 s path) that starts with a repeated
    word comes back whole, not refused as a repetition loop; a prompt longer than Whisper's
    prompt limit is cut to its tail, not an error."""
    from runtime.tools.make_speech import VOICES, synthesize

    text = ("No, no, no. That's not my point. My point is that there's no point in coming down here "
            "if we just leave. Don't you want to see it? We came all this way for the fish.")
    audio = np.pad(synthesize(text, VOICES["B"], tmp_path), SR // 6)
    assert len(audio) / SR > transcriber.cfg.context_s  # the standard path
    for prompt in (None, "the grunion run " * 200):
        t = transcriber.transcribe(audio, prompt=prompt)
        assert t is not None, prompt
        assert word_error_rate(text, t.text) <= 0.25, t.text


def test_asr_model_errors(tmp_path):
    from runtime.asr import Transcriber

    with pytest.raises(InputError, match="not found"):
        Transcriber(AsrConfig(model=str(tmp_path / "nope")))
    with pytest.raises(InputError, match="missing model.bin"):
        Transcriber(AsrConfig(model=str(tmp_path)))


def test_default_asr_model_is_the_shipped_tiny_en(transcriber):
    assert (transcriber.model_path / "model.bin").is_file()
    assert transcriber.device == "cpu" and transcriber.compute_type == "int8"


# -- speakers --------------------------------------------------------------------------------


def test_speakers_told_apart_open_set(speech, utterances, encoder):
    from runtime.speakers import SpeakerTracker

    _, script, _ = speech
    tracker = SpeakerTracker(SpeakerConfig(), encoder=encoder)
    ids = [tracker.assign(u.audio).speaker for u in utterances]
    assert sorted(set(ids)) == [0, 1]
    mapping = {}
    for i, ref in zip(ids, script):
        mapping.setdefault(ref["speaker"], i)
        assert mapping[ref["speaker"]] == i, (ids, [r["speaker"] for r in script])
    assert mapping["A"] != mapping["B"]


def test_speakers_fixed_count(speech, utterances, encoder):
    from runtime.speakers import SpeakerTracker

    _, script, _ = speech
    one = SpeakerTracker(SpeakerConfig(n_speakers=1), encoder=encoder)
    assert {one.assign(u.audio).speaker for u in utterances} == {0}
    # threshold so high every utterance would found a speaker; n_speakers=2 caps it
    two = SpeakerTracker(SpeakerConfig(n_speakers=2, threshold=0.999), encoder=encoder)
    ids = [two.assign(u.audio).speaker for u in utterances]
    assert ids == [0 if r["speaker"] == script[0]["speaker"] else 1 for r in script]


def test_voice_encoder_matches_resemblyzer_in_torch(speech, encoder):
    """The ONNX graph + numpy STFT equal resemblyzer's torch LSTM + librosa mel."""
    torch = pytest.importorskip("torch")
    librosa = pytest.importorskip("librosa")
    from runtime.speakers import HOP, partial_slices, resemblyzer_checkpoint

    wav, script, _ = speech
    state = torch.load(str(resemblyzer_checkpoint()), map_location="cpu", weights_only=True)["model_state"]
    lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
    lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
    lin = torch.nn.Linear(256, 256)
    lin.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
    for ref in script[:2]:
        a = wav[int(ref["start"] * SR) : int(ref["end"] * SR)]
        gain = -30 - 20 * np.log10(np.sqrt(np.mean((a * 32767.0) ** 2)) / 32767.0)
        x = a * 10 ** (gain / 20) if gain > 0 else a
        sl = partial_slices(len(x))
        x = np.pad(x, (0, max(0, sl[-1].stop * HOP - len(x))))
        mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=400, hop_length=160, n_mels=40).astype(np.float32).T
        with torch.no_grad():
            _, (h, _) = lstm(torch.from_numpy(np.stack([mel[s] for s in sl])))
            e = torch.relu(lin(h[-1]))
            e = (e / e.norm(dim=1, keepdim=True)).numpy().mean(0)
        np.testing.assert_allclose(encoder.embed(a), e / np.linalg.norm(e), atol=1e-5)


def test_voice_encoder_cache_is_reused_and_atomic(tmp_path):
    pytest.importorskip("torch")
    from runtime.speakers import ensure_encoder_onnx

    p1 = ensure_encoder_onnx(tmp_path)
    mtime = p1.stat().st_mtime_ns
    assert ensure_encoder_onnx(tmp_path) == p1 and p1.stat().st_mtime_ns == mtime
    assert [f.name for f in tmp_path.iterdir()] == [p1.name]  # no temp file left behind


def test_clusterer_ids_are_stable():
    from runtime.speakers import SpeakerClusterer

    rng = np.random.default_rng(3)
    centers = rng.standard_normal((3, 32))
    c = SpeakerClusterer(threshold=0.6)
    seq = [0, 1, 0, 2, 1, 2, 0, 0, 1]
    ids = [c.assign(centers[k] + 0.1 * rng.standard_normal(32)).speaker for k in seq]
    assert ids == seq
    # a short utterance may not found a new speaker: it joins the nearest
    assert c.assign(rng.standard_normal(32), may_found=False).speaker in (0, 1, 2)
    assert len(c.centroids) == 3


def test_a_confirmation_does_not_evict_the_utterances_cached_voice():
    """The model thread embeds an utterance once for its provisional view and its final one (same
    key); a speaker-change confirmation from the segmenter thread (no key) in between must neither
    drop that embedding nor leave the cache half-read by the other thread."""
    from runtime.speakers import SpeakerTracker

    class Counting:
        calls = 0

        def embed(self, audio):
            Counting.calls += 1
            e = np.zeros(8, np.float32)
            e[int(audio[0]) % 8] = 1.0
            return e

    tracker = SpeakerTracker(SpeakerConfig(), encoder=Counting())
    tracker.assign(np.full(32000, 5.0, np.float32), key="u0")  # a speaker known: confirmations ask peek
    utterance = np.full(32000, 1.0, np.float32)
    tracker.peek(utterance, key="u1")  # provisional view
    tracker.would_split(np.full(32000, 2.0, np.float32), np.full(32000, 3.0, np.float32))  # segmenter
    before = Counting.calls
    assert tracker.assign(utterance, key="u1").speaker == 1  # final view of the same audio
    assert Counting.calls == before  # embedded once, not again


# -- end to end from a video file's sound track ----------------------------------------------


def test_pipeline_from_video_sound_track(speech, tmp_path, transcriber, encoder):
    """mp4 (video + AAC audio) -> FileAudioSource -> VAD -> ASR -> speakers."""
    from runtime.audio import FileAudioSource
    from runtime.speakers import SpeakerTracker
    from runtime.vad import UtteranceSegmenter
    from runtime.tools.media import write_video

    wav, script, _ = speech
    video = tmp_path / "talk.mp4"
    write_video(video, wav, seconds=len(wav) / SR)
    utts = list(UtteranceSegmenter().run(FileAudioSource(video)))
    assert len(utts) == len(script)
    tracker = SpeakerTracker(SpeakerConfig(), encoder=encoder)
    texts, ids = [], []
    for u in utts:
        t = transcriber.transcribe(u.audio)
        texts.append(t.text if t else "")
        ids.append(tracker.assign(u.audio).speaker)
    assert word_error_rate(" ".join(r["text"] for r in script), " ".join(texts)) <= 0.25
    assert len(set(ids)) == 2
    assert all((i == ids[0]) == (r["speaker"] == script[0]["speaker"]) for i, r in zip(ids, script))


def test_noisy_speech_still_one_utterance_each(tmp_path, transcriber):
    """White noise at -40 dBFS under the whole conversation: no extra utterances in the gaps."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed: apt-get install -y espeak-ng sox")
    from runtime.tools.make_speech import make_conversation, read_wav
    from runtime.vad import UtteranceSegmenter

    meta = make_conversation(tmp_path, noise_dbfs=-40.0)
    utts = list(UtteranceSegmenter().run([read_wav(tmp_path / "speech.wav")]))
    assert len(utts) == len(meta["utterances"])
    hyp = " ".join((t.text if (t := transcriber.transcribe(u.audio)) else "") for u in utts)
    assert word_error_rate(" ".join(u["text"] for u in meta["utterances"]), hyp) <= 0.25


def test_silero_vad_package_model_segments_the_same(speech, utterances):
    """The silero-vad package's ONNX (state/sr interface) works as well as faster-whisper's."""
    import importlib.util

    from runtime.vad import SileroVAD, UtteranceSegmenter

    spec = importlib.util.find_spec("silero_vad")
    if spec is None:
        pytest.skip("silero-vad is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
    vad = SileroVAD(path)
    assert vad.kind == "state"
    wav, _, _ = speech
    other = list(UtteranceSegmenter(vad=vad).run([wav]))
    assert len(other) == len(utterances)
    assert all(abs(a.start - b.start) < 0.1 * SR and abs(a.end - b.end) < 0.1 * SR for a, b in zip(other, utterances))


def test_asr_model_path_and_standard_window(speech, utterances, transcriber_30s):
    """An explicit CTranslate2 model directory (here the same tiny.en), Whisper's 30 s window."""
    from runtime.asr import Transcriber, default_model_path

    _, script, _ = speech
    t = Transcriber(AsrConfig(model=str(default_model_path()), context_s=30.0))
    assert t.model_path == default_model_path()
    hyp = [t.transcribe(u.audio) for u in utterances[:3]]
    assert word_error_rate(" ".join(r["text"] for r in script[:3]), " ".join(h.text for h in hyp)) <= 0.25
    assert [h.text for h in hyp] == [transcriber_30s.transcribe(u.audio).text for u in utterances[:3]]


def test_asr_and_speaker_stages_run_without_torch(encoder, utterances, tmp_path):
    """With the voice-encoder cache built, transcription and speaker ids never import torch."""
    import subprocess
    import sys

    np.save(tmp_path / "utt.npy", utterances[0].audio)
    code = (
        "import sys, numpy as np\n"
        "from runtime.asr import Transcriber\n"
        "from runtime.speakers import SpeakerTracker\n"
        "from runtime.config import SpeakerConfig\n"
        f"a = np.load({str(tmp_path / 'utt.npy')!r})\n"
        f"spk = SpeakerTracker(SpeakerConfig(cache_dir={str(encoder.path.parent)!r}))\n"
        "print(Transcriber().transcribe(a).text, spk.assign(a).speaker, 'torch' in sys.modules)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith(" 0 False"), out.stdout


def test_voice_encoder_without_cache_or_torch_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    from runtime.speakers import ensure_encoder_onnx

    real_import = builtins.__import__

    def no_torch(name, *a, **kw):
        if name == "torch":
            raise ImportError("No module named 'torch'", name="torch")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(InputError, match=r"not built yet .* needs torch and librosa \(torch is missing\)"):
        ensure_encoder_onnx(tmp_path)
    assert list(tmp_path.iterdir()) == []


@needs_espeak
def test_asr_refused_prompted_decode_is_retried_without_the_prompt(tmp_path, transcriber, monkeypatch):
    """When the guards refuse what Whisper made of the audio with the prompt, the audio is decoded
    again without it (and only then)."""
    from runtime.asr import Transcriber
    from runtime.tools.make_speech import VOICES, synthesize

    audio = np.pad(synthesize("I did not want you to worry about me.", VOICES["A"], tmp_path), SR // 4)
    real = Transcriber._guarded
    seen = []

    def refuse_prompted(self, audio, level, prompt, beam, t0):
        seen.append(prompt)
        return None if prompt else real(self, audio, level, prompt, beam, t0)

    monkeypatch.setattr(Transcriber, "_guarded", refuse_prompted)
    t = transcriber.transcribe(audio, prompt="Why did you not tell me?")
    assert seen == ["Why did you not tell me?", None]
    assert t is not None and word_error_rate("I did not want you to worry about me.", t.text) <= 0.25
    seen.clear()
    assert transcriber.transcribe(audio) is not None and seen == [None]
    seen.clear()
    assert transcriber.transcribe(np.zeros(2 * SR, np.float32), prompt="anything") is None and seen == []  # level gate


def test_repeated_run_finds_a_run_of_words_said_twice_in_a_row():
    from runtime.asr import normalize_words, repeated_run

    w = normalize_words("What could happen in a year? What could happen in a year?")
    assert repeated_run(w, 4) and repeated_run(w, 6) and not repeated_run(w, 7) and not repeated_run(w, 0)
    # said twice but not in a row, or a short run twice: not a repeat
    assert not repeated_run(normalize_words("I need three forms. It's a long story. I need three forms."), 4)
    assert not repeated_run(normalize_words("No, no, no. I did not."), 4)
    assert repeated_run(normalize_words("Okay so. I don't want to, I don't want to go."), 4)
    # a run said again and cut short by the end of the decode (tiny.en, beam 5, a validation render)
    cut = normalize_words("Well, do you think you're going to live on campus or off campus your first year? "
                          "Well, do you think you're going to live on campus or off campus")
    assert repeated_run(cut, 4) and not repeated_run(cut[:20], 4)  # 4 words of the restart: an echo
    assert not repeated_run(normalize_words("I need three forms. It's a long story, I need three forms"), 4)


@needs_espeak
def test_asr_prompted_decode_that_repeats_itself_gives_way_to_the_unprompted_one(tmp_path, transcriber, monkeypatch):
    """tiny.en, prompted with what was said before, says this short utterance twice (as it did on
    the validation renders). With the check, the audio is decoded again without the prompt and
    that transcript (said once) is kept; when the unprompted one repeats too (the speech itself
    repeats), the prompted one stays; with the check off, nothing is redone."""
    import dataclasses

    from runtime.asr import Transcriber, normalize_words, repeated_run
    from runtime.tools.make_speech import VOICES, synthesize

    said = "Guess what came today?"
    audio = np.pad(synthesize(said, VOICES["A"], tmp_path), SR // 4)
    real = Transcriber._guarded
    seen, double_plain = [], [False]

    def spy(self, audio, level, prompt, beam, t0):
        seen.append(prompt)
        t = real(self, audio, level, prompt, beam, t0)
        return dataclasses.replace(t, text=f"{t.text} {t.text}") if double_plain[0] and not prompt else t

    monkeypatch.setattr(Transcriber, "_guarded", spy)
    off = Transcriber(dataclasses.replace(transcriber.cfg, repeat_min_words=0))
    t = off.transcribe(audio, prompt="I have news.")
    assert seen == ["I have news."] and repeated_run(normalize_words(t.text), 4)  # the failure, unchecked
    seen.clear()
    t = transcriber.transcribe(audio, prompt="I have news.")
    assert seen == ["I have news.", None] and word_error_rate(said, t.text) <= 0.25  # said once
    seen.clear()
    double_plain[0] = True
    t = transcriber.transcribe(audio, prompt="I have news.")
    # unprompted, beam and then greedy (the fallback for a beam decode that repeats) both repeat
    assert seen == ["I have news.", None, None] and repeated_run(normalize_words(t.text), 4)
    assert word_error_rate(f"{said} {said}", t.text) <= 0.25  # the prompted transcript stayed


def test_asr_beam_decode_that_repeats_itself_gives_way_to_a_greedy_one(transcriber, monkeypatch):
    """Beam search can loop without a prompt too (a validation render: "... your first year? Well,
    do you think you're going to live on campus ..."), where a greedy decode does not: a beam
    transcript that repeats is decoded again greedily, kept unless it repeats too; a greedy
    decode (provisional views) is not redone."""
    import dataclasses

    from runtime.asr import Transcriber, Transcript

    once = "Do you think you are going to live on campus your first year?"
    twice = f"{once} Do you think you are going to live on campus"
    calls, script = [], {}

    def fake(self, audio, level, prompt, beam, t0):
        calls.append((prompt, beam))
        return Transcript(text=script[beam], avg_logprob=-0.1, no_speech_prob=0.05, compression_ratio=1.5,
                          rms_dbfs=level, latency_ms=1.0)

    monkeypatch.setattr(Transcriber, "_guarded", fake)
    audio = np.random.default_rng(0).normal(0, 0.1, 3 * SR).astype(np.float32)
    script.update({5: twice, 1: once})
    assert transcriber.transcribe(audio, beam_size=5).text == once and calls == [(None, 5), (None, 1)]
    calls.clear()
    script[1] = twice  # the speech itself repeats: the beam transcript stays
    assert transcriber.transcribe(audio, beam_size=5).text == twice and calls == [(None, 5), (None, 1)]
    calls.clear()
    assert transcriber.transcribe(audio, beam_size=1).text == twice and calls == [(None, 1)]
    calls.clear()
    off = Transcriber(dataclasses.replace(transcriber.cfg, repeat_min_words=0))
    script.update({5: twice, 1: once})
    assert off.transcribe(audio, beam_size=5).text == twice and calls == [(None, 5)]


def test_asr_decoding_settings_are_checked():
    from runtime.config import apply_overrides, load_runtime_config

    cfg = apply_overrides(load_runtime_config(None), ["asr.prompt_utterances=0", "asr.provisional_beam_size=2"])
    assert cfg.asr.prompt_utterances == 0 and cfg.asr.provisional_beam_size == 2
    with pytest.raises(InputError, match="prompt_utterances must be between 0 and 8"):
        apply_overrides(load_runtime_config(None), ["asr.prompt_utterances=9"])
    with pytest.raises(InputError, match="provisional_beam_size must be >= 1"):
        apply_overrides(load_runtime_config(None), ["asr.provisional_beam_size=0"])
    with pytest.raises(InputError, match="repeat_min_words must be 0"):
        apply_overrides(load_runtime_config(None), ["asr.repeat_min_words=1"])


def test_previous_text_prompt_takes_the_last_n_transcripts():
    from runtime.asr import previous_text_prompt

    said = ["I got the job.", "That is great.", "Thank you."]
    assert previous_text_prompt(said, 2) == "That is great. Thank you."
    assert previous_text_prompt(said, 8) == " ".join(said)
    assert previous_text_prompt(said, 0) is None  # not said[-0:], which is everything
    assert previous_text_prompt([], 4) is None
