"""Command-line helpers for test and demo material and for benchmarks.

* ``python -m runtime.tools.make_speech --out DIR`` -- two-voice espeak-ng conversation + script;
* :mod:`runtime.tools.media` -- write a video file with a sound track (PyAV);
* ``python -m runtime.tools.bench_stages`` -- VAD / ASR / speaker-embedding cost on this machine.
"""
