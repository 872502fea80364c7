"""Utterance assembly (runtime.segmentation) on scripted audio: a stand-in VAD that calls a window
speech when it is loud, so that every boundary is where the test puts it."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.config import RuntimeConfig, SegmentationConfig, VadConfig, runtime_config_from_dict
from runtime.segmentation import UtteranceAssembler
from runtime.speaker_change import Change
from runtime.vad import WINDOW, UtteranceSegmenter
from train.common import InputError

SR = 16000


class LoudnessVAD:
    """P(speech) = 0.9 for a window with RMS above 0.01, else 0.0 (the SileroVAD interface)."""

    def reset(self) -> None:
        pass

    def probs(self, windows: np.ndarray) -> np.ndarray:
        w = np.asarray(windows, np.float32).reshape(-1, WINDOW)
        return np.where(np.sqrt((w * w).mean(axis=1)) > 0.01, 0.9, 0.0).astype(np.float32)


def script(*parts: tuple[str, float], seed: int = 0) -> np.ndarray:
    """("speech" | "silence", seconds) pieces joined; speech is noise at RMS ~0.1."""
    rng = np.random.default_rng(seed)
    out = [rng.normal(0, 0.1, int(s * SR)).astype(np.float32) if kind == "speech" else np.zeros(int(s * SR), np.float32)
           for kind, s in parts]
    return np.concatenate(out)


def assemble(audio, cfg=None, vad_cfg=None, detector=None, chunk=512):
    vad_cfg = vad_cfg or VadConfig()
    asm = UtteranceAssembler(vad_cfg, cfg or SegmentationConfig(), UtteranceSegmenter(vad_cfg, vad=LoudnessVAD()), detector)
    return list(asm.run(audio[i : i + chunk] for i in range(0, len(audio), chunk))), asm


def finals(spans):
    return [s for s in spans if s.final]


def shown(spans):
    """The provisional views that get a label (not the ones handed on early for decoding)."""
    return [s for s in spans if not s.final and not s.speculative]


def test_pauses_inside_an_utterance_do_not_split_it():
    """Two sentences 0.4 s apart (a VAD pause, shorter than the 600 ms boundary) are one utterance:
    a provisional view at each pause, then one final with the whole audio, pause included."""
    audio = script(("silence", 0.5), ("speech", 1.0), ("silence", 0.4), ("speech", 1.2), ("silence", 1.5))
    spans, _ = assemble(audio)
    fin = finals(spans)
    assert len(fin) == 1 and fin[0].reason == "boundary_pause"
    prov = shown(spans)
    assert len(prov) == 2 and {s.uid for s in prov} == {fin[0].uid}
    assert spans[-1] is fin[0]  # provisionals first
    assert abs(fin[0].start_s - 0.5) < 0.05 and abs(fin[0].end_s - 3.1) < 0.05
    # the final audio is the stream itself from just before the first word to just after the last
    a0 = fin[0].audio_start
    np.testing.assert_array_equal(fin[0].audio, audio[a0 : a0 + len(fin[0].audio)])
    assert len(fin[0].audio) >= (3.1 - 0.5) * SR
    assert fin[0].stretches and len(fin[0].stretches) == 2
    # the first provisional view holds the first sentence only
    assert abs(prov[0].end_s - 1.5) < 0.05 and len(prov[0].audio) < len(fin[0].audio)
    # decided one boundary pause after the last word
    assert abs((fin[0].decided_at - fin[0].end) / SR - 0.6) < 0.05


@pytest.mark.parametrize("provisional_pause_ms", [300, 200])
def test_a_pause_is_handed_on_early_for_decoding_with_the_audio_it_is_shown_with(provisional_pause_ms):
    """After early_decode_ms (64) of silence the view of the utterance so far goes out speculative;
    after provisional_pause_ms the view to show, with the same uid and audio (so the decode done
    early is the one shown); one shown view per pause, even when the VAD's stretch ends later."""
    audio = script(("silence", 0.5), ("speech", 1.0), ("silence", 0.4), ("speech", 1.2), ("silence", 1.5))
    cfg = SegmentationConfig(provisional_pause_ms=provisional_pause_ms)
    spans, _ = assemble(audio, cfg)
    fin = finals(spans)
    assert len(fin) == 1
    early = [s for s in spans if s.speculative]
    prov = shown(spans)
    assert len(early) == 2 and len(prov) == 2 and all(not s.final for s in early)
    for e, p in zip(early, prov):
        position = {id(s): i for i, s in enumerate(spans)}
        assert e.uid == p.uid == fin[0].uid and position[id(e)] < position[id(p)]
        assert e.audio_start == p.audio_start and e.end == p.end
        np.testing.assert_array_equal(e.audio, p.audio)
        assert 0.064 <= (e.decided_at - e.end) / SR < 0.064 + 0.033
        assert provisional_pause_ms / 1000 <= (p.decided_at - p.end) / SR < provisional_pause_ms / 1000 + 0.033
        # the audio ends 64 ms after the speech (all there is when the early view goes out)
        assert (p.audio_start + len(p.audio) - p.end) / SR == pytest.approx(0.064, abs=0.002)
    assert abs(prov[0].end_s - 1.5) < 0.05 and abs(prov[1].end_s - 3.1) < 0.05


