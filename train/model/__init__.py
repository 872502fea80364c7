"""AR-IIGCN, one module per part: projection, adversarial, rgcn, contrastive, classifier, ariigcn; a seed ensemble of whole models."""
from train.model.ariigcn import ARIIGCN, ModelOutput
from train.model.ensemble import SeedEnsemble, build_model

__all__ = ["ARIIGCN", "ModelOutput", "SeedEnsemble", "build_model"]
