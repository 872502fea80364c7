"""The encoder being fine-tuned: MiniLM with LoRA on its top layers, an emotion head, and the
cache of its frozen lower layers' outputs.

    text -> tokens (B, T) -> embeddings + frozen layers 0..L-1 (once, no grad) -> h (B, T, 384)
         -> LoRA layers L..5 -> masked mean -> L2 norm -> e (B, 384)
         -> head(e * sqrt(384)) -> logits (B, C)
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train.common import move_into_place
from train.features.text_context import ADAPTER_CONFIG, ADAPTER_WEIGHTS, DIM
from train.finetune_config import EncoderConfig

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HEAD_FILE = "head.safetensors"
HEAD_SCALE = math.sqrt(DIM)  # unit-norm embedding -> per-dimension scale ~1 for the linear head


def _lora_regex(cfg: EncoderConfig) -> str:
    layers = "|".join(str(i) for i in cfg.adapted_layers)
    targets = "|".join(t.replace(".", r"\.") for t in cfg.lora.targets)
    return rf".*encoder\.layer\.({layers})\.({targets})"


class ContextEncoder:
    """MiniLM with LoRA on its top layers and an emotion head, as trained here.

    ``bert``: the LoRA-injected ``BertModel``; ``peft``: its ``PeftModel`` wrapper (saves the
    adapter); ``head``: Linear(384, C); ``tokenizer``: the model's fast tokenizer.
    """

    def __init__(self, cfg: EncoderConfig, n_classes: int, device: str = "cpu"):
        import peft
        import torch

        from train.features.text_context import load_base

        self.cfg = cfg
        self.device = torch.device(device)
        st = load_base(device, cfg.context.max_length)
        self.tokenizer = st.tokenizer
        peft_cfg = peft.LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=_lora_regex(cfg),
            bias="none",
        )
        self.peft = peft.get_peft_model(st[0].auto_model, peft_cfg)  # freezes all but the LoRA matrices
        self.peft.peft_config["default"].base_model_name_or_path = BASE_MODEL  # not this machine's path
        self.bert = self.peft.get_base_model()
        self.head = torch.nn.Linear(DIM, n_classes).to(self.device)
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

    def bottom(self, ids, mask):
        """Frozen part: embeddings + layers below the first adapted one. (B, T) -> (B, T, 384)."""
        import torch

        with torch.no_grad():
            h = self.bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
            m4 = self._mask4d(h, mask)
            for layer in self.bert.encoder.layer[: self.first_adapted]:
                h = layer(h, m4)
        return h

    def top(self, h, mask):
        """Adapted layers, masked mean, L2 norm: (B, T, 384), (B, T) -> (B, 384)."""
        import torch.nn.functional as F

        m4 = self._mask4d(h, mask)
        for layer in self.bert.encoder.layer[self.first_adapted :]:
            h = layer(h, m4)
        m = mask.unsqueeze(-1).to(h.dtype)
        emb = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(emb, p=2.0, dim=1)

    def embed(self, texts: Sequence[str]):
        """Sentence embeddings through the whole model, as the extractor computes them: (B, 384)."""
        ids, mask = self.tokenize(texts)
        return self.top(self.bottom(ids, mask), mask)

    def logits(self, emb):
        """(B, 384) -> (B, C)."""
        return self.head(emb * HEAD_SCALE)

    # -- saving
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
    """Outputs of the frozen layers for every example, unpadded: list of (L_i, 384) float32.

    Valid because those layers never change and the input of each example is fixed; padding
    does not change the unpadded positions (masked attention).
    """

    def __init__(self, model: ContextEncoder, texts: Sequence[str], desc: str, progress: bool = True, batch_size: int = 64):
        import torch
        from tqdm.auto import tqdm

        self.states: list[Any] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        model.train(False)
        with tqdm(total=len(texts), desc=desc, unit="utt", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask = model.tokenize([texts[i] for i in idx])
                h = model.bottom(ids, mask)
                lengths = mask.sum(1).tolist()
                for row, i in enumerate(idx):
                    self.states[i] = h[row, : lengths[row]].clone()
                bar.update(len(idx))
        self.lengths = np.asarray([s.shape[0] for s in self.states], dtype=np.int64)
        self._torch = torch

    def batch(self, idx: Sequence[int]):
        """(h, mask): (B, T, 384) float32 zero-padded, (B, T) int64."""
        torch = self._torch
        seqs = [self.states[i] for i in idx]
        h = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        mask = torch.zeros(h.shape[:2], dtype=torch.long, device=h.device)
        for row, s in enumerate(seqs):
            mask[row, : s.shape[0]] = 1
        return h, mask
