"""Fine-tuning the context-aware text encoder (CLI: ``python -m train.finetune``), by concept:

- :mod:`.examples`: formatted inputs and labels, epoch batches;
- :mod:`.model`: MiniLM with LoRA on its top layers and the emotion head; the frozen-layer cache;
- :mod:`.checkpoint`: progress and the resumable checkpoint;
- :mod:`.loop`: the training run (:func:`finetune`);
- :mod:`.directory`: the encoder directory it leaves (adapter, encoder.json, metrics, card).
"""
from train.encoder_tuning.examples import Examples, build_examples, epoch_batches
from train.encoder_tuning.loop import RunResult, finetune
from train.encoder_tuning.model import BottomCache, ContextEncoder

__all__ = ["Examples", "build_examples", "epoch_batches", "ContextEncoder", "BottomCache", "finetune", "RunResult"]