def test_a_short_pause_is_decoded_early_but_not_shown():
    """A 0.15 s pause: longer than early_decode_ms, shorter than provisional_pause_ms."""
    audio = script(("silence", 0.5), ("speech", 1.0), ("silence", 0.15), ("speech", 1.0), ("silence", 1.5))
    spans, _ = assemble(audio)
    assert len(finals(spans)) == 1
    early, prov = [s for s in spans if s.speculative], shown(spans)
    assert [s.end_s for s in early] == [pytest.approx(1.5, abs=0.04), pytest.approx(2.65, abs=0.04)]
    assert [s.end_s for s in prov] == [pytest.approx(2.65, abs=0.04)]


def test_no_early_decoding_when_it_starts_with_the_pause_shown():
    audio = script(("silence", 0.5), ("speech", 1.0), ("silence", 0.4), ("speech", 1.2), ("silence", 1.5))
    spans, _ = assemble(audio, SegmentationConfig(early_decode_ms=300))
    assert not [s for s in spans if s.speculative] and len(shown(spans)) == 2
    p = shown(spans)[0]  # the whole speech pad after the speech, as before early decoding
    assert (p.audio_start + len(p.audio) - p.end) / SR == pytest.approx(0.15, abs=0.002)


def test_boundary_pause_ends_an_utterance():
    audio = script(("speech", 1.0), ("silence", 0.8), ("speech", 1.0), ("silence", 1.0))
    fin = finals(assemble(audio)[0])
    assert [s.uid for s in fin] == [0, 1] and all(s.reason == "boundary_pause" for s in fin)
    # a longer boundary pause joins them
    fin = finals(assemble(audio, SegmentationConfig(boundary_pause_ms=900))[0])
    assert len(fin) == 1


def test_pause_mode_is_the_old_segmentation():
    audio = script(("speech", 1.0), ("silence", 0.4), ("speech", 1.0), ("silence", 1.0))
    spans, _ = assemble(audio, SegmentationConfig(mode="pause"))
    assert len(spans) == 2 and all(s.final and s.reason == "pause" for s in spans)


def test_all_silence_and_short_clicks_give_nothing():
    assert assemble(np.zeros(SR * 5, np.float32))[0] == []
    clicks = script(("silence", 1.0), ("speech", 0.1), ("silence", 1.0), ("speech", 0.1), ("silence", 1.0))
    assert assemble(clicks)[0] == []  # shorter than vad.min_speech_ms


def test_sixty_seconds_without_a_boundary_pause_is_cut_at_max_length():
    """One speaker for 60 s with 0.4 s pauses only: utterances of at most max_utterance_s, cut at
    pauses, covering all the speech; the cut ones say why."""
    parts = [("silence", 0.3)]
    for _ in range(20):
        parts += [("speech", 2.6), ("silence", 0.4)]
    audio = script(*parts, ("silence", 1.0))
    fin = finals(assemble(audio)[0])
    assert len(fin) >= 4
    assert all(s.duration_s <= 15.0 + 1e-6 for s in fin)
    assert [s.reason for s in fin[:-1]] == ["max_length"] * (len(fin) - 1) and fin[-1].reason == "boundary_pause"
    for a, b in zip(fin, fin[1:]):  # cut at pauses: the next one starts where speech resumes
        assert b.start - a.end >= 0.35 * SR
    speech = sum(b - a for s in fin for a, b in s.stretches)
    assert abs(speech / SR - 20 * 2.6) < 20 * 2 * WINDOW / SR  # each stretch within two VAD windows


def test_one_stretch_longer_than_max_length():
    audio = script(("speech", 40.0), ("silence", 1.0))
    fin = finals(assemble(audio)[0])
    assert len(fin) == 3 and all(s.duration_s <= 15.0 + WINDOW / SR for s in fin)  # the VAD cuts within a window
    assert abs(sum(s.duration_s for s in fin) - 40.0) < 0.2


