"""README.md's commands run as written after its two quickstart commands (relative paths included)."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).parents[1] / "README.md"
VENV_PYTHON = ".venv/bin/python"


def _commands() -> list[str]:
    """Every command of README's `sh` blocks and `$ ` examples, continuation lines joined, comments dropped."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        commands += [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]
    commands += re.findall(r"^\$ (.+)$", text, flags=re.M)
    return commands


def test_every_command_runs_in_the_quickstart_environment():
    commands = _commands()
    assert len(commands) >= 8
    for command in commands:
        for part in command.split("&&"):
            program = part.split()[0]
            assert program in ("python3", ".venv/bin/pip", VENV_PYTHON), command  # never a bare python or pip


@pytest.mark.slow
def test_the_digits_training_example_trains_and_resumes_in_a_relative_work_directory(tmp_path):
    """The README's offline example as written: orbax needs absolute paths, the user gives a relative one."""
    command = next(c for c in _commands() if "-m train" in c and "--dataset=digits" in c)
    argv = [sys.executable if word == VENV_PYTHON else word for word in shlex.split(command)]
    assert any(word.startswith("--workdir=") and not os.path.isabs(word.split("=", 1)[1]) for word in argv)
    trained = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    workdir = tmp_path / next(w.split("=", 1)[1] for w in argv if w.startswith("--workdir="))
    steps = sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())
    assert steps and not [name for name in os.listdir(workdir / "checkpoints") if "tmp" in name]
    top1 = float(re.search(r"done: .* top-1 ([\d.]+) %", trained.stdout).group(1))
    assert top1 >= 90, trained.stdout  # README promises about 97 %
    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and f"resumed at step {steps[-1]}" in again.stdout, again.stderr
