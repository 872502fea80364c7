"""The incremental conversation: a bounded window of the newest utterances, classified one by one.

Each new utterance (its per-modality feature rows and its speaker) is appended to a
:class:`train.graph.ConversationWindow` and the model is run on the graph of the newest ``K``
utterances, where ``K = gcn_layers * past + 1`` (:func:`train.graph.window_size`; ``K = 1`` for
a model without the graph). The exported backends' whole-dialogue evaluation uses the same window. The graph itself is
built by :func:`train.graph.build_graph` -- the function training uses -- inside the backend
(``export.graph_inputs.step_feeds`` for the exported backends, ``train.batch.collate`` for
torch). :mod:`train.graph` proves that the newest utterance's output on this window equals its
output on the whole conversation's graph; with a causal model (``future = 0``) no output ever
changes afterwards, so the labels emitted utterance by utterance are exactly the offline causal
evaluation (``tests/test_conversation.py`` checks it), and the cost per utterance depends on
``K`` only, never on how long the conversation has run.

A bidirectional model (``future > 0``) also runs, but live it can only give each utterance the
output it has when it is the newest; offline, later utterances would change it (a warning says so).
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np

from train.common import InputError
from train.graph import ConversationWindow, window_size

log = logging.getLogger(__name__)


def backend_window(backend) -> int:
    """Utterances whose graph gives the newest one its exact output, for any backend."""
    spec = getattr(backend, "spec", None)
    if spec is not None:  # exported backends carry the graph's shape in their manifest
        return int(spec.exact_window)
    cfg = getattr(backend, "cfg", None)
    if cfg is None:
        raise InputError(f"backend {getattr(backend, 'name', backend)!r} tells neither its graph spec nor its config")
    return window_size(cfg.graph.past, cfg.model.gcn_layers) if cfg.model.use_graph else 1


class Conversation:
    """Keeps the newest ``window`` utterances and classifies each new one: ``add(...) -> (C,) probs``.

    ``backend``: a :mod:`train.backends` backend. Exported ones have ``step(features, speakers)``;
    the torch backend is called through ``predict`` on the window as a one-dialogue batch.
    """

    def __init__(self, backend, window: int | None = None):
        self.backend = backend
        self.manifest = backend.manifest
        self.modalities = list(self.manifest.modalities)
        self.dims = dict(self.manifest.dims)
        self.labels = list(self.manifest.labels)
        self.window = int(window or backend_window(backend))
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.turns = ConversationWindow(self.window)
        self.count = 0  # utterances classified so far
        if not self.manifest.causal:
            log.warning("model %s is bidirectional (future=%d): live labels use past context only and may differ "
                        "from its offline evaluation", self.manifest.name, self.manifest.future)
        self._step = getattr(backend, "step", None)

    def add(self, features: Mapping[str, np.ndarray], speaker: int) -> np.ndarray:
        """Append one utterance and return its (C,) float32 class probabilities.

        ``features[m]``: (d_m,) float32 for every modality of the model; a row of NaN (or a
        missing key) means the modality is absent for this utterance and is masked out.
        """
        self.turns.append(self._row(features), speaker)
        probs = self._classify(self.turns)
        self.count += 1
        return probs

    def peek(self, features: Mapping[str, np.ndarray], speaker: int) -> np.ndarray:
        """(C,) probabilities the utterance would get if it were added now, without adding it
        (a provisional label: the window and the count stay as they are)."""
        probe = self.turns.copy()
        probe.append(self._row(features), speaker)
        return self._classify(probe)

    def relabel(self, mapping: Mapping[int, int]) -> None:
        """Speakers found to be one voice (``{old id: new id}``): the window's utterances are
        re-labelled, so the next graphs see the corrected same/other-speaker relations."""
        self.turns.relabel(mapping)

    def _row(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        row = {}
        for m in self.modalities:
            v = features.get(m)
            if v is None:
                v = np.full(self.dims[m], np.nan, np.float32)
            v = np.asarray(v, np.float32).reshape(-1)
            if v.shape[0] != self.dims[m]:
                raise InputError(f"{m} features are {v.shape[0]}-d but the model expects {self.dims[m]}-d")
            row[m] = v
        return row

    def warm_up(self, calls: int = 12) -> None:
        """Run the backend on dummy windows of every size so the first real utterances do not pay
        for lazy initialisation (the torch backend's first ~10 calls cost ~250 ms each, measured
        with PyG on this CPU; onnxruntime's first call allocates its buffers). State is untouched."""
        probe = ConversationWindow(self.window)
        rng = np.random.default_rng(0)
        for i in range(calls):
            probe.append({m: rng.normal(size=d).astype(np.float32) for m, d in self.dims.items()}, i % 2)
            self._classify(probe)

    def _classify(self, window: ConversationWindow) -> np.ndarray:
        """(C,) probabilities of the newest utterance of ``window``."""
        feats, speakers = window.arrays(self.modalities)
        if self._step is not None:
            return np.asarray(self._step(feats, speakers), np.float32)[-1]
        import torch

        from train.data.corpus import Dialogue

        n = len(speakers)
        d = Dialogue(id=f"live-{self.count}", split="test", speakers=[str(s) for s in speakers],
                     labels=np.full(n, -1, np.int64), features=feats)
        # One thread for this tiny step: with torch's default (all cores) the PyG scatter ops spin
        # on OpenMP barriers while ASR/other work holds the cores -- measured 250-400 ms per step
        # on this loaded 2-core CPU vs ~1 ms single-threaded. Restored after the call.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return np.asarray(self.backend.predict([d])[0], np.float32)[-1]
        finally:
            torch.set_num_threads(threads)

    def run_all(self, features: Mapping[str, np.ndarray], speakers: Sequence[int]) -> np.ndarray:
        """Feed a whole conversation utterance by utterance: (n, C) probabilities as emitted."""
        n = len(speakers)
        return np.stack([self.add({m: np.asarray(f)[i] for m, f in features.items()}, speakers[i]) for i in range(n)])
