"""Executes the lessons and writes their HTML pages: `python -m lessons [NAME ...]` (e.g. 01_costs, or costs).

Each lesson (`lessons/NN_name.py`, jupytext's py:percent format) is converted to a notebook,
executed cell by cell in a fresh kernel of this interpreter (its working directory a temporary
one), and exported as one self-contained HTML page, figures embedded, next to an `index.html`
that lists every lesson with its subject, how long it ran and whether it failed. A lesson that
raises still gets its page, with the traceback; the others run, and the program ends with status
1 naming the failed ones. `--smoke` (or LESSONS_SMOKE=1 in the environment, which the kernels
inherit) runs the lessons' smaller settings.
"""

import dataclasses
import html
import json
import logging
import os
import re
import sys
import tempfile
import time
from typing import Optional

from absl import flags

from core import cli, files
from core.errors import UserError

LESSONS_DIR = os.path.dirname(os.path.abspath(__file__))
LESSON_FILE = re.compile(r"(?P<number>\d\d)_(?P<topic>\w+)\.py")
INDEX_NAME = "index.html"
RUNS_NAME = "runs.json"  # each lesson's last run, so that running one lesson keeps the others' rows in the index
SMOKE_VARIABLE = "LESSONS_SMOKE"
KERNEL_NAME = "python3"

FLAGS = flags.FlagValues()  # this program's own: programs can share a process (tests)
_OUT = flags.DEFINE_string("out", "lessons_html", "Folder the HTML pages and index.html are written to.",
                           flag_values=FLAGS)
_LESSONS_DIR = flags.DEFINE_string("lessons_dir", LESSONS_DIR, "Folder holding the lessons (NN_name.py files).",
                                   flag_values=FLAGS)
_SMOKE = flags.DEFINE_bool("smoke", False, f"Run the lessons' smaller settings (sets {SMOKE_VARIABLE}=1 for them).",
                           flag_values=FLAGS)
_CELL_TIMEOUT = flags.DEFINE_integer("cell_timeout", 600, "Seconds a cell may run before its lesson fails.",
                                     lower_bound=1, flag_values=FLAGS)


@dataclasses.dataclass(frozen=True)
class Lesson:
    """One lesson file: its name (the file's stem, e.g. 01_costs) and path."""

    name: str
    path: str

    @property
    def topic(self) -> str:
        """The name without its number: `costs` for 01_costs."""
        return LESSON_FILE.fullmatch(os.path.basename(self.path)).group("topic")

    @property
    def page(self) -> str:
        """The file name of its HTML page."""
        return f"{self.name}.html"


def discover(lessons_dir: str) -> list[Lesson]:
    """The lessons in a folder, in the order of their numbers; UserError when there are none."""
    if not os.path.isdir(lessons_dir):
        raise UserError(f"--lessons_dir={lessons_dir} is not a folder; give the folder holding NN_name.py lessons")
    found = sorted(name for name in os.listdir(lessons_dir) if LESSON_FILE.fullmatch(name))
    if not found:
        raise UserError(f"no lessons (NN_name.py files) in {lessons_dir}; give --lessons_dir the lessons' folder")
    return [Lesson(name[:-3], os.path.join(lessons_dir, name)) for name in found]


def select(lessons: list[Lesson], names) -> list[Lesson]:
    """The lessons named (01_costs, costs or 01, in the order given), all of them when none is; UserError otherwise."""
    chosen = []
    for name in names:
        key = name[:-3] if name.endswith(".py") else name
        matches = [lesson for lesson in lessons if key in (lesson.name, lesson.topic, lesson.name[:2])]
        if not matches:
            raise UserError(f"unknown lesson {name!r}; choose from: {', '.join(lesson.name for lesson in lessons)} "
                            "(or name none to run them all)")
        chosen += [lesson for lesson in matches if lesson not in chosen]
    return chosen or list(lessons)


def subject(notebook) -> str:
    """A lesson's one-line subject: the first line of its first markdown cell, heading marks left out."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.strip():
            return cell.source.strip().splitlines()[0].lstrip("#").strip()
    return "(no title)"


def _kernel_manager(spec_dir: str):
    """A kernel manager whose only kernel is this interpreter's ipykernel, whatever kernelspecs are installed."""
    from ipykernel import kernelspec  # pylint: disable=import-outside-toplevel
    from jupyter_client import AsyncKernelManager  # pylint: disable=import-outside-toplevel
    from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=import-outside-toplevel

    kernelspec.write_kernel_spec(os.path.join(spec_dir, KERNEL_NAME))  # argv: sys.executable -m ipykernel_launcher
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[spec_dir]))


