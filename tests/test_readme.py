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
