"""The encoder being fine-tuned: MiniLM or mpnet with LoRA on its top layers, an emotion head,
and the cache of its frozen lower layers' outputs (D = 384 for MiniLM, 768 for mpnet; N layers = 6 / 12).

    text -> tokens (B, T) -> embeddings + frozen layers 0..L-1 (once, no grad) -> h (B, T, D)
         -> LoRA layers L..N-1 -> masked mean -> L2 norm -> e (B, D)
         -> head(e * sqrt(D)) -> logits (B, C)
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train.common import move_into_place
from train.features.text_context import ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_FILE, get_base
from train.finetune_config import EncoderConfig



def _lora_regex(cfg: EncoderConfig) -> str:
    layers = "|".join(str(i) for i in cfg.adapted_layers)
    targets = "|".join(t.replace(".", r"\.") for t in cfg.lora_targets)
    return rf".*encoder\.layer\.({layers})\.({targets})"


class ContextEncoder:
    """The base encoder (``cfg.base``) with LoRA on its top layers and an emotion head, as trained here.

    ``bert``: the LoRA-injected ``BertModel`` or ``MPNetModel``; ``peft``: its ``PeftModel``
    wrapper (saves the adapter); ``head``: Linear(D, C); ``tokenizer``: the model's fast tokenizer.
    """

    def __init__(self, cfg: EncoderConfig, n_classes: int, device: str = "cpu"):
        import peft
        import torch

        from train.features.text_context import load_base

        self.cfg = cfg
        self.base = get_base(cfg.base)
        self.dim = self.base.dim
        self.head_scale = math.sqrt(self.dim)  # unit-norm embedding -> per-dimension scale ~1 for the linear head
        self.device = torch.device(device)
        st = load_base(device, cfg.context.max_length, self.base.key)
        self.tokenizer = st.tokenizer
        peft_cfg = peft.LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=_lora_regex(cfg),
            bias="none",
        )
        self.peft = peft.get_peft_model(st[0].auto_model, peft_cfg)  # freezes all but the LoRA matrices
        self.peft.peft_config["default"].base_model_name_or_path = self.base.model  # not this machine's path
        self.bert = self.peft.get_base_model()
        self.head = torch.nn.Linear(self.dim, n_classes).to(self.device)
        self._mpnet = hasattr(self.bert.encoder, "compute_position_bias")  # MPNet's relative position bias
        self.first_adapted = cfg.adapted_layers[0]

    # -- parameters
    def trainable(self) -> dict[str, Any]:
        """Name -> parameter of everything that trains (LoRA matrices, then the head)."""
        out = {f"encoder.{n}": p for n, p in self.bert.named_parameters() if p.requires_grad}
        out.update({f"head.{n}": p for n, p in self.head.named_parameters()})
        return out

    def train(self, mode: bool = True) -> None:
        self.bert.train(mode)
        self.head.train(mode)

    # -- forward pieces
    def tokenize(self, texts: Sequence[str]):
        """(ids, mask): (B, T) int64 each, padded to the longest, truncated at max_length."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.cfg.context.max_length, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _mask4d(self, h, mask):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.bert.config, inputs_embeds=h, attention_mask=mask)

    def _layers(self, h, mask, layers):
        """Run transformer ``layers`` on (B, T, D) states with the (B, T) padding mask."""
        m4 = self._mask4d(h, mask)
        if self._mpnet:  # the relative position bias depends on T only, so cached states stay valid
            bias = self.bert.encoder.compute_position_bias(h)
            for layer in layers:
                h = layer(h, m4, bias)[0]
        else:
            for layer in layers:
                h = layer(h, m4)
        return h

    def bottom(self, ids, mask):
        """Frozen part: embeddings + layers below the first adapted one. (B, T) -> (B, T, D)."""
        import torch

        with torch.no_grad():
            # MPNet numbers positions from the ids (padding excluded), BERT from 0: right padding
            # leaves every real token's position unchanged in both
            extra = {} if self._mpnet else {"token_type_ids": torch.zeros_like(ids)}
            h = self.bert.embeddings(input_ids=ids, **extra)
            h = self._layers(h, mask, self.bert.encoder.layer[: self.first_adapted])
        return h

    def top(self, h, mask):
        """Adapted layers, masked mean, L2 norm: (B, T, D), (B, T) -> (B, D)."""
        import torch.nn.functional as F

        h = self._layers(h, mask, self.bert.encoder.layer[self.first_adapted :])
        m = mask.unsqueeze(-1).to(h.dtype)
        emb = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(emb, p=2.0, dim=1)

    def embed(self, texts: Sequence[str]):
        """Sentence embeddings through the whole model, as the extractor computes them: (B, D)."""
        ids, mask = self.tokenize(texts)
        return self.top(self.bottom(ids, mask), mask)

    def logits(self, emb):
        """(B, D) -> (B, C)."""
        return self.head(emb * self.head_scale)

    # -- saving and loading
    def load_adapter(self, adapter_dir: Path) -> None:
        """Load the LoRA matrices and the head that :meth:`save_adapter` wrote into ``adapter_dir``."""
        import peft
        import torch
        from safetensors.torch import load_file

        peft.set_peft_model_state_dict(self.peft, load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS)))
        head = load_file(str(Path(adapter_dir) / HEAD_FILE))
        with torch.no_grad():
            self.head.weight.copy_(head["weight"])
            self.head.bias.copy_(head["bias"])

    def save_adapter(self, out_dir: Path) -> None:
        """adapter_config.json + adapter_model.safetensors (peft's layout) and head.safetensors."""
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".adapter-") as tmp:
            self.peft.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
            save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, str(Path(tmp) / HEAD_FILE))
            for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_FILE):
                move_into_place(Path(tmp) / f, out_dir / f)


