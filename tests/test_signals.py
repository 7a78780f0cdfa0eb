"""SIGINT and SIGTERM at several moments of a training run and of a sweep: the exit status, one message,
what was done kept, and a resume that loses and repeats nothing (real signals to real processes)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

TRAIN = ["--model=resnet18:depths=1-1-1-1,width=0.25,resolution=32", "--dataset=digits", "--batch_size=32",
         "--log_every=1", "--eval_every=100000", "--checkpoint_every=100000", "--notensorboard"]
SWEEP = ["--spaces=resnet_basic", "--ranges=width=0.25:0.25,depth_1=1:1,depth_2=1:1,depth_3=1:1,depth_4=1:2,"
         "resolution=32:32", "--sampler=grid", "--grid_points=2", "--batch_sizes=1", "--min_time=0",
         "--train_steps=30", "--train_batch_size=16"]


def _start(program: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", program, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_until(condition, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while not condition():
        assert time.monotonic() < deadline and child.poll() is None, child.poll()
        time.sleep(0.02)


def _records(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _train_steps(workdir) -> list[int]:
    return [r["step"] for r in _records(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "train"]


def _checkpoints(workdir) -> list[int]:
    return sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit())


def _stopped_cleanly(child: subprocess.Popen, signum: int, says: str) -> str:
    """Waits for the child; checks the conventional status and the one `interrupted:` line; returns stderr."""
    _, err = child.communicate(timeout=180)
    assert child.returncode == 128 + signum, err
    assert [line for line in err.splitlines() if line.startswith("interrupted:")] == [f"interrupted: {says}"], err
    assert "Traceback" not in err and "Exception ignored" not in err and "Fatal Python error" not in err, err
    return err


@pytest.mark.parametrize("signum, moment", [
    (signal.SIGTERM, "compiling"),  # before the first step has finished: the loop stops after it
    (signal.SIGINT, "training"),
    (signal.SIGTERM, "training"),
])
def test_a_signal_checkpoints_the_step_it_stopped_at_and_the_rerun_resumes_there(tmp_path, signum, moment):
    workdir = str(tmp_path / "run")
    child = _start("train", *TRAIN, "--steps=100000", f"--workdir={workdir}")
    if moment == "compiling":
        assert child.stdout.readline().startswith("train: ")  # the first line, before JAX starts
        assert "steps of 32" in child.stdout.readline()  # the header: the first step compiles next
    else:
        _wait_until(lambda: len(_train_steps(workdir)) >= 4, child)
    child.send_signal(signum)
    _stopped_cleanly(child, signum, f"the checkpoints are in {workdir}; run the same command to resume")
    stopped_at = _train_steps(workdir)[-1]
    assert _checkpoints(workdir) == [stopped_at] and stopped_at >= (1 if moment == "compiling" else 4)

    rerun = subprocess.run([sys.executable, "-m", "train", *TRAIN, f"--steps={stopped_at + 2}",
                            f"--workdir={workdir}"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and f"resumed at step {stopped_at}" in rerun.stdout, rerun.stderr
    assert _train_steps(workdir) == list(range(1, stopped_at + 3))  # each step once, none lost


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    child = _start("train", *TRAIN, "--steps=100000", "--checkpoint_every=3", f"--workdir={workdir}")
    _wait_until(lambda: len(_train_steps(workdir)) >= 4, child)
    child.send_signal(signal.SIGINT)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=180)
    assert child.returncode == 128 + signal.SIGINT, err
    assert "Fatal Python error" not in err and "Traceback" not in err, err
    assert err.rstrip().splitlines()[-1].startswith("interrupted"), err
    kept = _checkpoints(workdir)[-1]
    rerun = subprocess.run([sys.executable, "-m", "train", *TRAIN, f"--steps={kept + 1}", f"--workdir={workdir}"],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and f"resumed at step {kept}" in rerun.stdout, rerun.stderr
    assert _train_steps(workdir) == list(range(1, kept + 2))


def _sweep_lines(out) -> list[dict]:
    return _records(os.path.join(out, "results.shard-0-of-1.jsonl"))


@pytest.mark.parametrize("signum, moment, signals", [
    (signal.SIGTERM, "first job", 1),  # while the first variant is timed: it stops within a call
    (signal.SIGINT, "training job", 1),  # the first train job: it finishes, then the sweep stops
    (signal.SIGTERM, "training job", 2),  # a second signal: at once, the job in progress lost, no crash
])
def test_a_sweep_stops_between_jobs_and_the_rerun_repeats_and_loses_nothing(tmp_path, signum, moment, signals):
    out = str(tmp_path / "sweep")
    child = _start("explore", f"--out={out}", *SWEEP)
    if moment == "first job":
        while not child.stdout.readline().startswith("measure: power"):  # said as the first timing starts
            assert child.poll() is None
    else:
        _wait_until(lambda: len(_sweep_lines(out)) >= 1, child)  # the timing is in; training comes next
        time.sleep(1.5)
    for _ in range(signals):
        child.send_signal(signum)
        time.sleep(0.3)
    if signals == 1:
        _stopped_cleanly(child, signum, f"every finished job is in {out}; run the same command again to resume")
    else:
        _, err = child.communicate(timeout=180)
        assert child.returncode == 128 + signum and "Fatal Python error" not in err, err
    finished = [line["key"] for line in _sweep_lines(out)]
    assert len(finished) == len(set(finished)), finished
    if signals == 1 and moment == "training job":  # a training job in progress is finished first
        assert any(key.startswith("train ") for key in finished), finished
    if moment == "first job":  # a timing stops within a call (the rerun redoes it), or had just finished
        assert all(key.startswith("measure ") for key in finished), finished

    rerun = subprocess.run([sys.executable, "-m", "explore", f"--out={out}", *SWEEP], capture_output=True, text=True,
                           timeout=400)
    assert rerun.returncode == 0, rerun.stderr
    left = 4 - len(finished)
    assert "run: 4 jobs for 2 variants" in rerun.stdout and f"[{left}/{left}]" in rerun.stdout, rerun.stdout
    keys = [line["key"] for line in _records(os.path.join(out, "results.jsonl"))]
    assert len(keys) == 4 and len(set(keys)) == 4 and set(finished) <= set(keys)


def test_the_main_job_stops_within_a_call_and_the_point_in_progress_is_measured_by_the_rerun(tmp_path):
    out = str(tmp_path / "results")
    args = ["--models=resnet18:width=0.25,resolution=32", "--batch_sizes=1,2", f"--out={out}"]
    child = _start("measure", *args, "--min_time=600")  # a point that would take ten minutes
    _wait_until(lambda: os.path.exists(os.path.join(out, "results.json")), child)  # the first point is under way
    time.sleep(1)
    asked = time.monotonic()
    child.send_signal(signal.SIGTERM)
    _stopped_cleanly(child, signal.SIGTERM, f"every point measured so far is in {out}; run the same command "
                                            "again to resume")
    assert time.monotonic() - asked < 60
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        assert json.load(f)["rows"] == []  # interrupted, not crashed: nothing recorded for it

    rerun = subprocess.run([sys.executable, "-m", "measure", *args, "--min_time=0"], capture_output=True, text=True,
                           timeout=400)
    assert rerun.returncode == 0, rerun.stderr
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    assert sorted((r["batch_size"], r["status"]) for r in rows) == [(1, "ok"), (2, "ok")]
