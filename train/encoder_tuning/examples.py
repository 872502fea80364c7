"""Training examples of the context-aware text encoder: formatted inputs, labels, epoch batches."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.common import InputError
from train.features.text_context import ContextFormat, format_dialogue


@dataclass
class Examples:
    """One split's encoder inputs. texts: (n,) formatted strings; labels: (n,) int64;
    where: (dialogue id, utterance index) of each."""

    texts: list[str]
    labels: np.ndarray
    where: list[tuple[str, int]]

    def __len__(self) -> int:
        return len(self.texts)


def build_examples(corpus, split: str, fmt: ContextFormat, max_dialogues: int = 0) -> Examples:
    """Formatted inputs and labels of every labelled, non-blank utterance of ``split``."""
    dialogues = corpus.split(split)
    if max_dialogues:
        dialogues = dialogues[:max_dialogues]
    texts, labels, where = [], [], []
    for d in dialogues:
        if d.texts is None:
            raise InputError("fine-tuning the text encoder needs transcripts, but this corpus has none", path=corpus.source or None, dialogue=d.id)
        for i, (text, y) in enumerate(zip(format_dialogue(d.texts, d.speakers, fmt), d.labels)):
            if text is not None and int(y) >= 0:
                texts.append(text)
                labels.append(int(y))
                where.append((d.id, i))
    return Examples(texts, np.asarray(labels, dtype=np.int64), where)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Batches of example indices for one epoch: similar lengths together (little padding),
    batch order shuffled. A function of (seed, epoch) only, so a resumed run sees the same."""
    rng = np.random.default_rng([seed, epoch])
    order = np.lexsort((rng.random(len(lengths)), lengths))  # by length, ties in random order
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
