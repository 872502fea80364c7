"""Offline side of the AR-IIGCN emotion recognizer: data, features, model, training, evaluation.

Importing this package must stay cheap and torch-free: the live runtime imports the
torch-free parts (corpus, configs, feature extractors) without pulling in torch.
"""
