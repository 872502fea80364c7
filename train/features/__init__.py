"""Per-utterance feature extractors shared by offline extraction and the live runtime.

One definition each: ``train.extract`` runs them over a corpus, the live runtime calls the same
class utterance by utterance. Modules here must not import torch at import time.
"""
