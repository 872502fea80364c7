"""``python -m runtime.evaluate_live``: the live pipeline scored on spoken validation dialogues.

::

    python -m runtime.evaluate_live                       # gaps drawn from 0.15-1.2 s (seeded)
    python -m runtime.evaluate_live --gap 1.0 --json      # one fixed gap between utterances
    python -m runtime.evaluate_live --gap 0.25 --dialogues 4

Each **validation** dialogue of the corpus (``--data``; never a test split) is rendered with
espeak-ng by :func:`runtime.tools.make_speech.make_conversation`: one voice per speaker, the
silence after each utterance drawn uniformly from ``--gap-range`` (seeded per dialogue) or fixed
(``--gap``). The model's dataset names the corpus (``--model meld`` speaks MELD's validation
scenes; six voices, so the few scenes with more speakers are left out, and the report says so).
Consecutive utterances of one speaker stay consecutive (same-speaker continuations);
pauses inside an utterance are whatever the TTS makes. Non-speech markers of the transcripts
(``[LAUGHTER]``) are removed; an utterance left without words is not rendered. Renders are kept
in ``--work`` and reused when nothing changed.

The rendering is replayed through the live pipeline (:class:`runtime.live.Session`, files as fast
as possible: the code path of ``python -m runtime.live --audio F --fast``), and its events are
scored against the script:

* **Matching** (time overlap). An event and a gold utterance are *related* when their overlap in
  time is at least half of the gold utterance's duration or at least half of the event's. A gold
  utterance is **matched one-to-one** when exactly one final event is related to it and that event
  is related to no other gold utterance. Splits (two events in one utterance), merges (one event
  over two utterances) and stray events all break it.
* **WER** over each dialogue's final transcripts joined in time order against its gold
  transcripts joined (pooled: total edits / total reference words), on lower-cased words without
  punctuation; and again after Whisper's English text normalizer (numbers, contractions and
  spellings written one way: "seven hundred" and "700" are one word sequence), as Whisper's own
  WER figures are computed.
* **Speakers** (after applying ``speaker_update`` events): each final event takes the gold speaker
  of the utterance it overlaps most; purity = events in their cluster's majority gold speaker /
  events; the speaker count is right when the events name exactly the dialogue's speakers' number.
* **Emotion** weighted F1 on the matched utterances (the matched event's label against the gold
  label), next to the offline causal model on the same dialogues' gold transcripts and speakers
  (the same features and graph, utterance by utterance: :class:`runtime.conversation.Conversation`),
  on the same matched utterances and on all of them.
* **Latency** p50 / p95, as each event reports it (``latency_ms``): end of speech -> provisional
  event, end of speech -> final event, and the final event's delay after its utterance closed.

The share of matched utterances is also given for the utterances whose neighbours on both sides
are the other speaker (the harder case with short gaps: nothing but the voice separates them).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train.common import InputError, run_cli, write_text_atomic

log = logging.getLogger("runtime.evaluate_live")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = {"iemocap": REPO.parent / "shared" / "data" / "iemocap" / "iemocap_trainval.pkl",
                "meld": REPO.parent / "shared" / "data" / "meld" / "meld_trainval.pkl"}
GAP_RANGE = (0.15, 1.2)
RENDER_VERSION = "1"  # bump when the rendering below changes
_MARKER = re.compile(r"\[[^\]]*\]")


# -- rendering -----------------------------------------------------------------------------------


def speakable(text: str) -> str:
    """The words of a transcript: non-speech markers (``[LAUGHTER]``) removed, spaces collapsed."""
    return " ".join(_MARKER.sub(" ", text).replace(";", ",").split())


@dataclass
class GoldUtterance:
    """One rendered gold utterance: times in seconds on the rendering's clock."""

    index: int  # position in the corpus dialogue
    speaker: int  # order of first appearance in the dialogue
    text: str
    label: int  # emotion id (-1: unlabelled)
    start: float
    end: float

    def clip(self, audio: np.ndarray, pad: float, tail: float | None = None) -> np.ndarray:
        """This utterance's samples of the rendering's 16 kHz ``audio``: its span, ``pad`` seconds
        before and ``tail`` (default ``pad``) after, as the VAD's padding widens a cut."""
        from runtime.config import SAMPLE_RATE

        tail = pad if tail is None else tail
        return audio[max(0, int((self.start - pad) * SAMPLE_RATE)): int((self.end + tail) * SAMPLE_RATE)]


