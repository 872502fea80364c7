"""Speaker-change detection inside one stretch of speech (runtime.speaker_change) and speaker
clusters that merge when they turn out to be one voice (runtime.speakers)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from runtime.config import SegmentationConfig, SpeakerConfig
from runtime.speakers import SpeakerClusterer

SR = 16000


# -- clustering with merges (synthetic embeddings) --------------------------------------------------


def test_two_clusters_of_one_voice_are_merged_and_reported():
    """A voice whose first two utterances happen to look unlike each other founds two speakers;
    as its later utterances pull the first cluster's centroid to the voice itself, the two
    centroids meet: the younger id is merged into the older, and the merge is reported."""
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 4)))
    v, n1, n2, w = q.T  # orthonormal: the voice, two directions of variation, another speaker
    unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
    c = SpeakerClusterer(threshold=0.75, merge_threshold=0.8)
    assert c.assign(unit(v + 0.7 * n1)).speaker == 0
    assert c.assign(w).speaker == 1
    assert c.assign(unit(v + 0.7 * n2)).speaker == 2  # cosine 0.67 to speaker 0: a new speaker (wrongly)
    merges = []
    for _ in range(6):
        asg = c.assign(v)
        merges += asg.merges
        assert asg.speaker in (0, 2)
    assert merges == [(2, 0)] and asg.speaker == 0
    assert c.ids == [0, 1]
    assert c.assign(unit(v + 0.7 * n2)).speaker == 0  # the merged id is never given again
    assert c.assign(w).speaker == 1
    assert c.next_id == 3


def test_a_speaker_founded_by_a_short_clip_merges_at_the_join_bar():
    """A conversation's first utterance is short ("Next."): it founds speaker 0 though it may not
    (nobody to join yet), and its noisy embedding ends up 0.77 from its own voice: under the merge
    bar (0.8). The voice's first long utterance looks less like it (0.69) and founds speaker 2;
    as the voice's next utterances pull speaker 2's centroid towards it, the two centroids pass
    the join bar (0.75). Speaker 0 is tentative, so it merges there; had its first clip been
    long enough to found a speaker, the two would stay apart."""
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((64, 4)))
    v, n, m, w = q.T
    unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
    short = 0.77 * v + np.sqrt(1 - 0.77**2) * n  # cosine 0.77 to the voice v
    for may_found in (False, True):
        c = SpeakerClusterer(threshold=0.75, merge_threshold=0.8)
        assert c.assign(short, may_found=may_found).speaker == 0
        assert c.assign(w).speaker == 1
        assert c.assign(unit(v + 0.5 * m)).speaker == 2  # cosine 0.69 to speaker 0: a new speaker
        merges, ids = [], []
        for _ in range(6):
            asg = c.assign(v)
            merges += asg.merges
            ids.append(asg.speaker)
        if may_found:  # an established pair at 0.77 stays apart
            assert merges == [] and ids == [2] * 6 and c.ids == [0, 1, 2]
        else:  # merged once, into the older id, which the voice keeps
            assert merges == [(2, 0)] and ids[-1] == 0 and c.ids == [0, 1]
            assert c.assign(w).speaker == 1 and c.next_id == 3


def test_fixed_number_of_speakers_is_kept():
    rng = np.random.default_rng(1)
    c = SpeakerClusterer(n_speakers=2, threshold=0.75)
    ids = {c.assign(rng.standard_normal(32)).speaker for _ in range(10)}
    assert ids == {0, 1}


# -- detection on two espeak-ng voices ------------------------------------------------------------------


@pytest.fixture(scope="module")
def voices():
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to generate test speech")
    pytest.importorskip("onnxruntime")
    from runtime.tools.make_speech import VOICES, synthesize
    from tests import live_fixtures as fx

    texts = ["I finally got the job offer this morning and I cannot believe it.",
             "That is wonderful news, I am so happy for you.",
             "Why did you not tell me about it before the interview?"]
    with tempfile.TemporaryDirectory() as tmp:
        clips = {v: [synthesize(t, VOICES[v], Path(tmp)) for t in texts] for v in ("A", "B")}
    return clips, fx.voice_encoder()


def detector(encoder, voices=None):
    from runtime.speaker_change import SpeakerChangeDetector

    return SpeakerChangeDetector(encoder, SegmentationConfig(), voices=voices)


@pytest.fixture(scope="module")
def known(voices):
    """A tracker that has heard each voice once (other sentences than the ones tested)."""
    from runtime.speakers import SpeakerTracker

    clips, enc = voices
    tracker = SpeakerTracker(SpeakerConfig(), encoder=enc)
    tracker.assign(clips["A"][1])
    tracker.assign(clips["B"][0])
    assert tracker.known == 2
    return tracker


def test_change_found_where_the_second_voice_starts(voices, known):
    """A answers B within 200 ms (no VAD pause): the change is found within 0.3 s of the truth."""
    clips, enc = voices
    for a, b in ((clips["A"][0], clips["B"][1]), (clips["B"][2], clips["A"][2])):
        voiced = np.concatenate([a, np.zeros(int(0.2 * SR), np.float32), b])
        ch = detector(enc, known).find(voiced, 0)
        assert ch is not None and abs(ch.at - (len(a) + 0.1 * SR)) < 0.3 * SR, ch
        # before any speaker is known the junction is still the lowest-scoring candidate
        cuts = list(range(int(0.3 * SR), len(voiced) - int(0.3 * SR), 3200))
        scores = detector(enc).scores(voiced, cuts)
        low = min((s, c) for s, c in zip(scores, cuts) if s is not None)
        assert low[0] < SegmentationConfig().change_threshold and abs(low[1] - len(a)) < 0.4 * SR


def test_change_found_when_the_second_voice_talks_over_the_end(voices, known):
    clips, enc = voices
    a, b = clips["A"][0], clips["B"][1]
    over = int(0.3 * SR)
    voiced = np.concatenate([a, np.zeros(len(b) - over, np.float32)])
    voiced[len(a) - over :] += b
    ch = detector(enc, known).find(voiced, 0)
    assert ch is not None and len(a) - over - 0.3 * SR < ch.at < len(a) + 0.3 * SR, ch


def test_opening_turns_are_confirmed_before_any_speaker_is_known(voices):
    """At the start of a conversation no speaker is known: a candidate that is not below the strict
    bar is still a change when the tracker would found two speakers (the second side below the
    join bar against the first), and not inside one voice. The strict bar is switched off here so
    that only this confirmation can find the change."""
    from runtime.speaker_change import SpeakerChangeDetector
    from runtime.speakers import SpeakerTracker

    clips, enc = voices
    fresh = SpeakerTracker(SpeakerConfig(), encoder=enc)
    a, b = clips["A"][0], clips["B"][1]
    assert fresh.would_split(a, b) and not fresh.would_split(clips["A"][0], clips["A"][2])
    assert not SpeakerTracker(SpeakerConfig(n_speakers=1), encoder=enc).would_split(a, b)
    assert not fresh.would_split(a, b[: int(0.5 * SR)])  # too short to found a speaker
    assert not fresh.would_split(a[-int(0.6 * SR):], b)  # a first word alone is too unsure a voice
    cfg = SegmentationConfig(change_strict_threshold=-1.0)
    voiced = np.concatenate([a, np.zeros(int(0.2 * SR), np.float32), b])
    ch = SpeakerChangeDetector(enc, cfg, voices=fresh).find(voiced, 0)
    assert ch is not None and abs(ch.at - (len(a) + 0.1 * SR)) < 0.3 * SR, ch
    assert fresh.known == 0  # nothing assigned
    same = np.concatenate([clips["A"][0], np.zeros(int(0.2 * SR), np.float32), clips["A"][2]])
    assert SpeakerChangeDetector(enc, cfg, voices=fresh).find(same, 0) is None


def test_no_change_inside_one_voice(voices, known):
    clips, enc = voices
    for v in ("A", "B"):
        voiced = np.concatenate([clips[v][0], np.zeros(int(0.2 * SR), np.float32), clips[v][2]])
        assert detector(enc).find(voiced, 0) is None
        assert detector(enc, known).find(voiced, 0) is None


def test_quick_answers_are_split_where_the_voice_changes(tmp_path, voices):
    """After one turn of each voice 1 s apart (both speakers known), four two-sentence turns each
    answered within 0.2 s (below the VAD's 300 ms pause, so they run into each other): the
    segmentation alone (runtime.tools.segmentation_sweep) gives one final utterance per turn,
    matched one-to-one, the two speakers alternating. Looking while the speech goes on
    (``change_while_speaking``) closes each quick turn while the next one is still being spoken;
    without it, a turn followed by a long stretch of the other voice waits for that stretch's end."""
    import json

    from runtime.config import RuntimeConfig
    from runtime.evaluate_live import GoldUtterance, match
    from runtime.tools.make_speech import make_conversation
    from runtime.tools.segmentation_sweep import segment_dialogue

    _, enc = voices
    turns = [("A", "Good morning, how are you today?"), ("B", "I am fine, thank you for asking."),
             ("A", "I finally got the job offer this morning. I still cannot believe it."),
             ("B", "That is wonderful news. I am so happy for you."),
             ("A", "Thank you. I was really nervous about the interview."),
             ("B", "Why did you not tell me about it before? I would have helped.")]
    make_conversation(tmp_path, turns, gaps=[1.0, 1.0, 0.2, 0.2, 0.2])
    script = json.loads((tmp_path / "script.json").read_text())
    gold = [GoldUtterance(i, i % 2, u["text"], 0, u["start"], u["end"]) for i, u in enumerate(script["utterances"])]
    decided = {}
    for while_speaking in (True, False):
        cfg = RuntimeConfig()
        cfg.segmentation.change_while_speaking = while_speaking
        finals, changes = segment_dialogue(tmp_path / "speech.wav", cfg, enc)
        assert changes >= 3 and all(m is not None for m in match(finals, gold)), finals
        assert [e["reason"] for e in finals[2:5]] == ["speaker_change"] * 3
        speakers = [e["speaker"] for e in finals]
        assert speakers == [speakers[0], speakers[1]] * 3 and speakers[0] != speakers[1]
        decided[while_speaking] = [e["decided"] for e in finals[2:5]]
    assert all(d < g.end for d, g in zip(decided[True], gold[3:6])), decided  # during the next turn
    assert all(a <= b for a, b in zip(decided[True], decided[False])), decided
    assert max(b - a for a, b in zip(decided[True], decided[False])) > 1.0, decided
