"""The embeddable live recognizer: push audio chunks and video frames in, take events out.

::

    rec = Recognizer(model="iemocap")          # backend: the fastest available (see select_backend)
    rec.start()
    rec.push_audio(chunk)                      # (n,) float32 16 kHz mono; never blocks
    rec.push_frame(image_bgr, t)               # optional; t: seconds on the audio clock
    for event in rec.events():                 # JSON-able dicts (runtime.events), until close
        ...
    rec.end_audio()                            # no more audio: the last utterance is flushed

Threads and queues (nothing a capture thread calls ever waits for the model)::

    capture --push_audio--> AudioQueue (never drops; bounded by duration, fails loudly)
            --push_frame--> FrameHistory (bounded ring) + LatestFrame (newest wins)
    segmenter thread: VAD -> utterance assembly (runtime.segmentation: boundary pauses, speaker
                      changes) -> provisional / final views (+ their frames) --> utterance queue
    model thread: ASR -> speaker -> features -> incremental graph + model --> event queue

Each utterance gets a provisional event (``"final": false``) at every pause inside it and one final
event (``"final": true``) when it closes, both with its ``index`` (:mod:`runtime.events`). A
provisional view still waiting when a newer view of the same utterance has arrived is skipped (it
is out of date). Only finals join the conversation: the speaker is assigned (and clusters merged,
with a ``speaker_update`` event and the graph's window re-labelled), the text joins the history and
the graph's window grows. A provisional label is the model's output for the utterance as it would
be if it ended there, with its likeliest speaker; nothing of it is kept. The final transcript is
the whole utterance's audio transcribed in one piece; when that audio is exactly what the last
provisional view transcribed (no speech since), that transcript is the final one.

Latency (``latency_ms`` of each event, see :mod:`runtime.events`): the reference point is the
moment the audio that closed the utterance arrived (live sources), or the moment the segmenter
closed it (``realtime=False``: files replayed as fast as possible, where arrival says nothing).
``total`` = ``vad`` (the silence the segmenter waited for) + everything after the reference;
final events also carry ``after_close`` (the reference -> the event).
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from runtime.audio import AudioOverflowError, AudioQueue
from runtime.config import SAMPLE_RATE, RuntimeConfig
from runtime.conversation import Conversation
from runtime.events import speaker_update_event, status_event, utterance_event, warning_event
from runtime.features import FeatureBuilder, UtteranceData
from runtime.video import Frame, FrameHistory, LatestFrame
from train.common import InputError
from train.features.base import MAX_CONTEXT_TURNS
from train.graph import present_rows

log = logging.getLogger(__name__)

# Fastest first. trt needs TensorRT + a GPU; onnx-int8 / onnx need an export (python -m export).
BACKEND_ORDER = ("trt", "onnx-int8", "onnx", "torch")
_END = object()


def load_model(model: str | Path = "iemocap", backend: str | None = None):
    """Load a model for :class:`Recognizer`: a model directory or a name (the shipped ``iemocap``,
    ``meld``, or one in ``$ARIIGCN_MODEL_PATH``) on ``backend`` (None: the fastest that works,
    see :func:`select_backend`). The result has ``name`` (the backend), ``manifest`` (labels,
    modalities) and goes into ``Recognizer(backend=...)``; several recognizers may share it."""
    return select_backend(model, backend)[0]


def select_backend(model: str | Path, name: str | None = None):
    """Load the model with backend ``name``, or with the fastest one that works when None.

    Returns ``(backend, notes)``: ``notes`` says why each faster backend was passed over (logged
    as well). A backend named explicitly that cannot load is an error, never a silent fallback.
    """
    from export.backends import load_backend

    if name is not None:
        return load_backend(model, name), []
    notes = []
    for candidate in BACKEND_ORDER:
        try:
            backend = load_backend(model, candidate)
        except InputError as e:
            notes.append(f"{candidate}: {e}")
            continue
        except ImportError as e:  # e.g. torch not installed on an edge device
            notes.append(f"{candidate}: needs {e.name or e}")
            continue
        for note in notes:
            log.info("backend %s", note)
        short = [n.split(". ")[0].split(" (")[0] for n in notes]  # first clause of each reason
        if short:
            # Expected on most machines (no TensorRT on a CPU): said once, in the log and the start event.
            log.info("using backend %s; faster ones unavailable: %s", candidate, "; ".join(short))
        return backend, short
    raise InputError("no backend can run this model: " + " | ".join(notes))


@dataclass
class _Pending:
    """A view of an utterance on its way from the segmenter thread to the model thread."""

    utt: Any  # runtime.segmentation.Span
    seq: int  # views handed over so far (a provisional older than its utterance's newest is skipped)
    frames: list[np.ndarray]
    frame_ids: list[int]
    ref_wall: float  # latency reference point (see the module docstring)
    vad_ms: float


@dataclass
class RecognizerStats:
    segments: int = 0  # utterances closed (final views)
    labelled: int = 0  # final events emitted
    provisional: int = 0  # provisional events emitted
    skipped: int = 0  # provisional views skipped as out of date
    no_words: int = 0  # closed utterances the ASR found no words in
    speaker_updates: int = 0  # speaker merges announced
    faceless: int = 0  # utterances whose visual row was empty (model uses video)
    frames_pushed: int = 0
    warnings: list[str] = field(default_factory=list)


class Recognizer:
    """Audio (and video) in, utterance events out; see the module docstring.

    Args:
        model: shipped model name or model directory.
        backend: ``torch|onnx|onnx-int8|trt`` or None for the fastest available, or a loaded
            model (:func:`load_model`).
        config: capture/VAD/ASR/speaker settings (``configs/runtime.yaml``).
        realtime: the audio arrives as it is spoken (microphone, paced replay); False for files
            processed as fast as possible (changes only how latency is measured).
        video: a video source feeds frames (the visual modality is otherwise absent, with a warning).
        transcriber, speakers, segmenter, features: pre-built stages (tests, sharing one ASR model).
        on_event: called with every event on the model thread, in addition to :meth:`events`.
    """

    def __init__(self, model: str | Path = "iemocap", backend: str | None | Any = None,
                 config: RuntimeConfig | None = None, *, realtime: bool = True, video: bool = False,
                 transcriber=None, speakers=None, segmenter=None, features: FeatureBuilder | None = None,
                 on_event: Callable[[dict], None] | None = None, max_events: int = 10000):
        from runtime.asr import Transcriber
        from runtime.segmentation import UtteranceAssembler
        from runtime.speaker_change import SpeakerChangeDetector
        from runtime.speakers import SpeakerTracker

        self.cfg = config or RuntimeConfig()
        self.realtime = realtime
        self.video = video
        t0 = time.perf_counter()
        if backend is None or isinstance(backend, str):
            self.backend, self.backend_notes = select_backend(model, backend)
        else:
            self.backend, self.backend_notes = backend, []
        self.manifest = self.backend.manifest
        self.labels = list(self.manifest.labels)
        self.features = features or FeatureBuilder(self.manifest, self.backend)
        self.conversation = Conversation(self.backend)
        self.transcriber = transcriber or Transcriber(self.cfg.asr)
        self.speakers = speakers or SpeakerTracker(self.cfg.speakers)
        if segmenter is None:
            detector = None
            if self.cfg.segmentation.mode == "utterance":
                detector = SpeakerChangeDetector(self.speakers.encoder, self.cfg.segmentation, voices=self.speakers)
            segmenter = UtteranceAssembler(self.cfg.vad, self.cfg.segmentation, detector=detector)
        self.segmenter = segmenter
        self.load_s = time.perf_counter() - t0
        self.on_event = on_event
        self.uses_video = "visual" in self.features.modalities

        self.audio_queue = AudioQueue(int(self.cfg.audio.queue_max_s * SAMPLE_RATE))
        self.history = FrameHistory(self.cfg.video.history_s, self.cfg.video.history_fps)
        self.latest = LatestFrame()
        self._utt_queue: queue.Queue = queue.Queue(maxsize=64)  # segmenter thread blocks, never capture
        self._events: queue.Queue = queue.Queue(maxsize=max_events)
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque()  # (samples pushed, wall)
        self._arrivals_lock = threading.Lock()
        self.samples_pushed = 0
        self.vad_position = 0  # samples the segmenter has consumed
        self._history_data: collections.deque[UtteranceData] = collections.deque(maxlen=MAX_CONTEXT_TURNS)
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._closed = threading.Event()
        self._frame_index = 0
        self._video_lost = False
        self._handed = 0  # views handed to the model thread
        self._done = 0  # ...and fully processed (labelled or skipped)
        self._newest: dict[int, int] = {}  # utterance uid -> seq of its newest view handed over
        self._index_of: dict[int, int] = {}  # utterance uid -> event index (given at its first event)
        self._next_index = 0
        self._final_speakers: dict[int, int] = {}  # event index -> speaker of its final event
        self._asr_last: tuple[tuple[int, int], Any] | None = None  # (audio span, transcript) last transcribed
        self.stats = RecognizerStats()

    # -- input (any thread; never blocks) ------------------------------------------------------

    def push_audio(self, chunk: np.ndarray) -> None:
        """Queue (n,) float32 16 kHz mono audio. Raises AudioOverflowError if the model fell
        ``audio.queue_max_s`` behind (capture must stop: nothing is dropped silently)."""
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        if not self.audio_queue.put(chunk):
            if self.audio_queue.closed and self.audio_queue.reason and "fell" in self.audio_queue.reason:
                raise AudioOverflowError(self.audio_queue.reason)
            return
        self.samples_pushed += len(chunk)
        if self.realtime:
            with self._arrivals_lock:
                self._arrivals.append((self.samples_pushed, time.monotonic()))

    def end_audio(self, reason: str = "end of audio") -> None:
        """No more audio will come: utterances still open are closed and processed."""
        self.audio_queue.close(reason)

    def push_frame(self, image: np.ndarray, t: float) -> None:
        """A video frame (H, W, 3) uint8 BGR at ``t`` seconds on the audio clock."""
        frame = Frame(image, float(t), self._frame_index)
        self._frame_index += 1
        self.history.add(frame)
        self.latest.put(frame)
        self.stats.frames_pushed += 1

    def warn(self, message: str, **fields) -> None:
        """Emit a warning event (a source failed, something was skipped) from any thread."""
        self._emit(warning_event(message, **fields))

    def video_lost(self, reason: str) -> None:
        """The video source died: carry on audio-only and say so once."""
        if not self._video_lost:
            self._video_lost = True
            self._emit(warning_event(f"video lost ({reason}); continuing audio-only", source="video"))

    @property
    def busy(self) -> bool:
        """Views of utterances handed over but not yet turned into events."""
        return self._handed > self._done

    @property
    def backlog_s(self) -> float:
        """Seconds of pushed audio the segmenter has not consumed yet."""
        return (self.samples_pushed - self.vad_position) / SAMPLE_RATE

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "Recognizer":
        if self._threads:
            return self
        self.features.warm_up()  # load lazily-built models now, not on the first utterance
        self.conversation.warm_up()
        self._emit(status_event(
            "started", model=self.manifest.name, dataset=self.manifest.dataset, backend=self.backend.name,
            labels=self.labels, modalities=self.features.modalities, window=self.conversation.window,
            load_s=round(self.load_s, 2), asr=str(getattr(self.transcriber, "model_path", "")),
            video=("used" if self.uses_video else "not used by this model") if self.video else "none",
            backends_skipped=list(self.backend_notes),
        ))
        if self.video and not self.uses_video:
            log.info("model %s does not use video: frames go to the overlay / recording only", self.manifest.name)
        if self.uses_video and not self.video:
            self._emit(warning_event("the model uses video but there is no video source: its visual modality is masked out",
                                     source="video"))
        if self.uses_video and self.video and self.features.frame_cache:
            th = threading.Thread(target=self._faces_loop, name="recognizer-faces", daemon=True)
            th.start()  # not joined: it only fills a cache, and stops with the session
        for target, name in ((self._segment_loop, "segmenter"), (self._model_loop, "model")):
            th = threading.Thread(target=self._guard(target, last=name == "model"), name=f"recognizer-{name}", daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def close(self, timeout: float | None = None) -> None:
        """End the audio (flushing what was said) and wait for the threads to finish."""
        self.end_audio("closed")
        for th in self._threads:
            th.join(timeout)

    def events(self, timeout: float | None = None) -> Iterator[dict]:
        """Events as they come, until the session ends (after :meth:`end_audio` or :meth:`close`).

        ``timeout``: give up waiting after this many seconds without an event (None: wait).
        Re-raises an error that stopped the pipeline, after the events produced before it.
        """
        while True:
            try:
                ev = self._events.get(timeout=timeout)
            except queue.Empty:
                return
            if ev is _END:
                self._events.put(_END)  # later calls end at once too
                if self._error is not None:
                    raise self._error
                return
            yield ev

    def poll(self) -> list[dict]:
        """Events available now, without waiting."""
        out = []
        while True:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                return out
            if ev is _END:
                self._events.put(_END)
                return out
            out.append(ev)

    @property
    def finished(self) -> bool:
        return self._closed.is_set()

    # -- threads -------------------------------------------------------------------------------

    def _guard(self, fn, last: bool):
        """Run a thread body; an error is kept for events() to re-raise. The segmenter's error
        still lets the model thread label every utterance closed before it (its loop ends with
        _END); only the model thread (``last``) ends the session."""
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - handed to the consumer by events()
                if self._error is None:
                    self._error = e
                log.debug("recognizer thread failed", exc_info=True)
                if last:
                    self._finish()
        return run

    def _arrival_wall(self, sample: int) -> float:
        """Wall time at which audio sample ``sample`` had been pushed (realtime sources)."""
        with self._arrivals_lock:
            while len(self._arrivals) > 1 and self._arrivals[0][0] < sample:
                self._arrivals.popleft()
            if self._arrivals and self._arrivals[0][0] >= sample:
                return self._arrivals[0][1]
        return time.monotonic()

    def _segment_loop(self) -> None:
        seg = self.segmenter
        try:
            while True:
                chunk = self.audio_queue.get(timeout=0.1)  # raises AudioOverflowError when drained
                if chunk is None:
                    if self.audio_queue.finished():
                        break
                    continue
                views = seg.push(chunk)
                self.vad_position += len(chunk)
                for view in views:
                    self._hand_over(view)
        except AudioOverflowError as e:
            self._emit(warning_event(str(e), source="audio"))
            raise
        finally:
            for utt in seg.flush():
                self._hand_over(utt)
            self._put_utterance(_END)

    def _put_utterance(self, item) -> None:
        """Hand over to the model thread; gives up only if the model thread has ended (failed)."""
        while not self._closed.is_set():
            try:
                self._utt_queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _hand_over(self, utt) -> None:
        now = time.monotonic()
        ref = self._arrival_wall(utt.decided_at) if self.realtime else now
        seen = self.history.between(utt.start_s, utt.end_s) if self.video else []
        vad_ms = (utt.decided_at - utt.end) * 1000.0 / SAMPLE_RATE
        if utt.final:
            self.stats.segments += 1
        self._handed += 1
        self._newest[utt.uid] = self._handed
        self._put_utterance(_Pending(utt, self._handed, [f.image for f in seen], [f.index for f in seen], ref, vad_ms))

    def _faces_loop(self) -> None:
        """Visual features of frames as they arrive (while the person is still speaking), so the
        end of an utterance finds most of its frames done. Best effort: any frame it has not
        reached is computed at the end, with the same result."""
        done = -1
        while not self._closed.is_set():
            todo = [f for f in self.history.between(-np.inf, np.inf) if f.index > done]
            if not todo:
                time.sleep(0.05)
                continue
            for f in todo[-8:]:  # behind? the newest frames matter most for what is being said
                try:
                    self.features.precompute_frame(f.index, f.image)
                except Exception:  # noqa: BLE001 - the model thread recomputes and reports it
                    log.debug("face precomputation failed", exc_info=True)
                done = f.index

    def _model_loop(self) -> None:
        while True:
            item = self._utt_queue.get()
            if item is _END:
                break
            try:
                self._process(item)
            finally:
                self._done += 1
        self._finish()

    def _finish(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        s = self.stats
        if s.segments == 0 and self._error is None:
            self._emit(warning_event(f"no speech found in {self.vad_position / SAMPLE_RATE:.1f} s of audio",
                                     source="vad"))
        self._emit(status_event("stopped", utterances=s.labelled, provisional=s.provisional, segments=s.segments,
                                no_words=s.no_words, speaker_updates=s.speaker_updates,
                                reason=self.audio_queue.reason or "stopped",
                                error=str(self._error) if self._error else None))
        self._events.put(_END)

    def _transcribe(self, utt, lat: dict[str, float]):
        """The transcript of a view's whole audio; the last one again when the audio is the same."""
        key = (utt.audio_start, len(utt.audio))
        if self._asr_last is not None and self._asr_last[0] == key:
            lat["asr"] = 0.0
            return self._asr_last[1]
        t = time.perf_counter()
        tr = self.transcriber.transcribe(utt.audio)
        lat["asr"] = (time.perf_counter() - t) * 1000.0
        self._asr_last = (key, tr)
        return tr

    def _index_for(self, uid: int) -> int:
        if uid not in self._index_of:
            self._index_of[uid] = self._next_index
            self._next_index += 1
        return self._index_of[uid]

    def _process(self, p: _Pending) -> None:
        utt = p.utt
        if not utt.final and self._newest.get(utt.uid, p.seq) != p.seq:
            self.stats.skipped += 1  # a newer view of this utterance is already on its way
            return
        lat: dict[str, float] = {"vad": p.vad_ms, "queue": (time.monotonic() - p.ref_wall) * 1000.0}
        tr = self._transcribe(utt, lat)
        if tr is None:
            if utt.final:
                self._no_words(utt)
            return
        t = time.perf_counter()
        key = (utt.audio_start, len(utt.audio))
        if utt.final:
            assignment = self.speakers.assign(utt.audio, key=key)
            speaker = assignment.speaker
        else:
            speaker = self.speakers.peek(utt.audio, key=key)
        lat["speaker"] = (time.perf_counter() - t) * 1000.0
        if utt.final:
            for merged, into in assignment.merges:
                self._merge_speakers(merged, into)
        data = UtteranceData(text=tr.text, speaker=speaker, audio=utt.audio, frames=p.frames, frame_ids=p.frame_ids)
        t = time.perf_counter()
        rows, per_mod = self.features.build(data, list(self._history_data))
        lat["features"] = (time.perf_counter() - t) * 1000.0
        lat.update({f"features.{m}": ms for m, ms in per_mod.items()})
        present = [m for m, r in rows.items() if present_rows(r)]
        if utt.final and self.uses_video and "visual" not in present and self.video and not self._video_lost:
            self.stats.faceless += 1
            if self.stats.faceless == 1 or not p.frames:
                why = "no video frames" if not p.frames else "no face found in its frames"
                self._emit(warning_event(f"utterance at {utt.start_s:.2f} s: {why}; visual modality masked out "
                                         "(labels from the other modalities)", source="video"))
        t = time.perf_counter()
        probs = self.conversation.add(rows, speaker) if utt.final else self.conversation.peek(rows, speaker)
        lat["model"] = (time.perf_counter() - t) * 1000.0
        after = (time.monotonic() - p.ref_wall) * 1000.0
        lat["total"] = p.vad_ms + after
        index = self._index_for(utt.uid)
        if utt.final:
            lat["after_close"] = after
            self._history_data.append(UtteranceData(text=tr.text, speaker=speaker))
            self._final_speakers[index] = speaker
            self._index_of.pop(utt.uid, None)
            self._newest.pop(utt.uid, None)
            if utt.reason == "max_length":
                self._emit(warning_event(
                    f"utterance {index} ({utt.start_s:.2f}-{utt.end_s:.2f} s) reached vad.max_utterance_s "
                    f"({self.cfg.vad.max_utterance_s:g} s) without a boundary pause: cut at its last pause",
                    source="segmentation", index=index))
        ev = utterance_event(index, utt.start_s, utt.end_s, speaker, tr.text, self.labels, probs, lat, present,
                             final=utt.final)
        if utt.final:
            self.stats.labelled += 1
        else:
            self.stats.provisional += 1
        self._emit(ev)

    def _no_words(self, utt) -> None:
        self.stats.no_words += 1
        index = self._index_of.pop(utt.uid, None)
        self._newest.pop(utt.uid, None)
        where = f"{utt.start_s:.2f}-{utt.end_s:.2f} s"
        if index is None:
            msg = f"no words in the speech at {where}: not labelled"
        else:  # provisional labels went out for it: say that no final one will come
            msg = f"no words in the whole utterance {index} at {where}: its provisional label is withdrawn"
        self._emit(warning_event(msg, source="asr", start=round(utt.start_s, 3), end=round(utt.end_s, 3),
                                 **({} if index is None else {"index": index})))

    def _merge_speakers(self, merged: int, into: int) -> None:
        """Speaker ``merged`` is ``into``: re-label the past (events, history, the graph's window)."""
        indices = sorted(i for i, s in self._final_speakers.items() if s == merged)
        for i in indices:
            self._final_speakers[i] = into
        self.conversation.relabel({merged: into})
        self._history_data = collections.deque(
            (UtteranceData(text=h.text, speaker=into if h.speaker == merged else h.speaker) for h in self._history_data),
            maxlen=self._history_data.maxlen)
        self.stats.speaker_updates += 1
        self._emit(speaker_update_event(merged, into, indices))

    def _emit(self, event: dict) -> None:
        if event.get("type") == "warning":
            if event.pop("log", True):
                log.warning("%s", event["message"])
            self.stats.warnings.append(event["message"])
        if self.on_event is not None:
            self.on_event(event)
        self._events.put(event)
