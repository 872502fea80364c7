"""Extracted features on disk: one ``.npz`` per (corpus, extractor), keyed by dialogue and utterance.

Layout (read with ``np.load(path, allow_pickle=False)``; nothing is ever pickled)::

    <dialogue id>            (n, dim) float32   features of the dialogue's n utterances, NaN row = none
    __keys__/<dialogue id>   (n,) str           per-utterance content hash (text, or media + span)
    __meta__                 () str             JSON: format, extractor identity, dialogue order, notes

A row is reused when the extractor identity is the same and its content hash is found in the old
file (under any dialogue: the hash covers everything the output depends on), so editing one
sentence recomputes one row. Files are written to a temporary file and renamed into place, so a
crash never leaves a half-written cache.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from train.common import InputError, atomic_file
from train.features.base import ExtractorIdentity

FORMAT = "ariigcn-features/1"
META_KEY = "__meta__"
KEYS_PREFIX = "__keys__/"


def content_key(*parts: Any) -> str:
    """16-hex-digit sha256 of ``parts`` (str() of each, NUL-separated): one utterance's cache key."""
    h = hashlib.sha256("\0".join(str(p) for p in parts).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


@dataclass
class FeatureFile:
    """Features of one corpus by one extractor.

    features: dialogue id -> (n, dim) float32; keys: dialogue id -> n content hashes (same order);
    meta: free JSON-able facts (dataset, source file) kept in the file.
    """

    identity: ExtractorIdentity
    features: dict[str, np.ndarray] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(k) for k in self.keys.values())

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (:func:`train.common.atomic_file`)."""
        path = Path(path)
        for did in self.features:
            if did.startswith("__"):
                raise InputError(f"dialogue id {did!r} starts with '__', which the feature file reserves", path=str(path))
            if self.features[did].shape != (len(self.keys[did]), self.identity.dim):
                raise ValueError(f"dialogue {did!r}: features {self.features[did].shape} vs {len(self.keys[did])} keys, dim {self.identity.dim}")
        meta = {"format": FORMAT, "identity": self.identity.to_dict(), "dialogues": list(self.features), **self.meta}
        arrays: dict[str, np.ndarray] = {META_KEY: np.array(json.dumps(meta))}
        for did, feats in self.features.items():
            arrays[did] = np.ascontiguousarray(feats, dtype=np.float32)
            arrays[KEYS_PREFIX + did] = np.array(self.keys[did], dtype="<U16").reshape(-1)
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureFile":
        """Read a file written by :meth:`save`; anything else is an :class:`InputError`."""
        path = Path(path)
        if not path.is_file():
            raise InputError("feature file not found", path=str(path))
        try:
            with np.load(path, allow_pickle=False) as z:
                if META_KEY not in z.files:
                    raise InputError("not a feature file written by train.extract (no __meta__)", path=str(path))
                meta = json.loads(str(z[META_KEY]))
                if meta.get("format") != FORMAT:
                    raise InputError(f"unsupported feature file format {meta.get('format')!r} (expected {FORMAT})", path=str(path))
                identity = ExtractorIdentity(**meta.pop("identity"))
                order = meta.pop("dialogues")
                meta.pop("format")
                out = cls(identity=identity, meta=meta)
                for did in order:
                    feats = z[did]
                    keys = [str(k) for k in z[KEYS_PREFIX + did].tolist()]
                    if feats.ndim != 2 or feats.shape != (len(keys), identity.dim) or feats.dtype != np.float32:
                        raise InputError(f"features {feats.shape} {feats.dtype} do not match {len(keys)} utterances x {identity.dim}", path=str(path), dialogue=did)
                    out.features[did] = feats
                    out.keys[did] = keys
                return out
        except InputError:
            raise
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            raise InputError(f"not a readable feature file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", path=str(path)) from None


@dataclass
class ReusePlan:
    """Rows to fill: ``features`` pre-filled where reused, ``pending`` = (dialogue id, row) to compute."""

    features: dict[str, np.ndarray]
    pending: list[tuple[str, int]]
    reused: int
    total: int


def plan_reuse(old: FeatureFile | None, identity: ExtractorIdentity, wanted: Mapping[str, Sequence[str]]) -> ReusePlan:
    """Match the utterances ``wanted`` (dialogue id -> content keys) against ``old``.

    ``old`` counts only when its identity equals ``identity``; rows whose key it holds are
    copied, the rest are listed in ``pending`` (their rows are NaN until computed).
    """
    lookup: dict[str, np.ndarray] = {}
    if old is not None and old.identity == identity:
        for did, keys in old.keys.items():
            feats = old.features[did]
            for row, key in enumerate(keys):
                lookup.setdefault(key, feats[row])
    features: dict[str, np.ndarray] = {}
    pending: list[tuple[str, int]] = []
    reused = total = 0
    for did, keys in wanted.items():
        arr = np.full((len(keys), identity.dim), np.nan, dtype=np.float32)
        for row, key in enumerate(keys):
            hit = lookup.get(key)
            if hit is None:
                pending.append((did, row))
            else:
                arr[row] = hit
                reused += 1
        total += len(keys)
        features[did] = arr
    return ReusePlan(features=features, pending=pending, reused=reused, total=total)
