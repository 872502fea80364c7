"""The live runtime: capture, voice activity, transcription, speakers, features, graph, labels.

The embedding API is what this package exports::

    from runtime import Recognizer, load_model
    rec = Recognizer(backend=load_model("iemocap"))     # or Recognizer(model="iemocap")
    rec.start()
    rec.push_audio(chunk)                               # (n,) float32 16 kHz mono
    rec.end_audio()
    for event in rec.events():       # UtteranceEvent | SpeakerUpdateEvent | StatusEvent | WarningEvent
        if event["type"] == "utterance" and event["final"]:   # final labels only (provisional: final False)
            print(event["text"], event["emotion"])

Importing it puts the shipped models (``runtime/models``: ``iemocap``, ``meld`` and the encoders
they read) on the model search path (:func:`train.model_dir.add_model_search_dirs`), after the
directories in ``$ARIIGCN_MODEL_PATH``.

This package and the modules it imports at start-up never import torch: an edge device runs it
from exported artifacts with numpy, onnxruntime, CTranslate2 (faster-whisper), PyAV, OpenCV and
sounddevice. Modules:

* :mod:`runtime.config`   -- ``RuntimeConfig`` (typed, from ``configs/runtime.yaml``);
* :mod:`runtime.audio`    -- audio sources (file / video sound track via PyAV, microphone via
  sounddevice) and the never-dropping bounded :class:`~runtime.audio.AudioQueue`;
* :mod:`runtime.video`    -- camera / video-file frames with a latest-frame-wins buffer;
* :mod:`runtime.vad`      -- silero VAD (ONNX) and the streaming pause detector (stretches of speech);
* :mod:`runtime.segmentation` -- utterances from stretches: boundary pause or speaker change,
  provisional and final views; :mod:`runtime.speaker_change` finds where the voice changes;
* :mod:`runtime.asr`      -- faster-whisper transcription with hallucination guards;
* :mod:`runtime.speakers` -- resemblyzer voice embeddings (ONNX) and online speaker clustering
  (clusters found to be one voice are merged);
* :mod:`runtime.features` -- exactly the feature extractors the model's manifest names;
* :mod:`runtime.face`     -- face evidence per utterance (the fer expression model's own output);
* :mod:`runtime.conversation` -- the incremental conversation graph over a bounded window
  (built by ``train.graph.build_graph``, the function training uses);
* :mod:`runtime.recognizer` -- ``Recognizer``, the Python API: audio chunks and frames in, events out;
* :mod:`runtime.events`   -- JSON-lines events and the terminal status line;
* :mod:`runtime.overlay`, :mod:`runtime.record` -- ``--window`` display and ``--record`` sessions;
* :mod:`runtime.live`     -- the ``python -m runtime.live`` command; :mod:`runtime.bench` its benchmark;
  :mod:`runtime.evaluate_live` scores it on spoken validation dialogues.

The audio stages chain like this (``cfg = runtime.config.load_runtime_config(path)``)::

    seg = UtteranceAssembler(cfg.vad, cfg.segmentation)         # + detector= for speaker changes
    asr, spk = Transcriber(cfg.asr), SpeakerTracker(cfg.speakers)
    for chunk in FileAudioSource("talk.mp4", realtime=False):   # or MicrophoneSource(None, cfg.audio)
        for utt in seg.push(chunk):                             # provisional and final views
            if not utt.final:
                continue
            text = asr.transcribe(utt.audio)                    # None: no words -> no label
            if text is not None:
                speaker = spk.assign(utt.audio).speaker         # int id (merges: .merges)
    for utt in seg.flush(): ...                                 # speech still open at the end
"""
from runtime.config import SHIPPED_MODELS
from train.model_dir import add_model_search_dirs

add_model_search_dirs(SHIPPED_MODELS)

from runtime.events import Event, FaceEvidence, SpeakerUpdateEvent, StatusEvent, UtteranceEvent, WarningEvent  # noqa: E402
from runtime.recognizer import Recognizer, load_model  # noqa: E402

__all__ = ["Recognizer", "load_model", "Event", "UtteranceEvent", "FaceEvidence", "SpeakerUpdateEvent", "StatusEvent",
           "WarningEvent"]
