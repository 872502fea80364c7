"""The README's two commands are what users and CI run: keep them and .ci/run in step."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(readme: str) -> list[str]:
    """Lines of ```bash blocks in the README's 'Quick start' section."""
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines, inside = [], False
    for line in section.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    return lines


def test_ci_runs_the_readme_test_command():
    commands = _commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) == 2, commands
    test_command = commands[1]
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines(), f".ci/run does not run the README test command {test_command!r}"


def test_setup_installs_the_cpu_torch_wheel_first():
    setup = (ROOT / ".ci" / "setup.sh").read_text(encoding="utf-8")
    assert setup.index("torch==2.13.0") < setup.index('pip install -q -e ".[')


def test_setup_keeps_stdout_for_the_command_after_it():
    """The quick start is `bash .ci/setup.sh && .venv/bin/python -m runtime.live --demo --events -`:
    whatever set-up prints on stdout lands in the JSONL stream. train.setup_encoders printed its
    report there ("all-mpnet-base-v2: ~/.cache/... (0.5 s)" before the first event). Every project
    command set-up runs sends its stdout to stderr or /dev/null (or is captured by $(...))."""
    setup = (ROOT / ".ci" / "setup.sh").read_text(encoding="utf-8")
    runs = [l.split(" #", 1)[0] for l in setup.splitlines() if ".venv/bin/python -m " in l and not l.lstrip().startswith("#")]
    assert len(runs) >= 2
    loud = [l.strip() for l in runs if not (">&2" in l or ">/dev/null" in l or "$(.venv/bin/python -m" in l)]
    assert not loud, f"set-up commands printing on stdout: {loud}"

# -- every command in the README runs when pasted (issue #13 item 2) --------------------------------

import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

# Flags whose value must be an existing path (outputs are made by the command itself).
INPUT_FLAGS = ("--config", "--data", "--video", "--audio", "--export")


def _blocks(readme: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", readme, flags=re.S)


def _bash_commands(readme: str) -> list[list[str]]:
    """Each command of every ```bash block, as argv (comments dropped, `a && b` split)."""
    out = []
    for block in _blocks(readme, "bash"):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            for part in line.split("&&"):
                out.append(shlex.split(part))
    return out


def test_readme_commands_use_the_projects_interpreter():
    """A bare `python` is not the project's interpreter (it died with "No module named 'cv2'")."""
    commands = _bash_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) > 20
    for argv in commands:
        tool = next(a for a in argv if not re.match(r"^[A-Z_][A-Z0-9_]*=", a))  # after VAR=value assignments
        assert tool in ("bash", "xvfb-run", "export") or tool.startswith(".venv/bin/"), \
            f"not runnable when pasted: {' '.join(argv)}"


def test_readme_inline_commands_use_the_projects_interpreter():
    """Commands quoted in the prose are pasted too: the `jq` filter for final labels was written
    with a bare `python -m runtime.live ...`, which is not the project's interpreter."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", "", readme, flags=re.S)
    spans = re.findall(r"`([^`]+)`", prose)
    assert any(s.startswith(".venv/bin/python -m ") for s in spans)
    bare = [s for s in spans if re.match(r"(?:[A-Z_]+=\S+\s+)*python3?\s", s) or re.search(r"[|;&]\s*python3?\s", s)]
    assert not bare, f"not runnable when pasted: {bare}"


def _module_and_args(argv: list[str]) -> tuple[str, list[str]] | None:
    if "-m" not in argv or not any(a.startswith(".venv/bin/") for a in argv):
        return None
    i = argv.index("-m")
    return argv[i + 1], argv[i + 2:]


def test_readme_commands_name_real_modules_flags_and_files():
    """Each `.venv/bin/python -m MODULE ...` names a module that exists, flags its --help lists,
    and input files that exist (the shared data only where it is present)."""
    commands = [c for c in map(_module_and_args, _bash_commands((ROOT / "README.md").read_text(encoding="utf-8"))) if c]
    helps: dict[str, str] = {}

    def help_of(*command: str) -> str:
        if command not in helps:
            r = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            assert r.returncode == 0, f"{' '.join(command)} --help: {r.stderr[-1000:]}"
            helps[command] = r.stdout
        return helps[command]

    made = set()  # what earlier commands write (--out): later commands may read it
    for module, args in commands:
        if module == "pytest":
            continue
        made |= {value for flag, value in zip(args, args[1:]) if flag == "--out"}
        text = help_of(module)
        subcommands = re.search(r"\{([\w,-]+)\}", text.split("\n\n")[0])
        if args and subcommands and args[0] in subcommands.group(1).split(","):
            text = help_of(module, args[0])
        for a in args:
            if a.startswith("--"):
                assert a.split("=")[0] in text, f"python -m {module}: --help does not list {a}"
        for flag, value in zip(args, args[1:]):
            written = any(value == m or value.startswith(m.rstrip("/") + "/") for m in made)  # or inside it
            if flag in INPUT_FLAGS and not value.startswith("../shared") and not written:
                assert (ROOT / value).exists(), f"python -m {module} {flag} {value}: no such file here"
    assert {("runtime.live",), ("train",), ("export",), ("train.evaluate",)} <= set(helps)


@pytest.mark.skipif(not (ROOT / "runtime" / "models" / "iemocap" / "export" / "manifest.json").is_file(),
                    reason="the shipped model's ONNX export is made by bash .ci/setup.sh")
def test_readme_embedding_example_runs_as_pasted(tmp_path):
    """The README's first Python example (a file fed in chunks) runs as written and prints the
    demo's utterances; it must end by itself (the old docstring usage hung forever)."""
    code = _blocks((ROOT / "README.md").read_text(encoding="utf-8"), "python")[0]
    assert "push_audio" in code and "load_audio" in code
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 8, r.stdout  # the demo's 8 utterances: "speaker emotion text"
    assert {l.split()[0] for l in lines} == {"0", "1"}


MIC_STAND_IN = """
import os, signal, sys, threading
from runtime.audio import load_audio
from runtime.bench_faults import SimulatedMicrophone

class Microphone(SimulatedMicrophone):  # the demo's audio in real time, then Ctrl-C 9 s after the stream opens
    def InputStream(self, **kw):
        if self.t0 is None:
            threading.Timer(9.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        return super().InputStream(**kw)

sys.modules["sounddevice"] = Microphone(load_audio("runtime/demo/demo.mp4"), 1e9, 1e9, False)
"""


def test_readme_microphone_example_runs_as_pasted():
    """The README's microphone loop, as written, on a stand-in for the sounddevice module that
    delivers the demo in real time (runtime.bench_faults); Ctrl-C after 9 s, as a person would
    stop it: the example returns, having printed the labels of what was said."""
    code = _blocks((ROOT / "README.md").read_text(encoding="utf-8"), "python")[1]
    assert "MicrophoneSource" in code and "KeyboardInterrupt" in code
    r = subprocess.run([sys.executable, "-c", MIC_STAND_IN + code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    finals = [l for l in r.stdout.splitlines() if l.strip() and not l.rstrip().endswith("(provisional)")]
    # said in the first 9 s: utterances 0 and 1 whole, utterance 2 (from 7.7 s) in part
    assert len(finals) in (2, 3), r.stdout
    assert finals[0].split()[0] == "0" and "job" in finals[0] and finals[1].split()[0] == "1", r.stdout
