"""AR-IIGCN, one module per part: projection, adversarial, rgcn, contrastive, classifier, ariigcn."""
from train.model.ariigcn import ARIIGCN, ModelOutput

__all__ = ["ARIIGCN", "ModelOutput"]
