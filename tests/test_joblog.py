"""The sweep's result log, shards, locked resumable runs and collection, including SIGKILLs mid-run."""

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from core.errors import UserError
from core import joblog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def value_of(key: str) -> int:
    """The value the test jobs compute for a key "job-<i>"."""
    return int(key.split("-")[1]) ** 2


def make_jobs(count: int) -> list:
    """`count` cheap jobs whose payload is their key."""
    return [(f"job-{i}", f"job-{i}") for i in range(count)]


def test_append_and_read_round_trip(tmp_path):
    path = str(tmp_path / "log.jsonl")
    log = joblog.ResultLog(path)
    log.append("resnet18:width=0.5|seed=0", {"value": 1.5, "tags": ["a"]})
    log.append("resnet18:width=1|seed=0", {"value": 2})
    log.close()
    reread = joblog.ResultLog(path)
    assert reread.contents.rows == [{"key": "resnet18:width=0.5|seed=0", "value": 1.5, "tags": ["a"]},
                                    {"key": "resnet18:width=1|seed=0", "value": 2}]
    assert reread.done_keys() == {"resnet18:width=0.5|seed=0", "resnet18:width=1|seed=0"}
    assert reread.contents.dropped_bytes == 0 and reread.contents.duplicate_keys == []
    with pytest.raises(ValueError, match="already in"):
        reread.append("resnet18:width=1|seed=0", {"value": 3})


def test_a_torn_last_line_is_dropped_and_the_file_truncated(tmp_path):
    path = tmp_path / "log.jsonl"
    good = b'{"key": "a", "value": 1}\n'
    torn = b'{"key": "b", "val'
    path.write_bytes(good + torn)
    log = joblog.ResultLog(str(path))
    assert log.contents.rows == [{"key": "a", "value": 1}]
    assert log.contents.dropped_bytes == len(torn)
    assert path.read_bytes() == good
    log.append("b", {"value": 2})
    log.close()
    assert [row["key"] for row in joblog.ResultLog(str(path)).contents.rows] == ["a", "b"]


def test_a_terminated_but_unparsable_last_line_is_dropped_too(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"key": "a"}\n{"key": \n')
    assert joblog.ResultLog(str(path)).contents.dropped_bytes == len(b'{"key": \n')
    assert path.read_bytes() == b'{"key": "a"}\n'


def test_garbage_in_the_middle_names_the_line(tmp_path):
    path = tmp_path / "log.jsonl"
    content = b'{"key": "a"}\nnot json\n{"key": "c"}\n'
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"log.jsonl line 2 .*move the file away or delete"):
        joblog.ResultLog(str(path))
    assert path.read_bytes() == content  # nothing is repaired behind the user's back


def test_duplicate_keys_keep_the_first_and_are_reported(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v": 2}\n{"key": "a", "v": 3}\n')
    contents = joblog.ResultLog(str(path)).contents
    assert contents.rows == [{"key": "a", "v": 1}, {"key": "b", "v": 2}]
    assert contents.duplicate_keys == ["a"]


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7, 41, 50])
def test_shards_partition_the_jobs(num_shards):
    items = list(range(41))
    shards = [joblog.shard(items, i, num_shards) for i in range(num_shards)]
    assert sorted(x for s in shards for x in s) == items
    assert all(set(a).isdisjoint(b) for i, a in enumerate(shards) for b in shards[i + 1:])
    assert shards[0][:2] == [0, num_shards][:len(shards[0])]


def test_run_jobs_resumes_and_reports_progress(tmp_path):
    log_path = str(tmp_path / "sweep.jsonl")
    messages = []
    calls = []

    def compute(payload):
        calls.append(payload)
        if payload == "job-3" and len(calls) == 4:
            raise RuntimeError("boom")
        return {"value": value_of(payload)}

    with pytest.raises(RuntimeError, match="boom"):
        joblog.run_jobs(make_jobs(6), log_path, compute, progress=messages.append)
    assert messages[0].startswith("[1/6] job-0 ... (left: 0m")
    ran = joblog.run_jobs(make_jobs(6), log_path, compute, progress=messages.append)
    assert ran == ["job-3", "job-4", "job-5"]  # the failed job is retried, the finished ones are not
    rows = joblog.ResultLog(joblog.shard_path(log_path, 0, 1)).contents.rows
    assert [(row["key"], row["value"]) for row in rows] == [(f"job-{i}", i * i) for i in range(6)]
    assert joblog.run_jobs(make_jobs(6), log_path, compute, progress=messages.append) == []


def test_two_shards_then_collect_gives_every_job_once(tmp_path):
    log_path = str(tmp_path / "sweep.jsonl")
    jobs = make_jobs(11)
    for i in range(2):
        joblog.run_jobs(jobs, log_path, lambda p: {"value": value_of(p)}, i, 2, progress=lambda _: None)
    assert os.path.basename(joblog.shard_path(log_path, 1, 2)) == "sweep.shard-1-of-2.jsonl"
    rows = joblog.collect(log_path)
    assert sorted((row["key"], row["value"]) for row in rows) == sorted((k, value_of(k)) for k, _ in jobs)
    assert joblog.ResultLog(log_path).contents.rows == rows
    assert joblog.collect(log_path) == rows  # collecting again changes nothing
    # Once collected, a rerun with another shard count finds everything done in the merged log.
    for name in os.listdir(tmp_path):
        if ".shard-" in name:
            os.unlink(tmp_path / name)
    assert joblog.run_jobs(jobs, log_path, lambda p: {"value": 0}, 0, 3, progress=lambda _: None) == []