def checked_voices(voices: Sequence[str] | None) -> list[str]:
    """The voice keys to render speakers 0, 1, ... with (default: every voice, in order), or an
    InputError naming an unknown or repeated one."""
    from runtime.tools.make_speech import VOICES

    if voices is None:
        return list(VOICES)
    unknown = [v for v in voices if v not in VOICES]
    if unknown:
        raise InputError(f"unknown voice {unknown[0]!r}; known: {' '.join(VOICES)}")
    if len(set(voices)) != len(voices):
        raise InputError(f"a voice named twice in {' '.join(voices)}: each speaker needs a voice of its own")
    return list(voices)


def spoken_speakers(dialogue) -> int:
    """How many speakers say something speakable in ``dialogue`` (each needs a voice of its own)."""
    ids = dialogue.speaker_ids()
    return len({int(ids[i]) for i, t in enumerate(dialogue.texts or []) if speakable(t)})


def render_dialogue(dialogue, work: Path, gap: float | None, seed: int,
                    gap_range: tuple[float, float] = GAP_RANGE,
                    voices: Sequence[str] | None = None) -> tuple[Path, list[GoldUtterance]]:
    """Render one corpus dialogue into ``work``; returns (wav, gold utterances). Speaker k (the
    corpus's speaker ids) speaks with voice ``voices[k]``, keys of
    :data:`runtime.tools.make_speech.VOICES` (default: all of them in their order, A B C ...).

    Reuses an earlier render of the same texts, speakers, voices and gaps.
    """
    from runtime.tools.make_speech import VOICES, make_conversation

    voices = checked_voices(voices)
    ids = dialogue.speaker_ids()
    keep = [i for i, t in enumerate(dialogue.texts or []) if speakable(t)]
    if not keep:
        raise InputError("no utterance with words to render", dialogue=dialogue.id)
    n_speakers = spoken_speakers(dialogue)
    if n_speakers > len(voices):
        raise InputError(f"{n_speakers} speakers but only {len(voices)} voices", dialogue=dialogue.id)
    script = [(str(int(ids[i])), speakable(dialogue.texts[i])) for i in keep]
    if gap is None:
        rng = np.random.default_rng([seed, int(hashlib.sha256(dialogue.id.encode()).hexdigest()[:8], 16)])
        gaps = [round(float(g), 3) for g in rng.uniform(*gap_range, size=len(script) - 1)]
    else:
        gaps = [float(gap)] * (len(script) - 1)
    voice_of = {str(k): key for k, key in enumerate(voices)}
    spoken = {spk: dataclasses.astuple(VOICES[voice_of[spk]]) for spk in sorted({spk for spk, _ in script})}
    spec = {"version": RENDER_VERSION, "script": script, "gaps": gaps, "voices": spoken}
    digest = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:12]
    out = work / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', dialogue.id)}-{digest}"
    meta_path = out / "script.json"
    if not (meta_path.is_file() and (out / "speech.wav").is_file()):
        make_conversation(out, script, gaps=gaps, voice_of=voice_of)
    meta = json.loads(meta_path.read_text())
    gold = [GoldUtterance(i, int(ids[i]), u["text"], int(dialogue.labels[i]), float(u["start"]), float(u["end"]))
            for i, u in zip(keep, meta["utterances"])]
    return out / "speech.wav", gold


# -- which dialogues and gaps: the arguments shared with runtime.tools.segmentation_sweep / asr_sweep


def add_render_args(p: argparse.ArgumentParser) -> None:
    """The corpus, dialogue selection, gap and render-cache arguments (checked by :func:`checked_gaps`,
    used by :func:`validation_dialogues` and :func:`render_dialogue`)."""
    p.add_argument("--data", default=None, help="corpus file (default: ../shared/data/<dataset>/<dataset>_trainval.pkl)")
    p.add_argument("--dialogues", type=int, default=None, metavar="N", help="the first N validation dialogues (default all)")
    p.add_argument("--ids", nargs="+", default=None, help="these validation dialogue ids only")
    p.add_argument("--gap", type=float, default=None, help="fixed silence between utterances, seconds (default: drawn)")
    p.add_argument("--gap-range", type=float, nargs=2, default=list(GAP_RANGE), metavar=("LO", "HI"),
                   help="range the gaps are drawn from (default 0.15 1.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn gaps (default 0)")
    p.add_argument("--work", default=str(REPO / "cache" / "evaluate_live"), help="where renders are kept")
    add_voices_arg(p)


