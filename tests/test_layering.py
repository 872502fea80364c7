"""The package structure, checked from the source (AST): one-way floors, no cycles, one
definition of the atomic rename and of the file hash.

Floors: ``runtime -> export -> train``. An import edge is an ``import``/``from`` statement
anywhere in a module (also inside functions), a module name given to ``importlib.import_module``
/ ``importlib.util.find_spec`` / ``__import__``, a ``"package.module:Name"`` registry string, or
any other string constant that names a project module (a plugin list). Logger names and the
commands that error messages advise (``python_m("train.setup_encoders")``) are not imports.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("train", "export", "runtime")
FLOOR = {"train": 0, "export": 1, "runtime": 2}
MODULE_STRING = re.compile(r"^((?:train|export|runtime)(?:\.[A-Za-z_]\w*)*)(?::[A-Za-z_]\w*)?$")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "models" in path.relative_to(ROOT / pkg).parts[:1]:
                continue  # runtime/models holds data, not code
            out[_module_name(path)] = path
    return out


SOURCES = _sources()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in SOURCES.items()}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (not code)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                ids.add(id(body[0].value))
    return ids


def _project_module(name: str) -> str | None:
    """The longest prefix of ``name`` that is a project module, or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in SOURCES:
            return candidate
        parts.pop()
    return None


def _call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Attribute):
        return f.attr
    return f.id if isinstance(f, ast.Name) else ""


def imports_of(module: str) -> dict[str, str]:
    """Project modules ``module`` imports -> how (for messages)."""
    tree = TREES[module]
    is_package = SOURCES[module].name == "__init__.py"
    docstrings = _docstrings(tree)
    # Logger names and commands spelled for advice (train.common.python_m) name modules without importing them.
    logger_args = {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) in ("getLogger", "python_m") for a in n.args}
    found: dict[str, str] = {}

    def add(name: str | None, how: str) -> None:
        target = _project_module(name) if name else None
        if target and target != module:
            found.setdefault(target, how)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, f"import {a.name} (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            for a in node.names:  # "from pkg import submodule" imports the submodule
                add(f"{src}.{a.name}" if f"{src}.{a.name}" in SOURCES else src, f"from {src} import {a.name} (line {node.lineno})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings or id(node) in logger_args:
                continue
            m = MODULE_STRING.match(node.value)
            if m and ("." in node.value or ":" in node.value):
                add(m.group(1), f"string {node.value!r} (line {node.lineno})")
    return found


GRAPH = {m: imports_of(m) for m in SOURCES}


def test_the_walk_sees_every_kind_of_import():
    """The checker itself: a string import, a registry string and a lazy import are edges."""
    assert "train.features.text" in GRAPH["train.features.registry"]  # "train.features.text:MiniLMExtractor"
    assert "train.model" in GRAPH["train.model_dir"]  # imported inside load_model
    assert "export.backends" in GRAPH["runtime.recognizer"]


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_flow_one_way(pkg):
    """No train module imports export or runtime; no export module imports runtime."""
    wrong = [f"{m} -> {t} ({how})" for m, edges in GRAPH.items() if m.split(".")[0] == pkg
             for t, how in edges.items() if FLOOR[t.split(".")[0]] > FLOOR[pkg]]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    """Between modules (every import counted, also those inside functions)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_runtime_reads_nothing_under_tests():
    bad = []
    for m, tree in TREES.items():
        if not m.startswith("runtime"):
            continue
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if re.search(r"(^|/)tests(/|$)", node.value):
                    bad.append(f"{m}: {node.value!r} (line {node.lineno})")
    assert not bad, "\n".join(bad)


def _functions_with(pred) -> set[str]:
    """``module:function`` of every function whose own body has a node satisfying ``pred``."""
    out = set()
    for m, tree in TREES.items():
        def walk(node, owner):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    walk(child, f"{owner}.{child.name}" if owner else child.name)
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{owner}.{child.name}" if owner else child.name)
                else:
                    if pred(child):
                        out.add(f"{m}:{owner or '<module>'}")
                    walk(child, owner)
        walk(tree, "")
    return out


def _is_rename(node) -> bool:
    """os.replace / os.rename / shutil.move, or Path.replace / Path.rename (one argument; str.replace takes two)."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    f = node.func
    if isinstance(f.value, ast.Name) and (f.value.id, f.attr) in {("os", "replace"), ("os", "rename"), ("shutil", "move")}:
        return True
    return f.attr in ("replace", "rename") and len(node.args) == 1 and not node.keywords


def test_rename_into_place_happens_in_three_functions_at_most():
    where = _functions_with(_is_rename)
    assert len(where) <= 3 and all(w.startswith("train.common:") for w in where), sorted(where)


def test_one_file_hash_function():
    """Only train.common.file_sha256 both hashes (hashlib) and reads a file."""
    hashing = _functions_with(lambda n: isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "hashlib")
    reading = _functions_with(lambda n: isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Name) and n.func.id == "open")
        or (isinstance(n.func, ast.Attribute) and n.func.attr in ("read_bytes", "read"))))
    assert hashing & reading == {"train.common:file_sha256"}
