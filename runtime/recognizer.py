"""The embeddable live recognizer: push audio chunks and video frames in, take events out.

One thread (a file fed in chunks; :meth:`Recognizer.poll` never waits)::

    rec = Recognizer(model="iemocap", realtime=False).start()  # realtime=True for a microphone
    for chunk in chunks:                       # (n,) float32 16 kHz mono
        rec.push_audio(chunk)                  # never blocks
        for event in rec.poll():               # the events ready now (JSON-able dicts, runtime.events)
            ...
    rec.end_audio()                            # no more audio: the last utterance is flushed
    for event in rec.events():                 # the rest, until the session's "stopped" event
        ...
    rec.close()

:meth:`Recognizer.events` waits for events until the audio has ended: iterate it on another thread
than the one pushing audio, or after :meth:`~Recognizer.end_audio` (called on the pushing thread
before that, it raises instead of waiting forever). ``push_frame(image_bgr, t)`` adds video
frames (``t``: seconds on the audio clock). See README.md for pasteable examples.

Threads and queues (nothing a capture thread calls ever waits for the model or for the reader)::

    capture --push_audio--> AudioQueue (never drops; bounded by duration, fails loudly)
            --push_frame--> FrameHistory (bounded ring) + LatestFrame (newest wins)
    segmenter thread: VAD -> utterance assembly (runtime.segmentation: boundary pauses, speaker
                      changes) -> provisional / final views (+ their frames) --> utterance queue
    model thread: ASR -> speaker -> features -> incremental graph + model --> event queue
    event queue (bounded: drops the oldest, counts it) --> events() / poll() (the caller's thread)
                                                      +-> callback thread --> on_event(event)

``on_event`` runs on the recognizer's own ``recognizer-callbacks`` thread, one event at a time in
order; a slow callback delays only later callbacks (its queue drops the oldest too), never the
pipeline. Events nobody reads are dropped oldest first beyond ``max_events``; the count is logged
once and reported in the ``stopped`` event (``events_dropped``).

Each utterance gets a provisional event (``"final": false``) at every pause inside it and one final
event (``"final": true``) when it closes, both with its ``index`` (:mod:`runtime.events`). A
provisional view still waiting when a newer view of the same utterance has arrived is skipped (it
is out of date). Only finals join the conversation: the speaker is assigned (and clusters merged,
with a ``speaker_update`` event and the graph's window re-labelled), the text joins the history and
the graph's window grows. A provisional label is the model's output for the utterance as it would
be if it ended there, with its likeliest speaker; nothing of it is kept. The final transcript is
the whole utterance's audio transcribed in one piece, with beam search (``asr.beam_size``) and the
previous final transcripts as Whisper's prompt (``asr.prompt_utterances``); a provisional view is
decoded greedily without a prompt (``asr.provisional_beam_size``: its ASR time is part of the
provisional label's latency), and as soon as the pause begins: the segmenter hands its view over
``speculative`` after ``segmentation.early_decode_ms`` of silence, and the model thread transcribes
it then (and embeds its voice) without emitting anything; the view that shows it, after
``segmentation.provisional_pause_ms``, carries the same audio and finds both done. When a view's
audio and decoding settings (beam, prompt) are exactly those the last view transcribed, that
transcript is reused; a final view, decoded with other settings than a provisional one by default,
is transcribed itself.

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

from runtime.asr import previous_text_prompt
from runtime.audio import AudioOverflowError, AudioQueue
from runtime.config import SAMPLE_RATE, RuntimeConfig
from runtime.conversation import Conversation
from runtime.events import speaker_update_event, status_event, utterance_event, warning_event
from runtime.face import UtteranceFaces
from runtime.features import FeatureBuilder, UtteranceData
from runtime.video import Frame, FrameHistory, LatestFrame
from train.common import BackendUnavailableError, ExportMismatchError, InputError
from train.features.base import MAX_CONTEXT_TURNS
from train.graph import present_rows

log = logging.getLogger(__name__)

# Fastest first. trt needs TensorRT + a GPU; onnx-int8 / onnx need an export (python -m export).
BACKEND_ORDER = ("trt", "onnx-int8", "onnx", "torch")
_END = object()

# Bounds and waits of the pipeline's threads (see the module docstring).
# Closed utterances waiting for the model thread. Each is at most vad.max_utterance_s (15 s) of
# audio, so 64 is minutes of speech; beyond it the segmenter waits (capture never does: the audio
# queue keeps accepting, bounded by audio.queue_max_s).
UTTERANCE_QUEUE_MAX = 64
# Events kept for a reader that does not keep up (per queue: events() and on_event); beyond it
# the oldest are dropped and counted. 10000 events is hours of conversation.
MAX_EVENTS = 10000
# How often a waiting thread re-checks whether the session ended: the segmenter waiting for audio
# (an idle microphone) and for room in the utterance queue. Short enough that end_audio()/abort()
# take effect at once for a person, long enough to cost nothing.
SEGMENTER_POLL_S = 0.1
HANDOVER_RETRY_S = 0.5
SETTLE_POLL_S = 0.005  # a replay's segmenter waiting for the model thread (speaker change confirmation)
# The face thread's nap when no new frame has come: 20 checks a second, above the history's 5 fps.
FACES_IDLE_S = 0.05
FACES_BATCH = 8  # frames it takes at once when behind (the newest matter most)
MAX_WARNINGS_KEPT = 100  # RecognizerStats.warnings keeps the newest; warnings_total counts all
# close() waits this long for a user's on_event callback to take the last events (it may be stuck).
CALLBACK_DRAIN_S = 5.0


class EventQueue:
    """Events from the pipeline to one reader: ``put`` never blocks; beyond ``maxlen`` the oldest
    event is dropped and counted (``dropped``). ``get`` returns events in order, then ``_END`` once
    the queue is closed and drained."""

    def __init__(self, maxlen: int = MAX_EVENTS, name: str = "events"):
        self.maxlen = int(maxlen)
        self.name = name
        self.dropped = 0
        self._items: collections.deque[dict] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, event: dict) -> None:
        with self._cond:
            if len(self._items) >= self.maxlen:
                self._items.popleft()
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("%s are not being read: dropping the oldest beyond %d (read Recognizer.events() or "
                                "poll(), or keep on_event fast); the count is in the stopped event", self.name, self.maxlen)
            self._items.append(event)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def full(self) -> bool:
        return len(self._items) >= self.maxlen

    def get(self, timeout: float | None = None):
        """The next event; ``_END`` at the end; None when ``timeout`` passes first."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            return self._items.popleft() if self._items else _END