def add_voices_arg(p: argparse.ArgumentParser) -> None:
    """``--voices K [K ...]``: the espeak-ng voices of speakers 0, 1, ... (:func:`checked_voices`)."""
    from runtime.tools.make_speech import VOICES

    p.add_argument("--voices", nargs="+", default=None, metavar="K",
                   help=f"voices of speakers 0, 1, ... (runtime.tools.make_speech; default {' '.join(VOICES)})")


def checked_gaps(args: argparse.Namespace) -> tuple[float | None, tuple[float, float]]:
    """(fixed gap or None, gap range) from :func:`add_render_args`' arguments, or an InputError."""
    if args.gap is not None and not 0.0 <= args.gap <= 10.0:
        raise InputError(f"--gap must be between 0 and 10 seconds, got {args.gap}")
    lo, hi = args.gap_range
    if not 0.0 <= lo <= hi <= 10.0:
        raise InputError(f"--gap-range needs 0 <= LO <= HI <= 10, got {lo} {hi}")
    return args.gap, (float(lo), float(hi))


def corpus_path(args: argparse.Namespace, dataset: str) -> Path:
    """``--data``, or the dataset's default train+valid pickle."""
    data = Path(args.data) if args.data else DEFAULT_DATA.get(dataset)
    if data is None:
        raise InputError(f"no default data for a {dataset} model; give --data")
    if not data.is_file():
        raise InputError("corpus file not found (give --data)", path=str(data))
    return data


def validation_dialogues(args: argparse.Namespace, dataset: str, labels: Sequence[str] | None = None) -> list:
    """The **validation** dialogues that ``--ids`` / ``--dialogues`` select (never a test split);
    ``labels``: the model's emotion labels, which the corpus must share."""
    from train.data import load_corpus

    data = corpus_path(args, dataset)
    corpus = load_corpus(data)
    if labels is not None and list(corpus.labels) != list(labels):
        raise InputError(f"the data's labels {corpus.labels} differ from the model's {labels}", path=str(data))
    dialogues = corpus.split("valid")  # validation only: never a test split
    if args.ids:
        known = {d.id for d in dialogues}
        missing = [i for i in args.ids if i not in known]
        if missing:
            raise InputError(f"not validation dialogues: {', '.join(missing)}", path=str(data))
        dialogues = [d for d in dialogues if d.id in set(args.ids)]
    if args.dialogues:
        dialogues = dialogues[: args.dialogues]
    if not dialogues:
        raise InputError("no validation dialogues to evaluate", path=str(data))
    if any(d.texts is None for d in dialogues):
        raise InputError("the validation dialogues carry no transcripts to speak", path=str(data))
    return dialogues


# -- scoring (pure functions of events and gold utterances) --------------------------------------


def final_utterances(events: Sequence[dict]) -> list[dict]:
    """Final utterance events in index order, speakers corrected by later ``speaker_update`` events."""
    finals = [dict(e) for e in events if e.get("type") == "utterance" and e["final"]]
    for upd in (e for e in events if e.get("type") == "speaker_update"):
        for e in finals:
            if e["speaker"] in upd["merged"]:
                e["speaker"] = upd["into"]
    return sorted(finals, key=lambda e: e["index"])


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def related(event: dict, gold: GoldUtterance) -> bool:
    """Overlap >= half the gold utterance or >= half the event (see the module docstring)."""
    ov = overlap(event["start"], event["end"], gold.start, gold.end)
    return ov > 0 and (ov >= 0.5 * (gold.end - gold.start) or ov >= 0.5 * (event["end"] - event["start"]))


