"""A corpus summary as a dict (the CLI's JSON) and as text."""
from __future__ import annotations

from collections import Counter
from typing import Any

from train.data.corpus import SPLITS, Corpus

SPEAKER_EXAMPLES = 8


def summarize(corpus: Corpus) -> dict[str, Any]:
    """Summary dict: dataset, labels, per-split dialogues/utterances/label counts, modalities, speakers, notes."""
    splits: dict[str, Any] = {}
    for s in SPLITS:
        ds = corpus.split(s)
        counts = Counter(int(x) for d in ds for x in d.labels)
        splits[s] = {
            "dialogues": len(ds),
            "utterances": sum(len(d) for d in ds),
            "label_counts": {name: counts.get(i, 0) for i, name in enumerate(corpus.labels)},
        }
    speakers = corpus.speakers
    return {
        "source": corpus.source,
        "format": corpus.format,
        "dataset": corpus.dataset,
        "labels": list(corpus.labels),
        "sentiment_labels": list(corpus.sentiment_labels) if corpus.sentiment_labels else None,
        "splits": splits,
        "modalities": corpus.modalities,
        "has_text": all(d.texts is not None for d in corpus.dialogues),
        "speakers": {"count": len(speakers), "examples": speakers[:SPEAKER_EXAMPLES]},
        "notes": list(corpus.notes),
    }


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable form of :func:`summarize`'s dict."""
    lines = [
        f"source:     {s['source']}",
        f"dataset:    {s['dataset']} (format: {s['format']})",
        f"labels:     {', '.join(f'{i} {n}' for i, n in enumerate(s['labels']))}",
    ]
    if s["sentiment_labels"]:
        lines.append(f"sentiment:  {', '.join(f'{i} {n}' for i, n in enumerate(s['sentiment_labels']))}")
    lines.append(f"{'split':<8}{'dialogues':>11}{'utterances':>12}")
    for name, v in s["splits"].items():
        lines.append(f"{name:<8}{v['dialogues']:>11}{v['utterances']:>12}")
    mods = s["modalities"]
    lines.append("modalities: " + (", ".join(f"{m} {d}-d" for m, d in mods.items()) if mods
                                   else "none (no feature vectors in the file)"))
    lines.append(f"text:       {'yes' if s['has_text'] else 'no'}")
    sp = s["speakers"]
    more = ", ..." if sp["count"] > len(sp["examples"]) else ""
    lines.append(f"speakers:   {sp['count']} ({', '.join(sp['examples'])}{more})")
    if s["notes"]:
        lines.append("notes:")
        lines.extend(f"  - {n}" for n in s["notes"])
    return "\n".join(lines)