class BottomCache:
    """Outputs of the frozen layers for every example, unpadded: ``states[i]`` is (L_i, D) float32.

    Valid because those layers never change and the input of each example is fixed; padding
    does not change the unpadded positions (masked attention; positions count real tokens only).

    ``store``: a directory where the states are kept in shards of :data:`SHARD` examples
    (safetensors), each written atomically as it is finished: a run stopped while building
    resumes with the shards it has, and runs that share the base, the frozen layers, the token
    limit and the texts (cross-fitting folds, other settings) share the states. The shards live
    in ``store/<key>/``, the key hashing all of those.
    """

    SHARD = 1024

    def __init__(self, model: ContextEncoder, texts: Sequence[str], desc: str, progress: bool = True, batch_size: int = 64,
                 store: Path | None = None):
        import torch
        from tqdm.auto import tqdm

        self._torch = torch
        self.states: list[Any] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        where = Path(store) / self.key(model, texts) if store is not None else None
        shards = [order[i : i + self.SHARD] for i in range(0, len(order), self.SHARD)]
        model.train(False)
        with tqdm(total=len(texts), desc=desc, unit="utt", disable=not progress) as bar:
            for n, shard in enumerate(shards):
                path = where / f"shard-{n:05d}.safetensors" if where is not None else None
                if path is not None and path.is_file() and self._load_shard(path, shard):
                    bar.update(len(shard))
                    continue
                for start in range(0, len(shard), batch_size):
                    idx = shard[start : start + batch_size]
                    ids, mask = model.tokenize([texts[i] for i in idx])
                    h = model.bottom(ids, mask)
                    lengths = mask.sum(1).tolist()
                    for row, i in enumerate(idx):
                        self.states[i] = h[row, : lengths[row]].clone()
                    bar.update(len(idx))
                if path is not None:
                    self._save_shard(path, shard)
        self.lengths = np.asarray([s.shape[0] for s in self.states], dtype=np.int64)

    @staticmethod
    def key(model: ContextEncoder, texts: Sequence[str]) -> str:
        """What the states depend on: base identity, frozen layers, token limit, texts -> 16 hex digits."""
        import hashlib
        import json

        h = hashlib.sha256(json.dumps({"base": model.base.identity().version, "frozen_layers": model.first_adapted,
                                       "max_length": model.cfg.context.max_length}, sort_keys=True).encode())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()[:16]

    def _save_shard(self, path: Path, shard: Sequence[int]) -> None:
        from safetensors.torch import save_file

        from train.common import atomic_file

        torch = self._torch
        lengths = torch.tensor([self.states[i].shape[0] for i in shard], dtype=torch.int64)
        flat = torch.cat([self.states[i] for i in shard]).contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            save_file({"states": flat, "index": torch.tensor(list(shard), dtype=torch.int64), "lengths": lengths}, str(tmp))

    def _load_shard(self, path: Path, shard: Sequence[int]) -> bool:
        """Fill the shard's states from ``path``; False (recompute) when it holds other examples."""
        from safetensors.torch import load_file

        z = load_file(str(path))
        if z["index"].tolist() != list(shard):
            return False
        for i, part in zip(shard, z["states"].split(z["lengths"].tolist())):
            self.states[i] = part
        return True

    def subset(self, idx: Sequence[int]) -> "BottomCache":
        """The cache of examples ``idx`` (in that order), sharing the tensors."""
        out = object.__new__(BottomCache)
        out._torch = self._torch
        out.states = [self.states[i] for i in idx]
        out.lengths = self.lengths[np.asarray(idx, dtype=np.int64)] if len(idx) else np.zeros(0, np.int64)
        return out

    def __len__(self) -> int:
        return len(self.states)

    def batch(self, idx: Sequence[int]):
        """(h, mask): (B, T, D) float32 zero-padded, (B, T) int64."""
        torch = self._torch
        seqs = [self.states[i] for i in idx]
        h = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        mask = torch.zeros(h.shape[:2], dtype=torch.long, device=h.device)
        for row, s in enumerate(seqs):
            mask[row, : s.shape[0]] = 1
        return h, mask