class _NoAltTextWarning(logging.Filter):
    """Drops nbconvert's warning that figures lack alternative text: it fills in its own, and outputs carry none."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record is any other message."""
        return not record.getMessage().startswith("Alternative text is missing")


_EXPORTER_LOG = logging.getLogger("lessons.nbconvert")
_EXPORTER_LOG.addFilter(_NoAltTextWarning())


@dataclasses.dataclass
class Run:
    """How one lesson's run went: its subject, seconds, settings, and the first line of why it failed (None if not)."""

    lesson: Lesson
    subject: str
    seconds: float
    failure: Optional[str]
    smoke: bool


def _failure_note(failure: str):
    """A markdown cell for the top of a failed lesson's page: what failed, and where to look."""
    import nbformat  # pylint: disable=import-outside-toplevel

    return nbformat.v4.new_markdown_cell(f"**This lesson failed:** {html.escape(failure)}. The failing cell shows "
                                         "the traceback (a cell that timed out or a kernel that died shows none).")


def execute(lesson: Lesson, cell_timeout: int, smoke: bool) -> tuple[Run, str]:
    """Runs one lesson in a fresh kernel and returns how it went and its HTML page; a raising lesson is a Run too."""
    import jupytext  # pylint: disable=import-outside-toplevel
    import nbclient  # pylint: disable=import-outside-toplevel
    from nbclient import exceptions  # pylint: disable=import-outside-toplevel
    from nbconvert import HTMLExporter  # pylint: disable=import-outside-toplevel

    notebook = jupytext.read(lesson.path)
    title = subject(notebook)
    env = {**os.environ, **({SMOKE_VARIABLE: "1"} if smoke else {})}
    failure = None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lessons-kernel-") as work_dir:
        client = nbclient.NotebookClient(
            notebook, timeout=cell_timeout, km=_kernel_manager(work_dir), resources={"metadata": {"path": work_dir}},
            # ipykernel warns on every start that its local TCP sockets are unencrypted: noise on a terminal.
            extra_arguments=["--IPKernelApp.log_level=ERROR"])
        try:
            client.execute(env=env, cleanup_kc=True)  # the client shuts down kernels it did not make only when told
        except exceptions.CellExecutionError as error:
            failure = f"{error.ename}: {error.evalue}".splitlines()[0][:300]
        except (exceptions.CellTimeoutError, exceptions.DeadKernelError) as error:
            failure = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    seconds = time.perf_counter() - started
    if failure is not None:
        notebook.cells.insert(0, _failure_note(failure))
    exporter = HTMLExporter(template_name="lab", log=_EXPORTER_LOG)
    page, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": title}})
    return Run(lesson, title, seconds, failure, smoke or os.environ.get(SMOKE_VARIABLE) == "1"), page


def _check_runs(data) -> dict:
    """The runs record's entries by lesson name, each checked (raises files.Malformed)."""
    if not isinstance(data, dict):
        raise files.Malformed("not an object")
    for name, entry in data.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("subject"), str)
                and isinstance(entry.get("seconds"), (int, float)) and isinstance(entry.get("smoke"), bool)
                and (entry.get("failure") is None or isinstance(entry.get("failure"), str))):
            raise files.Malformed(f"entry {name!r} lacks subject, seconds, smoke or failure")
    return data


def read_runs(out_dir: str) -> dict:
    """Each lesson's last run recorded in the output folder (empty when none is)."""
    try:
        return files.read_json(os.path.join(out_dir, RUNS_NAME), "a lessons run record",
                               "delete it (the next run writes it afresh) or choose another --out", _check_runs)
    except FileNotFoundError:
        return {}


