"""runtime.evaluate_live: the scoring rules on hand-made events, and the command end to end on a
tiny corpus rendered with espeak-ng."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from train.common import InputError

from runtime.evaluate_live import (GoldUtterance, final_utterances, match, other_speaker_both_sides,
                                   provisional_agreement, purity_counts, speakable, spoken_speakers, word_edits)


def gold(*spans):
    return [GoldUtterance(i, spk, "w", 0, a, b) for i, (spk, a, b) in enumerate(spans)]


def ev(index, a, b, speaker=0, final=True):
    return {"type": "utterance", "final": final, "index": index, "start": a, "end": b, "speaker": speaker}


G = gold((0, 0.0, 2.0), (1, 3.0, 4.0), (0, 5.0, 8.0), (1, 9.0, 9.5))


def test_one_to_one_matching():
    # exact (a little VAD slack), a split, a merge over two, a stray event in a gap
    finals = [ev(0, -0.05, 2.05), ev(1, 3.0, 3.5), ev(2, 3.5, 4.0), ev(3, 5.0, 9.5), ev(4, 8.3, 8.7)]
    assert match(finals, G) == [0, None, None, None]
    assert match([ev(0, 0, 2), ev(1, 3, 4), ev(2, 5, 8), ev(3, 9, 9.5)], G) == [0, 1, 2, 3]
    # an event that holds most of a short utterance but is mostly elsewhere still claims it
    assert match([ev(0, 0, 2), ev(1, 3, 4), ev(2, 5, 8), ev(3, 8.9, 9.4)], G) == [0, 1, 2, 3]
    assert match([], G) == [None] * 4


def test_speaker_updates_and_purity():
    events = [ev(0, 0, 2, 0), ev(1, 3, 4, 1), ev(2, 5, 8, 2), ev(3, 9, 9.5, 1), ev(2, 5, 6, 2, final=False),
              {"type": "speaker_update", "merged": [2], "into": 0, "indices": [2]}]
    finals = final_utterances(events)
    assert [e["speaker"] for e in finals] == [0, 1, 0, 1] and len(finals) == 4
    assert purity_counts(finals, G) == (4, 4)
    mixed = [ev(0, 0, 2, 0), ev(1, 3, 4, 0), ev(2, 5, 8, 0), ev(3, 9, 9.5, 1)]
    assert purity_counts(mixed, G) == (3, 4)


def test_provisional_agreement_with_the_final_label():
    def label(e, emotion):
        return {**e, "emotion": emotion}

    prov = [label(ev(0, 0, 1, final=False), "sad"), label(ev(0, 0, 1.5, final=False), "happy"),
            label(ev(1, 3, 3.5, final=False), "sad"), label(ev(2, 5, 6, final=False), "sad")]  # 2: no final (no words)
    finals = [label(ev(0, 0, 2), "happy"), label(ev(1, 3, 4), "sad")]
    assert provisional_agreement(prov, finals) == ((2, 3), (2, 2))
    assert provisional_agreement([], finals) == ((0, 0), (0, 0))


def test_neighbours_and_text():
    assert other_speaker_both_sides(G) == [False, True, True, False]
    assert speakable("[LAUGHTER] Oh man;  that's [GARBAGE] awesome.") == "Oh man, that's awesome."
    assert word_edits("Nobody comes seven hundred miles.", "nobody comes 700 miles") == (2, 5)
    assert word_edits("Nobody comes seven hundred miles.", "nobody comes 700 miles", whisper_norm=True) == (0, 4)


def test_speakers_that_need_a_voice(tmp_path):
    """Only speakers who say words need a voice; a scene with more of them than voices is refused by name."""
    from runtime.evaluate_live import render_dialogue
    from runtime.tools.make_speech import VOICES
    from train.data.corpus import Dialogue

    d = Dialogue("scene", "valid", ["Ross", "Rachel", "Joey", "Ross"], np.zeros(4, np.int64),
                 texts=["Hi.", "Hey!", "[LAUGHTER]", "How you doin'?"])
    assert spoken_speakers(d) == 2  # Joey only laughs
    n = len(VOICES) + 1
    crowd = Dialogue("crowd", "valid", [f"s{i}" for i in range(n)], np.zeros(n, np.int64), texts=["Hello there."] * n)
    assert spoken_speakers(crowd) == n
    with pytest.raises(InputError, match=f"{n} speakers but only {len(VOICES)} voices"):
        render_dialogue(crowd, tmp_path, 1.0, 0)
    assert len({(v.name, v.pitch, v.speed) for v in VOICES.values()}) == len(VOICES)  # every voice differs


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox")
def test_render_speaks_with_the_voices_given(tmp_path):
    """--voices: speaker k speaks with voices[k]; another choice is another render, not the cached one."""
    from runtime.evaluate_live import render_dialogue
    from runtime.tools.make_speech import VOICES
    from train.data.corpus import Dialogue

    d = Dialogue("two", "valid", ["M", "F"], np.zeros(2, np.int64), texts=["Hello there.", "Hi."])
    wav_default, _ = render_dialogue(d, tmp_path, 1.0, 0)
    wav_cd, gold = render_dialogue(d, tmp_path, 1.0, 0, voices=["C", "D"])
    assert wav_cd.parent != wav_default.parent and len(gold) == 2
    spoken = [u["voice"] for u in json.loads((wav_cd.parent / "script.json").read_text())["utterances"]]
    assert spoken == [VOICES["C"].name, VOICES["D"].name]
    with pytest.raises(InputError, match="2 speakers but only 1 voices"):
        render_dialogue(d, tmp_path, 1.0, 0, voices=["C"])
    for bad, match in ((["C", "Q"], "unknown voice 'Q'"), (["C", "C"], "named twice")):
        with pytest.raises(InputError, match=match):
            render_dialogue(d, tmp_path, 1.0, 0, voices=bad)


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox")
def test_command_on_a_rendered_dialogue(tmp_path, capsys):
    """The CLI renders the corpus's validation dialogue, runs the live pipeline on it and prints
    figures that say the pipeline worked (two voices found, most utterances matched)."""
    pytest.importorskip("faster_whisper")
    from runtime.evaluate_live import main
    from tests import live_fixtures as fx

    model = fx.text_model()
    data = fx.write_text_corpus(tmp_path / "corpus.pkl")
    capsys.readouterr()  # what training the fixture model printed
    rc = main(["--model", str(model), "--data", str(data), "--gap", "1.0", "--dialogues", "1", "--json",
               "--work", str(tmp_path / "renders"), "--out", str(tmp_path / "out.json")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dialogues"] == 1 and out["utterances"] >= 4
    assert out["matched_share"] >= 75.0 and out["wer"] <= 30.0
    assert out["per_dialogue"][0]["speakers"] == out["per_dialogue"][0]["speakers_true"]
    # one at each utterance's pause (all but a last cut off), unless overtaken by its final on a loaded machine
    assert out["provisionals"] + out["provisional_skipped"] >= out["finals"] - 1
    assert out["latency_ms"]["final"]["n"] == out["finals"]
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["matched"] == out["matched"] and saved["finals"] == out["finals"] == len(next(iter(saved["final_events"].values())))
    # the render is reused
    assert len(list((tmp_path / "renders").iterdir())) == 1
    rc = main(["--model", str(model), "--data", str(data), "--gap", "1.0", "--dialogues", "1", "--json",
               "--work", str(tmp_path / "renders")])
    assert rc == 0 and len(list((tmp_path / "renders").iterdir())) == 1


def test_command_refuses_bad_input(tmp_path):
    from runtime.evaluate_live import main
    from train.common import InputError

    with pytest.raises(InputError, match="corpus file not found"):
        main(["--data", str(tmp_path / "missing.pkl")])
    with pytest.raises(InputError, match="--gap"):
        main(["--gap", "-1"])
    with pytest.raises(InputError, match="boundary_pause_ms"):  # --set goes through the typed checks
        main(["--set", "segmentation.boundary_pause_ms=100", "--data", str(tmp_path / "missing.pkl")])


def test_settings_override():
    from runtime.config import apply_overrides, load_runtime_config

    cfg = apply_overrides(load_runtime_config(None), ["segmentation.change_while_speaking=false",
                                                      "segmentation.boundary_pause_ms=700"])
    assert cfg.segmentation.boundary_pause_ms == 700 and cfg.segmentation.change_while_speaking is False


def test_whisper_normalizer_on_a_known_pair():
    """Raw WER counts spellings as errors; Whisper's normalizer writes numbers, contractions and
    fillers one way, so only the real differences remain ("OK" for "okay", moved)."""
    ref, hyp = "I'm gonna pay seven hundred dollars, okay?", "OK, I am going to pay $700."
    assert word_edits(ref, hyp) == (8, 8)
    assert word_edits(ref, hyp, whisper_norm=True) == (2, 7)
    # the transcripts' disfluency marks are punctuation, not words
    assert word_edits("I don't- I don't want to go...", "I don't, I don't want to go.") == (0, 9)
    assert word_edits("", "words") == (1, 0) and word_edits("two words", "") == (2, 2)


@pytest.mark.parametrize("module", ["runtime.evaluate_live", "runtime.tools.segmentation_sweep", "runtime.tools.asr_sweep"])
def test_render_arguments_are_checked_alike(module, tmp_path):
    """The three commands share their render arguments and the checks of them."""
    import importlib

    from train.common import InputError

    main = importlib.import_module(module).main
    with pytest.raises(InputError, match="--gap must be between 0 and 10"):
        main(["--gap", "-1"])
    with pytest.raises(InputError, match="--gap-range needs"):
        main(["--gap-range", "2", "1"])
    with pytest.raises(InputError, match="corpus file not found"):
        main(["--data", str(tmp_path / "missing.pkl"), "--gap", "1"])


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox")
def test_asr_sweep_on_a_rendered_dialogue(tmp_path, capsys):
    """The ASR sweep transcribes each gold utterance of a rendered validation dialogue per variant."""
    pytest.importorskip("faster_whisper")
    from runtime.tools.asr_sweep import main
    from tests import live_fixtures as fx

    data = fx.write_text_corpus(tmp_path / "corpus.pkl")
    assert main(["--data", str(data), "--gap", "1.0", "--dialogues", "1", "--work", str(tmp_path / "renders"),
                 "--variants", "default", "greedy_prompt", "--worst", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0] in
            ("default", "greedy_prompt")}
    assert set(rows) == {"default", "greedy_prompt"}
    for name, row in rows.items():
        wer_raw, wer_norm, no_words = float(row[1].rstrip("%")), float(row[2].rstrip("%")), int(row[3])
        assert wer_raw <= 30.0 and wer_norm <= wer_raw + 1.0 and no_words == 0, (name, row)
    assert "worst 2 utterances for default" in out
