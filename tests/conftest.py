"""Test-session settings shared by every test module."""
import os

# Before torch is imported anywhere: on a 2-core machine torch's default thread pool made PyG's
# scatter ops 5x slower than one thread (train.bench), and test subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Models ship inside wheels; nothing is fetched from a hub in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