def index_page(lessons: list[Lesson], runs: dict) -> str:
    """index.html: every lesson in order, with its subject, its last run's time and settings, and a link to its page."""
    rows = []
    for lesson in lessons:
        run = runs.get(lesson.name)
        if run is None:
            rows.append(f"<tr><td>{html.escape(lesson.name)}</td><td>(not run yet)</td><td></td><td></td></tr>")
            continue
        status = "ok" if run["failure"] is None else f"<b>failed</b>: {html.escape(run['failure'])}"
        rows.append(f"<tr><td><a href=\"{html.escape(lesson.page)}\">{html.escape(lesson.name)}</a></td>"
                    f"<td>{html.escape(run['subject'])}</td><td>{run['seconds']:.0f} s"
                    f"{' (smoke settings)' if run['smoke'] else ''}</td><td>{status}</td></tr>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Lessons</title>\n<style>body{font-family:"
            "sans-serif;max-width:60em;margin:2em auto}td,th{padding:.3em .8em;text-align:left;vertical-align:top}"
            "</style></head><body>\n<h1>Lessons: efficient-network design trade-offs on your own device</h1>\n"
            "<p>Each page was executed on this machine; the teacher's guide is lessons/README.md.</p>\n"
            "<table><tr><th>lesson</th><th>subject</th><th>run time</th><th>status</th></tr>\n"
            + "\n".join(rows) + "\n</table></body></html>\n")


def _require_packages() -> None:
    """UserError naming the extra to install when a package the runner needs is missing."""
    for package in ("jupytext", "nbclient", "nbconvert", "ipykernel"):
        try:
            __import__(package)
        except ImportError:
            raise UserError(f"{package} is not installed: the lessons runner needs the lessons extra "
                            "(.venv/bin/pip install -e '.[lessons]')") from None


def _log(line: str) -> None:
    """Progress goes to stderr, as the other programs' does."""
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def run_lessons(names, log=_log) -> list[Run]:
    """Checks the names and the output folder, then executes the chosen lessons in order; returns their runs."""
    lessons = discover(_LESSONS_DIR.value)
    chosen = select(lessons, names)
    _require_packages()
    out = files.prepare_out_dir(_OUT.value)
    finished = []
    with files.DirectoryLock(out, "`python -m lessons`"):
        files.sweep_temporaries(out)
        files.check_replaceable(out, [INDEX_NAME, RUNS_NAME] + [lesson.page for lesson in chosen])
        runs = read_runs(out)
        for i, lesson in enumerate(chosen, 1):
            log(f"[{i}/{len(chosen)}] {lesson.name}: running")
            run, page = execute(lesson, _CELL_TIMEOUT.value, _SMOKE.value)
            files.atomic_write(os.path.join(out, lesson.page), page)
            runs[lesson.name] = {"subject": run.subject, "seconds": round(run.seconds, 1), "smoke": run.smoke,
                                 "failure": run.failure}
            files.atomic_write(os.path.join(out, RUNS_NAME), json.dumps(runs, indent=1, sort_keys=True) + "\n")
            files.atomic_write(os.path.join(out, INDEX_NAME), index_page(lessons, runs))
            outcome = "ok" if run.failure is None else f"FAILED ({run.failure})"
            log(f"[{i}/{len(chosen)}] {lesson.name}: {outcome} in {run.seconds:.0f} s -> "
                f"{os.path.join(out, lesson.page)}")
            finished.append(run)
    log(f"wrote {os.path.join(out, INDEX_NAME)}")
    return finished


def split_arguments(argv) -> tuple[list[str], list[str]]:
    """(lesson names, the argv of flags): flags take the form --name=value, anything else names a lesson."""
    return [arg for arg in argv[1:] if not arg.startswith("-")], [argv[0]] + [arg for arg in argv[1:]
                                                                             if arg.startswith("-")]


def call(argv) -> int:
    """Runs the program in this process as `python -m lessons ARGS` would; returns its exit status.

    0 when every lesson ran, 1 when one raised (named on stderr), 2 on bad input (one line).
    """
    names, flag_argv = split_arguments(argv)
    finished = []

    def main(rest):
        """Runs the lessons named on the command line (all when none is)."""
        del rest
        finished.extend(run_lessons(names))

    status = cli.call(main, FLAGS, flag_argv)
    failed = [run.lesson.name for run in finished if run.failure is not None]
    if status == 0 and failed:
        sys.stderr.write(f"failed: {', '.join(failed)} (each page shows its traceback, in {_OUT.value})\n")
        return 1
    return status


if __name__ == "__main__":
    sys.exit(call(sys.argv))
