"""The runtime's embedding API: what ``runtime`` exports, and the README's example uses only that."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API = {"Recognizer", "load_model", "Event", "UtteranceEvent", "StatusEvent", "WarningEvent"}


def test_runtime_exports_the_embedding_api_without_torch():
    code = ("import sys, runtime; from runtime import *; "
            "print(sorted(runtime.__all__)); print(callable(Recognizer) and callable(load_model)); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    names, callables, torch = res.stdout.split("\n")[:3]
    assert set(ast.literal_eval(names)) == API and callables == "True" and torch == "False"


def test_readme_embedding_example_uses_only_the_exported_names():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "from runtime import" in b]
    assert len(blocks) == 1, "one embedding example in the README"
    tree = ast.parse(blocks[0])
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert isinstance(node, ast.ImportFrom) and node.module == "runtime", ast.unparse(node)
            imported |= {a.name for a in node.names}
    assert imported and imported <= API