class CachedLayersExtractor:
    """A feature extractor (:class:`train.features.base.FeatureExtractor`) with the identity of the
    encoder directory ``encoder_dir`` that runs only the adapted layers on inputs whose frozen
    states ``cache`` holds (the full model for any other input): the fine-tuner writes the
    finished encoder's features of a corpus with it. ``model`` carries that encoder's adapter."""

    modality = "text"

    def __init__(self, model: ContextEncoder, encoder_dir: Path, cache: BottomCache, texts: Sequence[str], batch_size: int = 128):
        from train.features.text_context import encoder_identity

        self.model = model
        self.identity = encoder_identity(encoder_dir)
        self.context_turns = model.cfg.context.turns
        self.batch_size = batch_size
        self._cache = cache
        self._row = {t: i for i, t in enumerate(texts)}

    def extract(self, items) -> np.ndarray:
        """(len(items), D) float32; NaN rows for blank transcripts."""
        import torch

        from train.features.text_context import format_input

        texts = [format_input(it, self.model.cfg.context) for it in items]
        out = np.full((len(items), self.model.dim), np.nan, dtype=np.float32)
        self.model.train(False)
        cached = [i for i, t in enumerate(texts) if t is not None and t in self._row]
        other = [i for i, t in enumerate(texts) if t is not None and t not in self._row]
        with torch.no_grad():
            for start in range(0, len(cached), self.batch_size):
                idx = cached[start : start + self.batch_size]
                h, mask = self._cache.batch([self._row[texts[i]] for i in idx])
                out[idx] = self.model.top(h, mask).cpu().numpy()
            for start in range(0, len(other), self.batch_size):
                idx = other[start : start + self.batch_size]
                out[idx] = self.model.embed([texts[i] for i in idx]).cpu().numpy()
        return out
