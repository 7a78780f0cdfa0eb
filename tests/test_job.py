"""The main job end to end on two real networks at a tiny resolution: rows, resume, failures, CLI."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from measure import job, power, results, timing

FAST = timing.TimingOptions(min_time_s=0.0, min_repeats=2, warmup=1)
TINY = dict(models=("enet", "resnet18"), batch_sizes=(1, 2), resolution=32, timing_options=FAST, power_window_s=0.05)


class FakeMeter(power.Meter):
    """A meter drawing a constant 50 W: energy grows with wall time."""

    name = "fake"

    def energy_j(self) -> float:
        return 50.0 * time.perf_counter()


def run_quietly(config, lines=None):
    """Runs the job, collecting its progress lines."""
    return job.run(config, log=(lines.append if lines is not None else lambda line: None))


@pytest.fixture(scope="module")
def metered_run(tmp_path_factory):
    """One job over 2 networks x 2 batch sizes with a fake 50 W meter."""
    out = str(tmp_path_factory.mktemp("metered"))
    patch = pytest.MonkeyPatch()
    patch.setattr(power, "open_meter", lambda platform=None: (FakeMeter(), ""))
    lines = []
    try:
        rows = run_quietly(job.Config(out_dir=out, **TINY), lines)
    finally:
        patch.undo()
    return out, rows, lines


def test_rows_files_and_environment(metered_run):
    out, rows, lines = metered_run
    assert [(r.model, r.batch_size, r.status) for r in rows] == [
        ("enet", 1, "ok"), ("enet", 2, "ok"), ("resnet18", 1, "ok"), ("resnet18", 2, "ok")]
    with open(os.path.join(out, "results.csv")) as f:
        table = list(csv.DictReader(f))
    assert [(r["model"], r["batch_size"], r["resolution"]) for r in table] == [
        ("enet", "1", "32"), ("enet", "2", "32"), ("resnet18", "1", "32"), ("resnet18", "2", "32")]
    env = json.load(open(os.path.join(out, "results.json")))["environment"]
    for key in ("device", "jax", "jaxlib", "xla_flags", "host", "peak_flops_per_s", "power_meter"):
        assert key in env
    assert env["power_meter"] == "fake" and env["idle_power_w"] == pytest.approx(50, rel=0.05)
    for row in rows:
        assert row.time_per_image_p25_s <= row.time_per_image_s <= row.time_per_image_p75_s
        assert row.compile_s > 0 and row.timed_batches >= 2
        assert row.images_per_s == pytest.approx(1 / row.time_per_image_s)
        assert 0 < row.fraction_of_peak and row.memory_xla_argument_bytes > 4 * row.params
        assert row.power_source == "fake" and row.power_w == pytest.approx(50, rel=0.05)
        assert row.energy_per_image_j > 0
    assert rows[1].flops_per_image == rows[0].flops_per_image  # per image, whatever the batch
    assert rows[1].memory_analytical_bytes > rows[0].memory_analytical_bytes
    for name in ("report.md", "report.html"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert any(f.endswith(".png") for f in os.listdir(out)) and any(f.endswith(".svg") for f in os.listdir(out))
    assert lines[-2].startswith("[4/4] resnet18 batch 2:") and "left:" in lines[-2]


def test_resume_measures_only_missing_points(metered_run, monkeypatch):
    out, rows, _ = metered_run
    measured = []
    real = job.measure_point
    monkeypatch.setattr(job, "measure_point", lambda name, b, *a: measured.append((name, b)) or real(name, b, *a))
    more = run_quietly(job.Config(out_dir=out, **{**TINY, "batch_sizes": (1, 2, 4)}))
    assert measured == [("enet", 4), ("resnet18", 4)]
    assert [dataclasses.asdict(r) for r in more[:4]] == [dataclasses.asdict(r) for r in rows]
    assert len(results.read(out)[0]) == 6


def test_interrupt_keeps_what_was_measured(tmp_path, monkeypatch):
    real, calls = job.measure_point, []

    def interrupted_second_time(*args):
        calls.append(args[:2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(job, "measure_point", interrupted_second_time)
    with pytest.raises(KeyboardInterrupt):
        run_quietly(job.Config(out_dir=str(tmp_path), **TINY))
    kept, _ = results.read(str(tmp_path))
    assert [(r.model, r.batch_size) for r in kept] == [("enet", 1)]
    assert not os.path.exists(tmp_path / "report.md")
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


def test_out_of_memory_is_recorded_and_larger_batches_skipped(tmp_path, monkeypatch):
    real = timing.time_forward

    def fails_from_batch_2(module, shape, *args, **kwargs):
        if shape[0] >= 2:
            raise timing.MeasureFailed(results.OUT_OF_MEMORY, "RESOURCE_EXHAUSTED: out of memory allocating")
        return real(module, shape, *args, **kwargs)

    monkeypatch.setattr(timing, "time_forward", fails_from_batch_2)
    rows = run_quietly(job.Config(out_dir=str(tmp_path), **{**TINY, "models": ("enet",), "batch_sizes": (1, 2, 4)}))
    assert [(r.batch_size, r.status) for r in rows] == [(1, "ok"), (2, "out_of_memory"), (4, "out_of_memory")]
    assert "RESOURCE_EXHAUSTED" in rows[1].error and rows[2].error == "skipped: batch 2 ran out of memory"
    assert rows[1].time_per_image_s is None and rows[1].flops_per_image == rows[0].flops_per_image
    assert os.path.exists(tmp_path / "report.md")


def test_modelled_power_without_a_meter(tmp_path, monkeypatch):
    monkeypatch.setattr(power, "open_meter", lambda platform=None: (None, "no meter here"))
    rows = run_quietly(job.Config(out_dir=str(tmp_path), power_watts=10.0,
                                  **{**TINY, "models": ("enet",), "batch_sizes": (1,)}))
    row = rows[0]
    assert row.power_source == "modelled" and row.power_w == 10.0
    assert row.energy_per_image_j == pytest.approx(10.0 * row.time_per_image_s)
    assert results.read(str(tmp_path))[1]["power_note"] == "no meter here"


def test_results_from_another_device_are_not_mixed(tmp_path):
    results.write(str(tmp_path), [], {"device": "a TPU somewhere"})
    with pytest.raises(ValueError, match="measured on 'a TPU somewhere'.*--overwrite"):
        run_quietly(job.Config(out_dir=str(tmp_path), **TINY))


def test_corrupt_results_file_is_named(tmp_path):
    (tmp_path / "results.json").write_text('{"rows": [')
    with pytest.raises(ValueError, match="results.json is corrupt.*--overwrite"):
        run_quietly(job.Config(out_dir=str(tmp_path), **TINY))


@pytest.mark.parametrize("flag, message", [
    ("--models=resnet9", "unknown model 'resnet9'"),
    ("--batch_sizes=0,2", "--batch_sizes takes positive integers"),
    ("--batch_sizes=a", "--batch_sizes takes positive integers"),
    ("--precision=fp8", "precision"),
    ("--resolution=8", "to 4096 pixels; got 8"),
])
def test_cli_bad_flags_fail_in_one_line_before_any_output(tmp_path, flag, message):
    result = subprocess.run([sys.executable, "-m", "measure", flag, f"--out={tmp_path}/out"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "out")
