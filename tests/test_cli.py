"""The shared command-line front: bad input in one line (exit 2), bugs with their traceback, SIGTERM as Ctrl-C."""

import os
import signal
import subprocess
import sys
import textwrap
import time

_PROGRAM = textwrap.dedent("""
    import os, sys, time
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

    cli.run(main)
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
