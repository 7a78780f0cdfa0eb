"""What the suite shares: one XLA compilation cache, the networks a test runs by default, and a way to run a CLI.

The cache is made before JAX is imported (JAX reads its settings from the environment then),
once per run: xdist's workers and every child process a test starts inherit the variables,
so a network compiled by one process is loaded by the next. It is removed at the end.
"""

import dataclasses
import importlib
import os
import shutil
import tempfile

import pytest

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the run's first process (xdist's controller, or the only one)
    _CACHE_MADE_HERE = tempfile.mkdtemp(prefix="canziani-tests-xla-cache-")
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE_MADE_HERE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.2",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
else:
    _CACHE_MADE_HERE = None

import models  # pylint: disable=wrong-import-position  # after the cache's variables

# The smallest network of each family: tests taking a `network` argument run these by default
# and the other networks in the slow set, so every family is covered by the README's command.
FAMILY_REPRESENTATIVES = ("alexnet", "bn_nin", "enet", "googlenet", "vgg16", "resnet18", "inception_v3")
if sorted(models.spec(name).family for name in FAMILY_REPRESENTATIVES) != sorted({models.spec(name).family
                                                                                 for name in models.names()}):
    raise pytest.UsageError("tests/conftest.py: FAMILY_REPRESENTATIVES must name one network of each family")

# Each CLI by its `python -m` name: the module defining its FLAGS and main.
PROGRAMS = {"models": "models.__main__", "measure": "measure.__main__", "measure.cost": "measure.cost.__main__",
            "measure.bench": "measure.bench", "measure.cost.bench": "measure.cost.bench", "train": "train.main",
            "train.bench": "train.bench", "explore": "explore.main", "explore.bench": "explore.bench",
            "explore.task_bench": "explore.task_bench", "measure.predict": "measure.predict.__main__",
            "measure.predict.bench": "measure.predict.bench"}


def pytest_configure(config):
    """Under `-n`, a worker that runs out of tests takes half of another's queue (xdist's worksteal).

    xdist's default (load) hands each worker its tests ahead of time, so near the end one worker
    can idle while the other works through a queue of compiles; an explicit --dist is kept.
    """
    if getattr(config.option, "dist", "no") == "load" and not any(
            arg.startswith("--dist") or arg == "-d" for arg in config.invocation_params.args):
        config.option.dist = "worksteal"


def pytest_unconfigure(config):
    """Removes the run's compilation cache (in the process that made it)."""
    del config
    if _CACHE_MADE_HERE:
        shutil.rmtree(_CACHE_MADE_HERE, ignore_errors=True)


def pytest_generate_tests(metafunc):
    """A test taking `network` runs on each family's representative by default, on all 14 in the slow set.

    `@pytest.mark.networks("resnet152", ...)` names the networks to run by default instead, for a
    test whose defect only the deepest ones show.
    """
    if "network" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("networks")
    by_default = set(marker.args) if marker else set(FAMILY_REPRESENTATIVES)
    metafunc.parametrize("network", [name if name in by_default else pytest.param(name, marks=pytest.mark.slow)
                                     for name in models.names()])


@dataclasses.dataclass
class Finished:
    """A program's exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_program(capsys):
    """Runs a CLI in this process, as `python -m <program> <args>` would: returns a Finished."""
    from core import cli  # pylint: disable=import-outside-toplevel

    def module(program: str):
        return importlib.import_module(PROGRAMS[program])

    def run(program: str, *args: str) -> Finished:
        module = run.module(program)
        capsys.readouterr()
        status = cli.call(module.main, module.FLAGS, [program, *args], safe_stops=getattr(module, "SAFE_STOPS", False))
        out, err = capsys.readouterr()
        return Finished(status, out, err)

    run.module = module  # the module defining a program's FLAGS and main
    return run

