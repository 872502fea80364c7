"""The runtime's embedding API: what ``runtime`` exports, and the README's example uses only that."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API = {"Recognizer", "load_model", "Event", "UtteranceEvent", "FaceEvidence", "SpeakerUpdateEvent", "StatusEvent", "WarningEvent"}


def test_runtime_exports_the_embedding_api_without_torch():
    code = ("import sys, runtime; from runtime import *; "
            "print(sorted(runtime.__all__)); print(callable(Recognizer) and callable(load_model)); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    names, callables, torch = res.stdout.split("\n")[:3]
    assert set(ast.literal_eval(names)) == API and callables == "True" and torch == "False"


SOURCES = {"load_audio", "FileAudioSource", "MicrophoneSource"}  # runtime.audio: what feeds a Recognizer


def test_readme_embedding_examples_use_only_the_exported_names():
    """The README's embedding examples (a file fed in chunks, a microphone loop) import the
    recognizer only from ``runtime``, plus the audio sources that feed it and the standard library."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "from runtime import" in b]
    assert len(blocks) == 2, "two embedding examples in the README: a file in chunks, a microphone"
    for block in blocks:
        imported = set()
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module == "runtime":
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module == "runtime.audio":
                assert {a.name for a in node.names} <= SOURCES, ast.unparse(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                assert isinstance(node, ast.Import) and all(a.name in sys.stdlib_module_names for a in node.names), \
                    ast.unparse(node)
        assert imported and imported <= API