def match(finals: Sequence[dict], gold: Sequence[GoldUtterance]) -> list[int | None]:
    """For each gold utterance, the position in ``finals`` of its one-to-one event, or None."""
    rel = np.array([[related(e, g) for e in finals] for g in gold], dtype=bool).reshape(len(gold), len(finals))
    out: list[int | None] = []
    for gi in range(len(gold)):
        hits = np.flatnonzero(rel[gi])
        out.append(int(hits[0]) if len(hits) == 1 and rel[:, hits[0]].sum() == 1 else None)
    return out


def other_speaker_both_sides(gold: Sequence[GoldUtterance]) -> list[bool]:
    """Per gold utterance: its previous and next utterances exist and are the other speaker."""
    return [0 < i < len(gold) - 1 and gold[i - 1].speaker != g.speaker and gold[i + 1].speaker != g.speaker
            for i, g in enumerate(gold)]


def speaker_of_events(finals: Sequence[dict], gold: Sequence[GoldUtterance]) -> list[int | None]:
    """The gold speaker each final event overlaps most (None: it overlaps no gold utterance)."""
    out = []
    for e in finals:
        ov = [overlap(e["start"], e["end"], g.start, g.end) for g in gold]
        best = int(np.argmax(ov)) if ov else -1
        out.append(gold[best].speaker if best >= 0 and ov[best] > 0 else None)
    return out


def purity_counts(finals: Sequence[dict], gold: Sequence[GoldUtterance]) -> tuple[int, int]:
    """(events in their cluster's majority gold speaker, events that overlap speech)."""
    truth = speaker_of_events(finals, gold)
    clusters: dict[int, list[int]] = {}
    for e, t in zip(finals, truth):
        if t is not None:
            clusters.setdefault(e["speaker"], []).append(t)
    return sum(max(np.bincount(ts)) for ts in clusters.values()), sum(len(ts) for ts in clusters.values())


def word_edits(reference: str, hypothesis: str, whisper_norm: bool = False) -> tuple[int, int]:
    """(word edits, reference words) on normalised words (:func:`runtime.asr.normalize_words`),
    counted by jiwer.

    ``whisper_norm``: first apply Whisper's English text normalizer (the one Whisper's WER figures
    use: "seven hundred" = "700", "she's" = "she is", British = American spelling)."""
    import jiwer

    from runtime.asr import normalize_words

    if whisper_norm:
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        norm = EnglishTextNormalizer({})
        reference, hypothesis = norm(reference), norm(hypothesis)
    ref, hyp = " ".join(normalize_words(reference)), " ".join(normalize_words(hypothesis))
    if not ref:
        return len(hyp.split()), 0
    if not hyp:
        return len(ref.split()), len(ref.split())
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


# -- one dialogue --------------------------------------------------------------------------------