def load_model(model: str | Path = "iemocap", backend: str | None = None):
    """Load a model for :class:`Recognizer`: a model directory or a name (the shipped ``iemocap``,
    ``meld``, or one in ``$ARIIGCN_MODEL_PATH``) on ``backend`` (None: the fastest that works,
    see :func:`select_backend`). The result has ``name`` (the backend), ``manifest`` (labels,
    modalities) and goes into ``Recognizer(backend=...)``; several recognizers may share it."""
    return select_backend(model, backend)[0]


def select_backend(model: str | Path, name: str | None = None):
    """Load the model with backend ``name``, or with the fastest one that works when None.

    Returns ``(backend, notes)``: ``notes`` says in a few words why each faster backend was passed
    over (the full reasons are logged at debug level). A backend that is not installed here
    (:class:`BackendUnavailableError`, e.g. no TensorRT on a CPU) is passed over quietly; an
    export that no longer matches the model (:class:`ExportMismatchError`) is warned about on
    stderr, since the fast path was expected and not taken. A backend named explicitly that cannot
    load is an error, never a silent fallback. A missing or damaged model directory is one error,
    whatever the backend.
    """
    from export.backends import load_backend
    from train.model_dir import resolve_model_dir

    directory = resolve_model_dir(model)  # one line for a missing or damaged model directory
    if name is not None:
        return load_backend(directory, name), []
    notes: list[str] = []
    export_problem: ExportMismatchError | None = None
    mismatched: list[str] = []  # backends whose export no longer matches the model
    failures: list[InputError] = []
    for candidate in BACKEND_ORDER:
        try:
            backend = load_backend(directory, candidate)
        except BackendUnavailableError as e:
            notes.append(f"{candidate}: {e.reason}")
            log.debug("backend %s passed over: %s", candidate, e)
            continue
        except ExportMismatchError as e:
            notes.append(f"{candidate}: {e.reason}")
            export_problem = export_problem or e
            mismatched.append(candidate)
            log.debug("backend %s passed over: %s", candidate, e)
            continue
        except InputError as e:
            notes.append(f"{candidate}: {e.reason}")
            failures.append(e)
            log.debug("backend %s failed: %s", candidate, e)
            continue
        except ImportError as e:  # e.g. torch not installed on an edge device
            notes.append(f"{candidate}: needs {e.name or e}")
            log.debug("backend %s passed over: %s", candidate, e)
            continue
        if export_problem is not None:
            log.warning("running on the slower %s backend: %s cannot run (%s); %s", candidate, " and ".join(mismatched),
                        export_problem.reason, export_problem.advice or "")
        elif notes:  # expected on most machines (no TensorRT on a CPU): said in the start event
            log.info("using backend %s; faster ones unavailable: %s", candidate, "; ".join(notes))
        return backend, notes
    worst = failures[-1] if failures else export_problem
    if worst is None:
        raise InputError("no backend can run here: " + "; ".join(notes), path=str(directory))
    raise InputError(f"cannot load the model: {worst.reason} (--debug: why each backend failed)",
                     path=str(worst.path or directory), advice=worst.advice)


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
    early_decodes: int = 0  # provisional views transcribed before their pause was long enough to show them
    no_words: int = 0  # closed utterances the ASR found no words in
    speaker_updates: int = 0  # speaker merges announced
    faceless: int = 0  # utterances whose visual row was empty (model uses video)
    frames_pushed: int = 0
    warnings: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=MAX_WARNINGS_KEPT))
    warnings_total: int = 0  # all warnings (``warnings`` keeps the newest MAX_WARNINGS_KEPT)
    dropped_utterances: int = 0  # closed utterances abandoned by abort() before they were labelled
    dropped_audio_s: float = 0.0  # pushed audio abort() left unsegmented


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
        on_event: called with every event, in order, on the recognizer's ``recognizer-callbacks``
            thread (never on a capture or model thread), in addition to :meth:`events`.
        max_events: events kept for a reader that falls behind (per queue); the oldest beyond it
            are dropped and counted (``events_dropped`` in the stopped event).
        progress: called with a line for a person before each slow loading step (the CLI prints
            them on stderr), e.g. "loading speech recognition (faster-whisper)".
    """

    def __init__(self, model: str | Path = "iemocap", backend: str | None | Any = None,
                 config: RuntimeConfig | None = None, *, realtime: bool = True, video: bool = False,
                 transcriber=None, speakers=None, segmenter=None, features: FeatureBuilder | None = None,
                 on_event: Callable[[dict], None] | None = None, max_events: int = MAX_EVENTS,
                 progress: Callable[[str], None] | None = None):
        from runtime.asr import Transcriber
        from runtime.segmentation import UtteranceAssembler
        from runtime.speaker_change import SettledVoices, SpeakerChangeDetector
        from runtime.speakers import SpeakerTracker

        self.cfg = config or RuntimeConfig()
        self.realtime = realtime
        self.video = video
        self._progress = progress or (lambda message: None)
        t0 = time.perf_counter()
        if backend is None or isinstance(backend, str):
            self._progress(f"loading the emotion model {model} ({backend or 'the fastest backend available'})")
            self.backend, self.backend_notes = select_backend(model, backend)
        else:
            self.backend, self.backend_notes = backend, []
        self.manifest = self.backend.manifest
        self.labels = list(self.manifest.labels)
        if features is None:
            self._progress("loading its feature extractors: " + ", ".join(
                f"{m} {e.name}" for m, e in self.manifest.extractors.items()))
        self.features = features or FeatureBuilder(self.manifest, self.backend)
        self.conversation = Conversation(self.backend)
        if transcriber is None:
            self._progress("loading speech recognition (faster-whisper)")
        self.transcriber = transcriber or Transcriber(self.cfg.asr)
        if speakers is None:
            self._progress("loading speaker recognition (voice encoder)")
        self.speakers = speakers or SpeakerTracker(self.cfg.speakers)
        if segmenter is None:
            detector = None
            if self.cfg.segmentation.mode == "utterance":
                voices = self.speakers if realtime else SettledVoices(self.speakers, self._settle)
                detector = SpeakerChangeDetector(self.speakers.encoder, self.cfg.segmentation, voices=voices)
            segmenter = UtteranceAssembler(self.cfg.vad, self.cfg.segmentation, detector=detector)
        self.segmenter = segmenter
        self.load_s = time.perf_counter() - t0
        self.on_event = on_event
        self.uses_video = "visual" in self.features.modalities
        self.faces: UtteranceFaces | None = None  # face evidence ("face" in events), with video only
        if video and self.cfg.video.face_evidence:
            if getattr(self.features, "frame_faces", None) is None:
                self._progress("loading the facial-expression model (fer) for face evidence")
            self.faces = UtteranceFaces.for_features(self.features)

        self.audio_queue = AudioQueue(int(self.cfg.audio.queue_max_s * SAMPLE_RATE))
        self.history = FrameHistory(self.cfg.video.history_s, self.cfg.video.history_fps)
        self.latest = LatestFrame()
        self._utt_queue: queue.Queue = queue.Queue(maxsize=UTTERANCE_QUEUE_MAX)  # segmenter waits, never capture
        self._events = EventQueue(max_events, "events")
        self._callbacks = EventQueue(max_events, "on_event callbacks") if on_event is not None else None
        # (samples pushed, wall time) per chunk of a realtime source; pruned up to what the segmenter consumed
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque()
        self._arrivals_lock = threading.Lock()
        self.samples_pushed = 0
        self.vad_position = 0  # samples the segmenter has consumed
        self._history_data: collections.deque[UtteranceData] = collections.deque(maxlen=MAX_CONTEXT_TURNS)
        self._threads: list[threading.Thread] = []
        self._callback_thread: threading.Thread | None = None
        self._faces_thread: threading.Thread | None = None
        self._pusher: int | None = None  # thread id that pushes audio (events() guards against waiting on itself)
        self._error: BaseException | None = None
        self._closed = threading.Event()
        self._abort = threading.Event()
        self._frame_index = 0
        self._video_lost = False
        self._handed = 0  # views handed to the model thread
        self._done = 0  # ...and fully processed (labelled or skipped)
        self._newest: dict[int, int] = {}  # utterance uid -> seq of its newest view handed over
        self._index_of: dict[int, int] = {}  # utterance uid -> event index (given at its first event)
        self._next_index = 0
        self._final_speakers: dict[int, int] = {}  # event index -> speaker of its final event
        self._asr_last: tuple[tuple, Any] | None = None  # ((audio span, beam, prompt), transcript) last transcribed
        self.stats = RecognizerStats()

    # -- input (any thread; never blocks) ------------------------------------------------------

    def push_audio(self, chunk: np.ndarray) -> None:
        """Queue (n,) float32 16 kHz mono audio. Raises AudioOverflowError if the model fell
        ``audio.queue_max_s`` behind (capture must stop: nothing is dropped silently)."""
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        self._pusher = threading.get_ident()
        if not self.audio_queue.put(chunk):
            if self.audio_queue.overflowed:
                raise AudioOverflowError(self.audio_queue.reason or "the audio queue overflowed")
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
        """Emit a warning event (a source failed, something was skipped) from any thread; never
        blocks (the event queues drop their oldest rather than wait)."""
        self._emit(warning_event(message, **fields))

    def video_lost(self, reason: str) -> None:
        """The video source died: carry on audio-only and say so once (until :meth:`video_back`)."""
        if not self._video_lost:
            self._video_lost = True
            self._emit(warning_event(f"video lost ({reason}); continuing audio-only", source="video"))

    def video_back(self) -> None:
        """The video source delivers frames again (a camera that was reopened)."""
        if self._video_lost:
            self._video_lost = False
            self._emit(warning_event("video back: frames are used again", source="video"))

    @property
    def busy(self) -> bool:
        """Views of utterances handed over but not yet turned into events."""
        return self._handed > self._done

    def _settle(self) -> None:
        """Wait until the model thread has processed every view handed over (a replay's speaker
        change confirmation, :class:`~runtime.speaker_change.SettledVoices`); runs on the segmenter
        thread, the only one that hands views over. Gives up when the recognizer closes or aborts."""
        while self._done < self._handed and not self._closed.is_set() and not self._abort.is_set():
            time.sleep(SETTLE_POLL_S)

    @property
    def backlog_s(self) -> float:
        """Seconds of pushed audio the segmenter has not consumed yet."""
        return (self.samples_pushed - self.vad_position) / SAMPLE_RATE

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "Recognizer":
        if self._threads:
            return self
        self._progress("warming up (running each model once)")
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
        if self.video and ((self.uses_video and self.features.frame_cache) or self.faces is not None):
            self._faces_thread = threading.Thread(target=self._faces_loop, name="recognizer-faces", daemon=True)
            self._faces_thread.start()  # it only fills a cache, and stops with the session (close() joins it)
        if self._callbacks is not None:
            self._callback_thread = threading.Thread(target=self._callback_loop, name="recognizer-callbacks", daemon=True)
            self._callback_thread.start()
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
        """End the audio (what was said is still labelled) and wait for the pipeline to finish.

        Returns once the pipeline's threads have ended (they never wait on a reader: unread events
        are dropped oldest first), or after ``timeout`` seconds per thread. A user's on_event
        callback gets at most CALLBACK_DRAIN_S more to take the last events.
        """
        self.end_audio("closed")
        for th in self._threads + ([self._faces_thread] if self._faces_thread is not None else []):
            th.join(timeout)
        if self._callback_thread is not None:
            self._callback_thread.join(CALLBACK_DRAIN_S if timeout is None else min(timeout, CALLBACK_DRAIN_S))
            if self._callback_thread.is_alive():
                log.warning("on_event has not returned for %.0f s; closing without it", CALLBACK_DRAIN_S)

    def abort(self, reason: str = "aborted") -> None:
        """Stop now: audio not yet segmented and closed utterances not yet labelled are dropped
        (counted in the stopped event: ``dropped_utterances``, ``dropped_audio_s``); the utterance
        being labelled finishes. The session then ends as after :meth:`end_audio`."""
        self._abort.set()
        self.audio_queue.close(reason)

    def events(self, timeout: float | None = None) -> Iterator[dict]:
        """Events as they come, until the session ends (after :meth:`end_audio` or :meth:`close`).

        ``timeout``: give up waiting after this many seconds without an event (None: wait).
        Re-raises an error that stopped the pipeline, after the events produced before it.
        Waiting (``timeout=None``) on the thread that pushes audio before the audio has ended
        would never end: that raises RuntimeError (use :meth:`poll` between pushes).
        """
        while True:
            if (timeout is None and self._pusher == threading.get_ident() and not self.audio_queue.closed
                    and not self._events.closed):
                raise RuntimeError("Recognizer.events() waits until the audio has ended, and this thread pushes "
                                   "the audio: call end_audio() first, use poll() between pushes, or read events() "
                                   "on another thread")
            ev = self._events.get(timeout=timeout if timeout is not None else SEGMENTER_POLL_S)
            if ev is None:
                if timeout is None:
                    continue
                return
            if ev is _END:
                if self._error is not None:
                    raise self._error
                return
            yield ev

    def poll(self) -> list[dict]:
        """Events available now, without waiting."""
        out = []
        while (ev := self._events.get(timeout=0)) is not None and ev is not _END:
            out.append(ev)
        return out

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

    def _prune_arrivals(self, sample: int) -> None:
        """Forget arrival times of audio before ``sample``: no utterance can close there any more."""
        with self._arrivals_lock:
            while len(self._arrivals) > 1 and self._arrivals[0][0] < sample:
                self._arrivals.popleft()

    def _segment_loop(self) -> None:
        seg = self.segmenter
        try:
            while not self._abort.is_set():
                chunk = self.audio_queue.get(timeout=SEGMENTER_POLL_S)  # raises AudioOverflowError when drained
                if chunk is None:
                    if self.audio_queue.finished():
                        break
                    continue
                if self.realtime:
                    self._prune_arrivals(self.vad_position)
                views = seg.push(chunk)
                self.vad_position += len(chunk)
                for view in views:
                    self._hand_over(view)
        except AudioOverflowError as e:
            self._emit(warning_event(str(e), source="audio"))
            raise
        finally:
            if self._abort.is_set():
                self.stats.dropped_audio_s = (self.samples_pushed - self.vad_position) / SAMPLE_RATE
                closed = sum(1 for view in seg.flush() if view.final)  # closed by the abort, never labelled
                self.stats.segments += closed
                self.stats.dropped_utterances += closed
            else:
                for utt in seg.flush():
                    self._hand_over(utt)
            self._put_utterance(_END)

    def _put_utterance(self, item) -> None:
        """Hand over to the model thread; gives up only if the model thread has ended (failed)."""
        while not self._closed.is_set():
            try:
                self._utt_queue.put(item, timeout=HANDOVER_RETRY_S)
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
                time.sleep(FACES_IDLE_S)
                continue
            for f in todo[-FACES_BATCH:]:  # behind? the newest frames matter most for what is being said
                try:
                    self.features.precompute_frame(f.index, f.image)
                    if self.faces is not None:
                        self.faces.precompute(f.index, f.image)
                except Exception:  # noqa: BLE001 - the model thread recomputes and reports it
                    log.debug("face precomputation failed", exc_info=True)
                done = f.index

    def _model_loop(self) -> None:
        while True:
            item = self._utt_queue.get()
            if item is _END:
                break
            try:
                if self._abort.is_set():
                    self.stats.dropped_utterances += int(item.utt.final)  # a provisional view is no utterance
                else:
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
        self._emit(status_event("stopped", utterances=s.labelled, provisional=s.provisional,
                                provisional_skipped=s.skipped, early_decodes=s.early_decodes, segments=s.segments,
                                no_words=s.no_words, speaker_updates=s.speaker_updates,
                                reason=self.audio_queue.reason or "stopped",
                                dropped_utterances=s.dropped_utterances, dropped_audio_s=round(s.dropped_audio_s, 2),
                                events_dropped=self._events_dropped(including_one_more=True),
                                warnings=s.warnings_total, error=str(self._error) if self._error else None))
        self._events.close()
        if self._callbacks is not None:
            self._callbacks.close()

    def _transcribe(self, utt, lat: dict[str, float]):
        """The transcript of a view's whole audio: a final one with ``asr.beam_size`` and the last
        ``asr.prompt_utterances`` final transcripts as Whisper's prompt, a provisional one with
        ``asr.provisional_beam_size`` and no prompt; the last one again when audio and settings are the same."""
        a = self.cfg.asr
        if utt.final:
            beam = a.beam_size
            prompt = previous_text_prompt([h.text for h in self._history_data], a.prompt_utterances)
        else:
            beam, prompt = a.provisional_beam_size, None
        key = (utt.audio_start, len(utt.audio), beam, prompt)
        if self._asr_last is not None and self._asr_last[0] == key:
            lat["asr"] = 0.0
            return self._asr_last[1]
        t = time.perf_counter()
        tr = self.transcriber.transcribe(utt.audio, prompt=prompt, beam_size=beam)
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
            self.stats.skipped += not utt.speculative  # a newer view of this utterance is already on its way
            return
        lat: dict[str, float] = {"vad": p.vad_ms, "queue": (time.monotonic() - p.ref_wall) * 1000.0}
        tr = self._transcribe(utt, lat)
        key = (utt.audio_start, len(utt.audio))
        if utt.speculative:  # decoded ahead of its pause's end; the view that shows it finds both cached
            self.stats.early_decodes += 1
            if tr is not None:
                self.speakers.peek(utt.audio, key=key)
            return
        if tr is None:
            if utt.final:
                self._no_words(utt)
            return
        t = time.perf_counter()
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
        face = None
        if self.faces is not None:
            t = time.perf_counter()
            face = self.faces.evidence(p.frames, p.frame_ids)
            lat["face"] = (time.perf_counter() - t) * 1000.0
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
                    f"speech from {utt.start_s:.2f} s ran past vad.max_utterance_s ({self.cfg.vad.max_utterance_s:g} s) "
                    f"without a boundary pause: utterance {index} ({utt.start_s:.2f}-{utt.end_s:.2f} s) closed at "
                    f"its last pause, the speech that goes on begins the next one",
                    source="segmentation", index=index))
        ev = utterance_event(index, utt.start_s, utt.end_s, speaker, tr.text, self.labels, probs, lat, present,
                             final=utt.final, face=face)
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

    def _events_dropped(self, including_one_more: bool = False) -> int:
        """Events dropped so far by both queues (+ the drop the next event will cause, if asked)."""
        queues = [q for q in (self._events, self._callbacks) if q is not None]
        return sum(q.dropped + int(including_one_more and q.full) for q in queues)

    def _callback_loop(self) -> None:
        """The ``recognizer-callbacks`` thread: on_event for every event, in order."""
        while (ev := self._callbacks.get()) is not _END:
            if ev is None:
                continue
            try:
                self.on_event(ev)
            except Exception:  # noqa: BLE001 - a failing callback must not stop the session
                log.exception("on_event failed on a %s event", ev.get("type"))

    def _emit(self, event: dict) -> None:
        """Any thread; never blocks."""
        if event.get("type") == "warning":
            if event.pop("log", True):
                log.warning("%s", event["message"])
            self.stats.warnings.append(event["message"])
            self.stats.warnings_total += 1
        if self._callbacks is not None:
            self._callbacks.put(event)
        self._events.put(event)
