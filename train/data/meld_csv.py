"""MELD's own release: ``{train,dev,test}_sent_emo.csv`` (declare-lab/MELD, ``data/MELD/``).

Columns: Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season,
Episode, StartTime, EndTime. Utterances are grouped by Dialogue_ID and ordered by Utterance_ID
(ids may have gaps in the release; duplicates are an error). Dialogue ids follow COSMIC's MELD
pickle so the two sources agree: train = official id, valid = 1039 + dev id, test = 1153 + test id.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from train.data.checks import make_dialogue, n_carved_valid, repair_note
from train.data.corpus import MELD_LABELS, MELD_SENTIMENTS, Corpus, Dialogue
from train.data.text import decode_cp1252
from train.common import InputError

# file-name prefix -> (split, dialogue-id offset in COSMIC's numbering)
SPLIT_FILES = {"train": ("train", 0), "dev": ("valid", 1039), "test": ("test", 1153)}
REQUIRED = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")


def _split_of(path: Path) -> tuple[str, int]:
    name = path.name.lower()
    for prefix, value in SPLIT_FILES.items():
        if name.startswith(prefix):
            return value
    raise InputError("cannot tell the split from the file name; expected train_sent_emo.csv, "
                     "dev_sent_emo.csv or test_sent_emo.csv", path=str(path))


def _read_text(path: Path, notes: list[str]) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path=str(path)) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        notes.append(f"{path.name} is not UTF-8; read as cp1252")
        return decode_cp1252(raw)


def read_csv_file(path: Path, notes: list[str], stats: dict[str, int] | None = None) -> list[Dialogue]:
    """Dialogues of one ``*_sent_emo.csv`` file."""
    split, offset = _split_of(path)
    src = str(path)
    reader = csv.DictReader(io.StringIO(_read_text(path, notes), newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}: not a MELD *_sent_emo.csv", path=src)
    reader.fieldnames = header
    groups: dict[int, dict[int, dict]] = {}
    for line, row in enumerate(reader, start=2):
        try:
            d_id, u_id = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
        except (TypeError, ValueError):
            raise InputError(f"line {line}: Dialogue_ID/Utterance_ID are not integers "
                             f"({row.get('Dialogue_ID')!r}, {row.get('Utterance_ID')!r})", path=src) from None
        utts = groups.setdefault(d_id, {})
        if u_id in utts:
            raise InputError(f"Utterance_ID {u_id} appears twice (line {line})", path=src, dialogue=str(offset + d_id))
        utts[u_id] = row
    dialogues = []
    for d_id, utts in groups.items():
        rows = [utts[u] for u in sorted(utts)]
        did = offset + d_id
        emo, sen = [], []
        for u, r in zip(sorted(utts), rows):
            e, s = (r["Emotion"] or "").strip().lower(), (r["Sentiment"] or "").strip().lower()
            if e not in MELD_LABELS:
                raise InputError(f"unknown emotion {r['Emotion']!r} at Utterance_ID {u}; expected one of "
                                 f"{', '.join(MELD_LABELS)}", path=src, dialogue=str(did))
            if s not in MELD_SENTIMENTS:
                raise InputError(f"unknown sentiment {r['Sentiment']!r} at Utterance_ID {u}; expected one of "
                                 f"{', '.join(MELD_SENTIMENTS)}", path=src, dialogue=str(did))
            emo.append(MELD_LABELS.index(e))
            sen.append(MELD_SENTIMENTS.index(s))
        dialogues.append(make_dialogue(
            did, split, path=src,
            speakers=[(r["Speaker"] or "").strip() for r in rows],
            labels=emo, label_names=MELD_LABELS,
            texts=[r["Utterance"] or "" for r in rows],
            sentiments=sen, sentiment_names=MELD_SENTIMENTS, stats=stats,
        ))
    return dialogues


def read_meld_csv(path: str | Path) -> Corpus:
    """A MELD CSV file, or a directory holding any of train/dev/test ``*_sent_emo.csv``."""
    path = Path(path)
    notes: list[str] = []
    if path.is_dir():
        files = [path / f"{p}_sent_emo.csv" for p in SPLIT_FILES if (path / f"{p}_sent_emo.csv").is_file()]
        if not files:
            raise InputError("directory holds no MELD train/dev/test_sent_emo.csv files", path=str(path))
        absent = [f"{p}_sent_emo.csv" for p in SPLIT_FILES if not (path / f"{p}_sent_emo.csv").is_file()]
        if absent:
            notes.append(f"not in the directory: {', '.join(absent)}")
    else:
        files = [path]
    dialogues = []
    stats: dict[str, int] = {}
    for f in files:
        dialogues.extend(read_csv_file(f, notes, stats))
    notes.extend(repair_note(stats))
    train = [d for d in dialogues if d.split == "train"]
    if train and not any(d.split == "valid" for d in dialogues):
        k = n_carved_valid(len(train))
        for d in train[:k]:
            d.split = "valid"
        notes.append(f"no dev CSV: the first {k} of {len(train)} train dialogues in file order are validation "
                     "(the field's 10% convention)")
    return Corpus(dataset="meld", labels=list(MELD_LABELS), dialogues=dialogues, source=str(path),
                  format="meld-csv", sentiment_labels=list(MELD_SENTIMENTS), notes=notes)
