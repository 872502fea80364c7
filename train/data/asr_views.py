"""Training dialogues a second time, as the live ASR heard them (``data.asr_transcripts``).

The live runtime labels what its ASR transcribed, not the corpus's transcripts: on the spoken
IEMOCAP validation dialogues the shipped model scores 64.2 wF1 on the gold transcripts and 57.7 on
the live ones, with the same speakers and utterances (tiny.en, 12-14% WER), so the model has to
cope with misheard words. ``python -m runtime.tools.asr_transcripts`` writes what the runtime's
ASR makes of each training dialogue spoken by espeak-ng (a JSON line per dialogue:
``{"dialogue": id, "texts": [str | null, ...]}``); :func:`add_asr_views` gives each training
dialogue it covers those texts (an utterance without an ASR transcript keeps its gold text), the
same speakers and labels: ``data.asr_mode: replace`` instead of the gold transcripts, ``add`` as
a second copy of the dialogue (``<id>~asr``) beside them. ``data.asr_transcripts`` may name several
files (e.g. the same dialogues spoken by other voices, ``--voices``): each is one more view
(``<id>~asr2``, ...). Validation and test dialogues are never changed: model selection stays on
the gold transcripts.

Measured (IEMOCAP, frozen mpnet, seeds 0-4; "live texts": the offline model on the final
transcripts of a 12-dialogue ``runtime.evaluate_live`` run at 1 s gaps, its speakers, 628 matched
utterances): gold only: validation ensemble 64.22, live texts 57.67; ``add``: 64.00 / 60.56;
``replace``: 64.25 / 61.63.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from train.common import InputError
from train.data.corpus import Corpus

SUFFIX = "~asr"  # id of a dialogue's ASR view beside its gold one ("add"): "<id>~asr"
MODES = ("replace", "add")


def transcript_line(line: str) -> tuple[str, list[str | None]]:
    """(dialogue id, texts) of one line of a transcripts file; ValueError, saying what is wrong
    after "line N", when it is not one."""
    try:
        row = json.loads(line)
        did, texts = str(row["dialogue"]), row["texts"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("is not an ASR transcript line") from None
    if not isinstance(texts, list) or not all(t is None or isinstance(t, str) for t in texts):
        raise ValueError("has texts that are not a list of strings or nulls")
    return did, texts


def read_asr_transcripts(path: str | Path) -> dict[str, list[str | None]]:
    """Dialogue id -> its utterances' ASR transcripts (None: none), from a transcripts file."""
    p = Path(path)
    if not p.is_file():
        raise InputError("ASR transcripts file not found (make it with python -m runtime.tools.asr_transcripts)",
                         path=str(p))
    out: dict[str, list[str | None]] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            did, texts = transcript_line(line)
        except ValueError as e:
            raise InputError(f"line {n} {e}", path=str(p)) from None
        out[did] = texts
    return out


def view_id(dialogue_id: str, k: int) -> str:
    """Id of a dialogue's ``k``-th ASR view (k >= 1) beside another copy: ``<id>~asr``, ``<id>~asr2``, ..."""
    return dialogue_id + SUFFIX + (str(k) if k > 1 else "")


def add_asr_views(corpus: Corpus, paths: str | Path | Sequence[str | Path], mode: str = "replace") -> Corpus:
    """``corpus`` with each training dialogue as the ASR heard it in each transcripts file of
    ``paths`` that covers it (one file: one view, e.g. one pair of voices). ``replace``: the first
    view takes the gold one's place, further views follow as ``<id>~asr2``, ...; ``add``: the gold
    one stays and the views follow as ``<id>~asr``, ``<id>~asr2``, ..."""
    if mode not in MODES:
        raise InputError(f"data.asr_mode must be one of {', '.join(MODES)}, got {mode!r}")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise InputError("data.asr_transcripts is an empty list: name a transcripts file, or leave it null")
    by_id = {d.id: d for d in corpus.dialogues}
    files = [(Path(p), read_asr_transcripts(p)) for p in paths]
    for path, texts in files:
        unknown = [i for i in texts if i not in by_id]
        if unknown:
            raise InputError(f"{len(unknown)} dialogue(s) not in {corpus.source or 'the corpus'}, e.g. {unknown[0]!r}",
                             path=str(path))
        not_train = [i for i in texts if by_id[i].split != "train"]
        if not_train:
            raise InputError(f"transcripts of {len(not_train)} non-training dialogue(s), e.g. {not_train[0]!r} "
                             f"({by_id[not_train[0]].split}): only training dialogues get ASR views", path=str(path))
        wrong = next((i for i, heard in texts.items() if len(heard) != len(by_id[i])), None)
        if wrong is not None:
            raise InputError(f"dialogue {wrong!r} has {len(by_id[wrong])} utterances, its ASR transcripts "
                             f"{len(texts[wrong])}", path=str(path))
    dialogues = []
    for d in corpus.dialogues:
        gold = d.texts or [None] * len(d)
        views = [[h if h is not None else g for h, g in zip(texts[d.id], gold)] for _, texts in files if d.id in texts]
        if not views or mode == "add":
            dialogues.append(d)
        for k, view in enumerate(views, start=1):  # replace: the first view keeps the dialogue's own id
            own = mode == "replace" and k == 1
            dialogues.append(dataclasses.replace(d, id=d.id if own else view_id(d.id, k), texts=view, features={}))
    how = "also appear" if mode == "add" else "appear only"
    notes = [*corpus.notes] + [f"{len(texts)} training dialogues {how} as the live ASR heard them ({path.name})"
                               for path, texts in files]
    return dataclasses.replace(corpus, dialogues=dialogues, notes=notes)