class ScriptedDetector:
    """Says the voice changes at the start of the n-th stretch (voiced samples) of an utterance."""

    def __init__(self, at_stretch: int):
        self.at_stretch, self.hop, self.context, self.lengths = at_stretch, 3200, 16000, []

    def reset(self):
        pass

    def prepare(self, voiced):
        pass

    def find(self, voiced, since=0, until=None):
        if until is not None:  # while a stretch goes on: nothing to say
            return None
        self.lengths.append(len(voiced))
        return Change(since, 0.3) if since > 0 and self.at_stretch == 1 else None


class VoiceAtDetector:
    """Says the voice changes ``at`` voiced samples into the utterance, once it sees that far with
    a full context after it (``until``), or at the stretch's end (``until`` None)."""

    def __init__(self, at: int):
        self.at, self.hop, self.context, self.calls, self.fired = at, 3200, 16000, [], False

    def reset(self):
        pass

    def prepare(self, voiced):
        pass

    def find(self, voiced, since=0, until=None):
        self.calls.append((len(voiced), since, until))
        hi = len(voiced) - 4800 if until is None else until
        if self.fired or not since - 2 * 8000 <= self.at <= hi:
            return None
        self.fired = True  # one change in this script
        return Change(self.at, 0.3)


@pytest.mark.parametrize("while_speaking", [True, False])
def test_speaker_change_inside_a_stretch_that_goes_on(while_speaking):
    """Two turns with no pause between them (one 6 s VAD stretch), the voice changing 2 s in: the
    first utterance closes at the change while the second voice still speaks (at the stretch's
    end without ``change_while_speaking``); the second one holds only what follows the cut."""
    audio = script(("silence", 0.5), ("speech", 6.0), ("silence", 1.0))
    det = VoiceAtDetector(2 * SR)
    spans, asm = assemble(audio, SegmentationConfig(change_while_speaking=while_speaking), detector=det)
    fin = finals(spans)
    assert [s.reason for s in fin] == ["speaker_change", "boundary_pause"] and asm.changes == 1
    assert abs(fin[0].start_s - 0.5) < 0.05 and abs(fin[0].end_s - 2.5) < 0.25
    assert fin[1].start == fin[0].end and abs(fin[1].end_s - 6.5) < 0.05
    speech = sum(b - a for s in fin for a, b in s.stretches)
    assert abs(speech / SR - 6.0) < 2 * WINDOW / SR  # every sample once
    assert fin[0].audio_start + len(fin[0].audio) <= fin[1].audio_start  # no audio in both
    if while_speaking:  # decided once 1 s (the context) after the cut was heard, long before 6.5 s
        assert fin[0].decided_at / SR < 2.5 + 1.0 + 0.5
    else:
        assert fin[0].decided_at / SR > 6.5


def test_speaker_change_closes_the_utterance_before_the_boundary():
    audio = script(("speech", 1.0), ("silence", 0.4), ("speech", 1.0), ("silence", 1.0))
    spans, asm = assemble(audio, detector=ScriptedDetector(1))
    fin = finals(spans)
    assert [s.reason for s in fin] == ["speaker_change", "boundary_pause"]
    assert abs(fin[0].end_s - 1.0) < 0.05 and abs(fin[1].start_s - 1.4) < 0.05
    assert abs(fin[0].decided_at - (fin[1].end + 0.3 * SR)) < 0.05 * SR  # at the pause after the new voice
    assert asm.changes == 1


def test_segmentation_config_is_checked(tmp_path):
    with pytest.raises(InputError, match="boundary_pause_ms"):
        runtime_config_from_dict({"segmentation": {"boundary_pause_ms": 200}})
    with pytest.raises(InputError, match="mode"):
        runtime_config_from_dict({"segmentation": {"mode": "sentences"}})
    with pytest.raises(InputError, match="provisional_pause_ms"):  # the VAD's stretch ends at 300 ms
        runtime_config_from_dict({"segmentation": {"provisional_pause_ms": 400}})
    with pytest.raises(InputError, match="early_decode_ms"):
        runtime_config_from_dict({"segmentation": {"early_decode_ms": 0}})
    with pytest.raises(InputError, match="change_strict_threshold"):
        runtime_config_from_dict({"segmentation": {"change_strict_threshold": 0.9, "change_threshold": 0.7}})
    assert RuntimeConfig().segmentation.mode == "utterance"  # the old behaviour is not the default


def test_config_file_matches_the_defaults():
    from pathlib import Path

    from runtime.config import load_runtime_config

    cfg = load_runtime_config(Path(__file__).resolve().parents[1] / "configs" / "runtime.yaml")
    assert cfg == RuntimeConfig()