@dataclass
class DialogueResult:
    id: str
    gold: list[GoldUtterance]
    matched: list[int | None]  # per gold utterance: position in finals
    finals: list[dict]
    provisionals: int
    provisional_skipped: int  # provisional views overtaken by a newer view before the model thread reached them
    edits: int
    ref_words: int
    edits_whisper: int  # WER counts after Whisper's English text normalizer
    ref_words_whisper: int
    purity: tuple[int, int]
    speakers_found: int
    speakers_true: int
    offline_pred: list[int]  # per gold utterance: offline causal label
    latency: dict[str, list[float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # provisional events whose label is their final event's: (agreeing, with a final), all of
    # them and the last one before each final
    provisional_agree: tuple[int, int] = (0, 0)
    last_provisional_agree: tuple[int, int] = (0, 0)

    def row(self) -> dict[str, Any]:
        both = other_speaker_both_sides(self.gold)
        m = [x is not None for x in self.matched]
        return {
            "dialogue": self.id, "utterances": len(self.gold), "matched": int(sum(m)),
            "matched_share": 100.0 * float(np.mean(m)),
            "other_both_sides": int(sum(both)), "other_both_sides_matched": int(sum(a and b for a, b in zip(m, both))),
            "finals": len(self.finals), "provisionals": self.provisionals,
            "provisional_skipped": self.provisional_skipped,
            "wer": 100.0 * self.edits / max(1, self.ref_words),
            "wer_whisper_norm": 100.0 * self.edits_whisper / max(1, self.ref_words_whisper),
            "speakers": self.speakers_found, "speakers_true": self.speakers_true,
            "purity": 100.0 * self.purity[0] / max(1, self.purity[1]),
        }


def offline_predictions(gold: Sequence[GoldUtterance], backend, features) -> list[int]:
    """The causal model on the gold transcripts and speakers, utterance by utterance."""
    from runtime.conversation import Conversation
    from runtime.features import MAX_CONTEXT_TURNS, UtteranceData

    conv = Conversation(backend)
    history: list[UtteranceData] = []
    out = []
    for g in gold:
        data = UtteranceData(text=g.text, speaker=g.speaker)
        rows, _ = features.build(data, history[-MAX_CONTEXT_TURNS:])
        out.append(int(np.argmax(conv.add(rows, g.speaker))))
        history.append(data)
    return out


def run_dialogue(wav: Path, gold: list[GoldUtterance], dialogue_id: str, model: str, backend, cfg, stages,
                 features) -> DialogueResult:
    from runtime.audio import FileAudioSource
    from runtime.live import Session
    from runtime.recognizer import Recognizer
    from runtime.speakers import SpeakerTracker

    asr, encoder = stages
    rec = Recognizer(model, backend, cfg, realtime=False, transcriber=asr, features=features,
                     speakers=SpeakerTracker(cfg.speakers, encoder=encoder))
    audio = FileAudioSource(wav, cfg.audio.chunk_ms, realtime=False)
    session = Session(rec, audio, None, realtime=False)
    events = session.run()
    if session.signals:  # Ctrl-C / SIGTERM stop the session; the evaluation stops with it, without figures
        log.warning("stopped by %s during dialogue %s: no figures", signal.Signals(session.signals[0]).name, dialogue_id)
        raise SystemExit(128 + session.signals[0])
    finals = final_utterances(events)
    provisional = [e for e in events if e.get("type") == "utterance" and not e["final"]]
    ref, hyp = " ".join(g.text for g in gold), " ".join(e["text"] for e in sorted(finals, key=lambda e: e["start"]))
    edits, words = word_edits(ref, hyp)
    edits_w, words_w = word_edits(ref, hyp, whisper_norm=True)
    lat: dict[str, list[float]] = {"provisional": [e["latency_ms"]["total"] for e in provisional],
                                   "final": [e["latency_ms"]["total"] for e in finals]}
    lat["final_after_close"] = [e["latency_ms"]["after_close"] for e in finals if "after_close" in e["latency_ms"]]
    agree, last_agree = provisional_agreement(provisional, finals)
    return DialogueResult(
        id=dialogue_id, gold=gold, matched=match(finals, gold), finals=finals, provisionals=len(provisional),
        provisional_skipped=sum(e.get("provisional_skipped", 0) for e in events
                                if e.get("type") == "status" and e.get("state") == "stopped"),
        edits=edits, ref_words=words, edits_whisper=edits_w, ref_words_whisper=words_w, purity=purity_counts(finals, gold),
        speakers_found=len({e["speaker"] for e in finals}), speakers_true=len({g.speaker for g in gold}),
        offline_pred=offline_predictions(gold, backend, features), latency=lat,
        warnings=[e["message"] for e in events if e.get("type") == "warning"],
        provisional_agree=agree, last_provisional_agree=last_agree,
    )


def provisional_agreement(provisional: Sequence[dict], finals: Sequence[dict]) -> tuple[tuple[int, int], tuple[int, int]]:
    """How often a provisional label is its utterance's final label: ``((agreeing, compared), (the
    same for the last provisional event of each utterance))``; provisional events whose utterance
    got no final event (no words in it) are left out."""
    final_of = {e["index"]: e["emotion"] for e in finals}
    kept = [e for e in provisional if e["index"] in final_of]
    last = list({e["index"]: e for e in kept}.values())  # events are in order: the last one per index wins
    count = lambda events: (sum(e["emotion"] == final_of[e["index"]] for e in events), len(events))  # noqa: E731
    return count(kept), count(last)


# -- the whole evaluation ------------------------------------------------------------------------


def summarize(results: Sequence[DialogueResult], labels: Sequence[str], emotion_index: dict) -> dict[str, Any]:
    """Pooled figures over dialogues (see the module docstring)."""
    from train.metrics import score

    rows = [r.row() for r in results]
    n = sum(r["utterances"] for r in rows)
    matched = sum(r["matched"] for r in rows)
    both = sum(r["other_both_sides"] for r in rows)
    both_m = sum(r["other_both_sides_matched"] for r in rows)
    y_true, y_live, y_off, y_off_all, y_true_all = [], [], [], [], []
    for res in results:
        for g, m, off in zip(res.gold, res.matched, res.offline_pred):
            y_true_all.append(g.label)
            y_off_all.append(off)
            if m is not None:
                y_true.append(g.label)
                y_live.append(emotion_index[res.finals[m]["emotion"]])
                y_off.append(off)
    lat = {k: [x for r in results for x in r.latency.get(k, [])] for k in ("provisional", "final", "final_after_close")}

    def pct(xs):
        return {"p50": float(np.percentile(xs, 50)), "p95": float(np.percentile(xs, 95)), "n": len(xs)} if xs else None

    pure = [sum(r.purity[i] for r in results) for i in (0, 1)]
    return {
        "dialogues": len(rows), "utterances": n,
        "matched_share": 100.0 * matched / max(1, n), "matched": matched,
        "other_both_sides_share": 100.0 * both_m / max(1, both) if both else None, "other_both_sides": both,
        "wer": 100.0 * sum(r.edits for r in results) / max(1, sum(r.ref_words for r in results)),
        "wer_whisper_norm": 100.0 * sum(r.edits_whisper for r in results) / max(1, sum(r.ref_words_whisper for r in results)),
        "purity": 100.0 * pure[0] / max(1, pure[1]),
        "speaker_count_right": sum(r["speakers"] == r["speakers_true"] for r in rows),
        "finals": sum(r["finals"] for r in rows), "provisionals": sum(r["provisionals"] for r in rows),
        "provisional_skipped": sum(r["provisional_skipped"] for r in rows),
        "provisional_agree": [sum(r.provisional_agree[i] for r in results) for i in (0, 1)],
        "last_provisional_agree": [sum(r.last_provisional_agree[i] for r in results) for i in (0, 1)],
        "emotion_wf1_live_matched": score(np.array(y_true), np.array(y_live), labels).weighted_f1 if y_true else None,
        "emotion_wf1_offline_matched": score(np.array(y_true), np.array(y_off), labels).weighted_f1 if y_true else None,
        "emotion_wf1_offline_all": score(np.array(y_true_all), np.array(y_off_all), labels).weighted_f1,
        "latency_ms": {k: pct(v) for k, v in lat.items()},
        "per_dialogue": rows,
    }


def print_report(summary: dict[str, Any], header: str, out=sys.stdout) -> None:
    print(header, file=out)
    print(f"{'dialogue':22s} {'utts':>4s} {'1:1 %':>6s} {'finals':>6s} {'prov':>5s} {'WER %':>6s} "
          f"{'spk':>5s} {'purity':>6s}", file=out)
    for r in summary["per_dialogue"]:
        print(f"{r['dialogue']:22s} {r['utterances']:4d} {r['matched_share']:6.1f} {r['finals']:6d} {r['provisionals']:5d} "
              f"{r['wer']:6.1f} {r['speakers']:>2d}/{r['speakers_true']:<2d} {r['purity']:6.1f}", file=out)
    s = summary
    both = f"{s['other_both_sides_share']:.1f}% of {s['other_both_sides']}" if s["other_both_sides"] else "none"
    print(f"\nutterances matched one-to-one by a final event: {s['matched_share']:.1f}% ({s['matched']} of {s['utterances']})",
          file=out)
    print(f"  ...with the other speaker on both sides: {both}", file=out)
    print(f"WER: {s['wer']:.1f}% (after Whisper's text normalizer: {s['wer_whisper_norm']:.1f}%)   speaker purity: {s['purity']:.1f}%   speaker count right in "
          f"{s['speaker_count_right']} of {s['dialogues']} dialogues", file=out)
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"emotion wF1 on matched utterances: live {fmt(s['emotion_wf1_live_matched'])}, offline causal on gold text "
          f"{fmt(s['emotion_wf1_offline_matched'])} (offline on all rendered utterances: {fmt(s['emotion_wf1_offline_all'])})",
          file=out)
    print(f"final events: {s['finals']}; provisional events: {s['provisionals']} ({s['provisional_skipped']} more views "
          "skipped as out of date: their final came first)", file=out)
    (a, n), (la, ln) = s["provisional_agree"], s["last_provisional_agree"]
    if n:
        print(f"provisional labels equal to their final label: {100.0 * a / n:.1f}% ({a} of {n}); the last one "
              f"before each final: {100.0 * la / max(1, ln):.1f}% ({la} of {ln})", file=out)
    for k, name in (("provisional", "end of speech -> provisional"), ("final", "end of speech -> final"),
                    ("final_after_close", "utterance closed -> final")):
        v = s["latency_ms"].get(k)
        print(f"latency {name}: " + ("none" if not v else f"p50 {v['p50']:.0f} ms / p95 {v['p95']:.0f} ms (n={v['n']})"),
              file=out)


def main(argv: Sequence[str] | None = None) -> int:
    from runtime.config import add_settings_args, settings_from_args

    p = argparse.ArgumentParser(prog="python -m runtime.evaluate_live",
                                description="Score the live pipeline on spoken (espeak-ng) validation dialogues.")
    p.add_argument("--model", default="iemocap", help="shipped model name or model directory (default iemocap)")
    p.add_argument("--backend", default=None, help="backend (default: the fastest available)")
    add_render_args(p)
    add_settings_args(p)
    p.add_argument("--speakers", type=int, metavar="N", help="fix the number of speakers")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--out", metavar="FILE", help="also write the JSON figures (and the final events, final_events) to FILE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gap_arg, (lo, hi) = checked_gaps(args)

    from tqdm.auto import tqdm

    from runtime.asr import Transcriber
    from runtime.features import FeatureBuilder
    from runtime.recognizer import select_backend
    from runtime.speakers import VoiceEncoder

    cfg = settings_from_args(args)
    if args.speakers:
        cfg.speakers.n_speakers = args.speakers
    backend, _ = select_backend(args.model, args.backend)
    manifest = backend.manifest
    dialogues = validation_dialogues(args, manifest.dataset, labels=manifest.labels)
    data = corpus_path(args, manifest.dataset)
    voices = checked_voices(args.voices)
    # a scene with more speakers than voices cannot be rendered (MELD has a few); --ids naming one is an error
    too_many = [] if args.ids else [d.id for d in dialogues if spoken_speakers(d) > len(voices)]
    if too_many:
        log.warning("left out %d validation dialogue(s) with more speakers than the %d voices: %s",
                    len(too_many), len(voices), ", ".join(too_many))
        dialogues = [d for d in dialogues if d.id not in set(too_many)]

    work = Path(args.work)
    stages = (Transcriber(cfg.asr), VoiceEncoder(cfg.speakers.cache_dir))
    features = FeatureBuilder(manifest, backend)
    features.warm_up()
    results, all_events = [], {}
    for d in tqdm(dialogues, desc="dialogues", unit="dlg", file=sys.stderr):
        wav, gold = render_dialogue(d, work, gap_arg, args.seed, (lo, hi), voices)
        res = run_dialogue(wav, gold, d.id, args.model, backend, cfg, stages, features)
        results.append(res)
        all_events[d.id] = res.finals
    gap = f"{args.gap:g} s gaps" if args.gap is not None else f"gaps drawn from {lo:g}-{hi:g} s (seed {args.seed})"
    summary = summarize(results, manifest.labels, {lab: i for i, lab in enumerate(manifest.labels)})
    summary["setup"] = {"model": manifest.name, "backend": backend.name, "data": str(data), "gap": args.gap,
                        "gap_range": [lo, hi], "seed": args.seed, "overrides": list(args.overrides),
                        "speakers": args.speakers, "voices": voices, "left_out": too_many}
    if args.out:
        write_text_atomic(args.out, json.dumps({**summary, "final_events": all_events}, indent=1))
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        left = f" ({len(too_many)} left out: more speakers than voices)" if too_many else ""
        print_report(summary, f"{manifest.name} ({backend.name}), {len(dialogues)} validation dialogues{left}, {gap}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
