"""The shared command-line front: bad input in one line (exit 2), bugs with their traceback, SIGTERM as Ctrl-C;
every CLI in-process and once as a real process."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

_PROGRAM = textwrap.dedent("""
    import os, sys, time
    from absl import flags
    from core import cli
    from core.errors import UserError

    def main(argv):
        if os.environ["KIND"] == "user":
            raise UserError("--thing is bad; use --thing=good")
        if os.environ["KIND"] == "bug":
            raise ValueError("an internal invariant broke")
        try:
            print("working", flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            print("stopped cleanly", flush=True)
            sys.exit(3)

    cli.run(main, flags.FlagValues())
""")


def _run(kind: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KIND": kind})


def test_bad_input_is_one_line_and_exit_2():
    result = _run("user")
    assert result.returncode == 2 and result.stderr == "error: --thing is bad; use --thing=good\n"


def test_a_bug_keeps_its_traceback():
    result = _run("bug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "ValueError: an internal invariant broke" in result.stderr


def test_sigterm_stops_the_program_as_ctrl_c_does():
    child = subprocess.Popen([sys.executable, "-c", _PROGRAM], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "KIND": "work"})
    assert child.stdout.readline() == "working\n"
    time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 3 and child.stdout.read() == "stopped cleanly\n"


PROGRAMS = ("models", "measure", "measure.cost", "measure.bench", "measure.cost.bench", "train", "train.bench",
            "explore", "explore.bench")


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_flag_has_a_one_line_help_that_help_lists(run_program, program):
    module = run_program.module(program)
    own = module.FLAGS.flags_by_module_dict()[module.__name__]
    assert own, program
    listed = run_program(program, "--help")
    assert listed.returncode == 0 and listed.stderr == ""
    for flag in own:
        assert f"--{flag.name}:" in listed.stdout or f"--[no]{flag.name}:" in listed.stdout, flag.name
        assert flag.help and "\n" not in flag.help and flag.help.rstrip().endswith((".", ")")), flag.name


@pytest.mark.parametrize("program", PROGRAMS)
def test_each_cli_as_a_process_refuses_a_bad_flag_in_one_line_with_exit_2(program):
    child = subprocess.run([sys.executable, "-m", program, "--no_such_flag=1"], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 2 and child.stdout == ""
    assert child.stderr == "error: Unknown command line flag 'no_such_flag' (see --help)\n", child.stderr


def test_a_cli_called_twice_in_one_process_starts_from_the_defaults(run_program):
    first = run_program("measure.cost", "--model=enet", "--batch_size=4", "--json")
    assert first.returncode == 0 and json.loads(first.stdout)["batch_size"] == 4
    again = run_program("measure.cost", "--model=enet", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["batch_size"] == 1