def test_mixed_shard_counts_are_refused(tmp_path):
    log_path = str(tmp_path / "sweep.jsonl")
    joblog.run_jobs(make_jobs(4), log_path, lambda p: {"value": 1}, 0, 2, progress=lambda _: None)
    with pytest.raises(UserError, match="mixes shard counts"):
        joblog.run_jobs(make_jobs(4), log_path, lambda p: {"value": 1}, 0, 3, progress=lambda _: None)
    with pytest.raises(UserError, match="mixes shard counts"):
        joblog.collect(log_path)


def test_a_second_process_on_the_same_shard_file_is_refused(tmp_path):
    log_path = str(tmp_path / "sweep.jsonl")
    shard_file = joblog.shard_path(log_path, 0, 1)
    with open(shard_file, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match=r"another process \(pid \d+\) is writing .*sweep.shard-0-of-1"):
            joblog.run_jobs(make_jobs(2), log_path, lambda p: {"value": 1}, progress=lambda _: None)
        with pytest.raises(UserError, match="another process"):
            joblog.collect(log_path)
    assert joblog.run_jobs(make_jobs(2), log_path, lambda p: {"value": 1}, progress=lambda _: None) == ["job-0",
                                                                                                        "job-1"]


def test_shard_from_env(monkeypatch):
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_STEP"):
        monkeypatch.delenv(name, raising=False)
    assert joblog.shard_from_env() == (0, 1)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "10")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert joblog.shard_from_env() == (2, 4)
    assert joblog.shard_from_env(1, 3) == (1, 3)  # flags win over the environment
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "2")
    assert joblog.shard_from_env() == (1, 4)
    monkeypatch.delenv("SLURM_ARRAY_TASK_STEP")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "14")
    with pytest.raises(UserError, match="--shard_index must be in 0..3"):
        joblog.shard_from_env()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "x")
    with pytest.raises(UserError, match="SLURM_ARRAY_TASK_ID='x' is not an integer"):
        joblog.shard_from_env()


@pytest.mark.parametrize("index, count, message", [(2, 2, "--shard_index"), (-1, 2, "--shard_index"),
                                                   (0, 0, "--num_shards"), (0, None, "go together")])
def test_bad_shard_flags(index, count, message):
    with pytest.raises(UserError, match=message):
        joblog.shard_from_env(index, count, env={})


RUNNER = textwrap.dedent("""
    import sys, time
    from core import joblog

    def compute(key):
        time.sleep(0.003)
        return {"value": int(key.split("-")[1]) ** 2, "pad": "x" * 2000}  # long lines: more chances to tear one

    print("ready", flush=True)
    joblog.run_jobs([(f"job-{i}", f"job-{i}") for i in range(40)], sys.argv[1], compute, progress=lambda _: None)
    print("done", flush=True)
""")


def test_sigkill_at_random_moments_then_rerun_records_every_job_once(tmp_path):
    log_path = str(tmp_path / "sweep.jsonl")
    rng = random.Random(0)
    env = dict(os.environ, PYTHONPATH=REPO)
    finished = False
    for attempt in range(8):
        process = subprocess.Popen([sys.executable, "-c", RUNNER, log_path], stdout=subprocess.PIPE, env=env,
                                   cwd=REPO)
        assert process.stdout.readline() == b"ready\n"
        if attempt < 5:
            try:
                process.wait(timeout=rng.uniform(0.0, 0.06))
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        output = process.stdout.read()
        process.stdout.close()
        if process.returncode == 0:
            assert output == b"done\n"
            finished = True
            break
        assert process.returncode == -signal.SIGKILL
    assert finished
    lines = open(joblog.shard_path(log_path, 0, 1), "rb").read().split(b"\n")
    assert lines.pop() == b""
    rows = [json.loads(line) for line in lines]
    assert sorted(row["key"] for row in rows) == sorted(f"job-{i}" for i in range(40))
    assert all(row["value"] == value_of(row["key"]) for row in rows)


def test_units_keep_their_jobs_in_one_shard(tmp_path):
    jobs = [(f"{kind}-{v}", {"unit": v}) for v in range(5) for kind in ("time", "train0", "train1")]
    ran = [joblog.run_jobs(jobs, str(tmp_path / "log.jsonl"), lambda p: {"unit": p["unit"]}, i, 2,
                          progress=lambda _: None, unit=lambda p: p["unit"]) for i in range(2)]
    units = [{int(key.split("-")[1]) for key in keys} for keys in ran]
    assert units == [{0, 2, 4}, {1, 3}]
    assert sorted(ran[0] + ran[1]) == sorted(key for key, _ in jobs)
