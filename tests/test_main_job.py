"""The main job end to end at a tiny resolution: rows, resume, settings, failures, locks."""

import csv
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import models
from core import files
from core.errors import UserError
from measure import device, main_job, points, power, results, timing

FAST = timing.TimingOptions(min_time_s=0.0, min_repeats=2, warmup=1)
MEASURE = points.Settings(resolution=32, timing_options=FAST, power_window_s=0.05, idle_settle_s=0.0)
TINY = dict(models=("enet", "resnet18"), batch_sizes=(1, 2), measure=MEASURE)
# The job's own logic (interrupts, failures, settings, files) holds for any network: those tests
# measure the smallest ResNet (BatchNorm, so timing still calibrates statistics), which compiles
# and calibrates in a fraction of ENet's time; the real networks are measured by `metered_run`.
CHEAP = "resnet18:depths=1-1-1-1,width=0.125"
ONE = dict(models=(CHEAP,), batch_sizes=(1,), measure=MEASURE)


class FakeMeter(power.Meter):
    """A meter drawing a constant 50 W: energy grows with wall time."""

    name = "fake"

    def energy_j(self) -> float:
        return 50.0 * time.perf_counter()


def run_quietly(config, lines=None):
    """Runs the job, collecting its progress lines."""
    return main_job.run(config, log=(lines.append if lines is not None else lambda line: None))


def no_meter(monkeypatch):
    """This machine's own answer, whatever its RAPL files say: no meter."""
    monkeypatch.setattr(power, "open_meter", lambda device=None: (None, "no meter here"))


@pytest.fixture(scope="module")
def metered_run(tmp_path_factory):
    """One job over 2 networks x 2 batch sizes with a fake 50 W meter, and the order it read idle power and peak in."""
    out = str(tmp_path_factory.mktemp("metered"))
    patch = pytest.MonkeyPatch()
    patch.setattr(power, "open_meter", lambda device=None: (FakeMeter(), ""))
    order = []
    real_idle, real_probe = power.idle_power, timing.peak_flops_per_s
    patch.setattr(power, "idle_power", lambda *a, **k: order.append("idle") or real_idle(*a, **k))
    patch.setattr(timing, "peak_flops_per_s", lambda *a, **k: order.append("probe") or real_probe(*a, **k))
    lines = []
    try:
        contents = run_quietly(main_job.Config(out_dir=out, **TINY), lines)
    finally:
        patch.undo()
    return out, contents, lines, order


@pytest.fixture(scope="module")
def modelled_run(tmp_path_factory):
    """One point (its network named twice) measured with power modelled as 10 W; tests that change it copy it."""
    out = str(tmp_path_factory.mktemp("modelled"))
    config = main_job.Config(out_dir=out, **{**ONE, "models": (CHEAP, CHEAP),
                                             "measure": dataclasses.replace(MEASURE, power_watts=10.0)})
    patch = pytest.MonkeyPatch()
    no_meter(patch)
    try:
        contents = run_quietly(config)
    finally:
        patch.undo()
    return config, contents


def copy_of(modelled_run, tmp_path):
    """A copy of the modelled run's directory under tmp_path, and its config pointed there."""
    config, _ = modelled_run
    out = str(tmp_path / "out")
    shutil.copytree(config.out_dir, out)
    return dataclasses.replace(config, out_dir=out)


def test_rows_files_and_environment(metered_run):
    out, contents, lines, _ = metered_run
    rows = contents.rows
    assert [(r.model, r.batch_size, r.status) for r in rows] == [
        ("enet", 1, "ok"), ("enet", 2, "ok"), ("resnet18", 1, "ok"), ("resnet18", 2, "ok")]
    with open(os.path.join(out, "results.csv")) as f:
        table = list(csv.DictReader(f))
    assert [(r["model"], r["batch_size"], r["resolution"]) for r in table] == [
        ("enet", "1", "32"), ("enet", "2", "32"), ("resnet18", "1", "32"), ("resnet18", "2", "32")]
    env = json.load(open(os.path.join(out, "results.json")))["environment"]
    for key in ("device", "jax", "jaxlib", "xla_flags", "xla_flags_chosen", "host", "power_meter", "timing"):
        assert key in env
    assert set(env["peak_flops_per_s"]) == {"float32"} and env["peak_flops_per_s"]["float32"] > 0
    assert env["power_meter"] == "fake" and env["idle_power_w"] == pytest.approx(50, rel=0.05)
    for row in rows:
        assert row.time_per_image_p25_s <= row.time_per_image_s <= row.time_per_image_p75_s
        assert row.compile_s > 0 and row.latency_calls >= 2 and row.throughput_calls >= 2 and row.warmup_calls >= 1
        assert row.images_per_s == pytest.approx(1 / row.throughput_time_per_image_s)
        assert 0 < row.dispatch_s and row.native_resolution == models.spec(row.model).input_size and row.device == env["device"]
        assert 0 < row.fraction_of_peak and row.memory_xla_argument_bytes > 4 * row.params
        assert row.power_source == "fake" and row.power_w == pytest.approx(50, rel=0.05)
        assert row.energy_per_image_j > 0
    assert rows[1].flops_per_image == rows[0].flops_per_image  # per image, whatever the batch
    assert rows[1].memory_analytical_bytes > rows[0].memory_analytical_bytes
    for name in ("report.md", "report.html"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    figures = os.listdir(os.path.join(out, "figures", "float32-32"))
    assert any(f.endswith(".png") for f in figures) and any(f.endswith(".svg") for f in figures)
    assert "## float32, 32x32" in open(os.path.join(out, "report.md")).read()
    assert lines[-2].startswith("[4/4] resnet18 batch 2:") and "left:" in lines[-2]
    assert all(os.stat(os.path.join(out, f)).st_mode & 0o777 == 0o644 for f in ("results.json", "report.md"))


def test_resume_measures_only_missing_points(metered_run, monkeypatch):
    out, contents, _, _ = metered_run
    measured = []
    real = points.measure_point
    monkeypatch.setattr(points, "measure_point",
                        lambda sized, row, *a: measured.append((sized.name, row.batch_size)) or real(sized, row, *a))
    no_meter(monkeypatch)
    more = run_quietly(main_job.Config(out_dir=out, **{**TINY, "batch_sizes": (1, 2, 4)}))
    assert measured == [("enet", 4), ("resnet18", 4)]
    assert [dataclasses.asdict(r) for r in more.rows[:4]] == [dataclasses.asdict(r) for r in contents.rows]
    assert len(results.read(out).rows) == 6


def test_idle_power_is_read_before_the_peak_probe_heats_the_device(metered_run):
    *_, order = metered_run
    assert order == ["idle", "probe"]


def test_modelled_power_without_a_meter(modelled_run):
    config, contents = modelled_run
    (row,) = contents.rows
    assert row.power_source == "modelled" and row.power_w == 10.0
    assert row.energy_per_image_j == pytest.approx(10.0 * row.time_per_image_s)
    assert results.read(config.out_dir).environment["power_note"] == "no meter here"


def test_repeated_names_are_measured_once_and_empty_lists_refused(modelled_run, tmp_path):
    _, contents = modelled_run
    assert [(r.model, r.batch_size) for r in contents.rows] == [(CHEAP, 1)]
    with pytest.raises(UserError, match="no networks to measure"):
        main_job.check_config(main_job.Config(out_dir=str(tmp_path), **{**TINY, "models": ()}))
    with pytest.raises(UserError, match="no batch sizes"):
        main_job.check_config(main_job.Config(out_dir=str(tmp_path), **{**TINY, "batch_sizes": ()}))


def test_csv_is_rebuilt_and_stale_temporaries_swept(modelled_run, tmp_path, monkeypatch):
    no_meter(monkeypatch)
    config = copy_of(modelled_run, tmp_path)
    out = tmp_path / "out"
    csv_text = (out / "results.csv").read_text()
    os.unlink(out / "results.csv")
    (out / ".tmp-left-by-a-killed-run").write_text("half a file")
    monkeypatch.setattr(points, "measure_point", lambda *a: pytest.fail("measured a point already there"))
    run_quietly(config)  # nothing to measure
    assert (out / "results.csv").read_text() == csv_text
    assert not os.path.exists(out / ".tmp-left-by-a-killed-run")


def test_results_from_another_device_or_runtime_are_refused(modelled_run, tmp_path, monkeypatch):
    no_meter(monkeypatch)
    out = copy_of(modelled_run, tmp_path).out_dir
    contents = results.read(out)
    # Only a row says it: the environment is this device's.
    contents.rows[0].device = "a TPU somewhere"
    results.write(out, contents)
    with pytest.raises(UserError, match="rows measured on 'a TPU somewhere'.*--overwrite"):
        run_quietly(main_job.Config(out_dir=out, **TINY))
    contents.rows[0].device = contents.environment["device"]
    contents.environment["xla_flags"] = "--xla_some_other_flag=1"
    results.write(out, contents)
    with pytest.raises(UserError, match="measured with xla_flags '--xla_some_other_flag=1'"):
        run_quietly(main_job.Config(out_dir=out, **TINY))
    assert results.read(out).environment["xla_flags"] == "--xla_some_other_flag=1"  # nothing was written


def test_interrupt_keeps_what_was_measured(tmp_path, monkeypatch):
    real, calls = points.measure_point, []

    def interrupted_second_time(*args):
        calls.append(args[:2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(points, "measure_point", interrupted_second_time)
    no_meter(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_quietly(main_job.Config(out_dir=str(tmp_path), **{**ONE, "batch_sizes": (1, 2)}))
    kept = results.read(str(tmp_path)).rows
    assert [(r.model, r.batch_size, r.status) for r in kept] == [(CHEAP, 1, "ok")]  # no crash marker left
    assert not os.path.exists(tmp_path / "report.md")
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


def test_out_of_memory_is_recorded_and_larger_batches_skipped(tmp_path, monkeypatch):
    real = timing.time_forward

    def fails_from_batch_2(module, shape, *args, **kwargs):
        if shape[0] >= 2:
            raise timing.MeasureFailed(results.OUT_OF_MEMORY, "RESOURCE_EXHAUSTED: out of memory allocating")
        return real(module, shape, *args, **kwargs)

    monkeypatch.setattr(timing, "time_forward", fails_from_batch_2)
    no_meter(monkeypatch)
    config = main_job.Config(out_dir=str(tmp_path), **{**ONE, "batch_sizes": (1, 2, 4)})
    rows = run_quietly(config).rows
    assert [(r.batch_size, r.status) for r in rows] == [(1, "ok"), (2, "out_of_memory"), (4, "out_of_memory")]
    assert "RESOURCE_EXHAUSTED" in rows[1].error and rows[2].error.startswith("skipped: batch 2 ran out of memory")
    assert rows[1].time_per_image_s is None and rows[1].flops_per_image == rows[0].flops_per_image
    assert os.path.exists(tmp_path / "report.md")
    # A rerun at a larger batch skips it too, from the stored row; --retry_failed measures again.
    monkeypatch.setattr(timing, "time_forward", real)
    again = run_quietly(dataclasses.replace(config, batch_sizes=(1, 2, 4, 8)))
    assert [(r.batch_size, r.status) for r in again.rows] == [(1, "ok"), (2, "out_of_memory"), (4, "out_of_memory"),
                                                              (8, "out_of_memory")]
    retried = run_quietly(dataclasses.replace(config, batch_sizes=(1, 2, 4, 8), retry_failed=True))
    assert [(r.batch_size, r.status) for r in retried.rows] == [(1, "ok"), (2, "ok"), (4, "ok"), (8, "ok")]


_DIES_AT_SECOND_POINT = textwrap.dedent("""
    import os, signal, sys
    from measure import main_job, points, power, timing
    calls, real = [], points.measure_point
    def dying(*args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        return real(*args)
    points.measure_point = dying
    power.open_meter = lambda device=None: (None, "no meter here")
    main_job.run(main_job.Config(models=("enet",), batch_sizes=(1, 2, 4), out_dir=sys.argv[1],
                                 measure=points.Settings(resolution=32, timing_options=timing.TimingOptions(0.0, 2, 1),
                                                         idle_settle_s=0.0)))
""")


@pytest.mark.slow
def test_a_point_that_killed_the_process_is_recorded_as_crashed_and_skipped(tmp_path, monkeypatch):
    killed = subprocess.run([sys.executable, "-c", _DIES_AT_SECOND_POINT, str(tmp_path)], capture_output=True,
                            text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    rows = results.read(str(tmp_path)).rows
    assert [(r.batch_size, r.status) for r in rows] == [(1, "ok"), (2, "crashed")]
    assert "process died while measuring" in rows[1].error
    no_meter(monkeypatch)
    measured, real = [], points.measure_point
    monkeypatch.setattr(points, "measure_point", lambda sized, row, *a: measured.append(row.batch_size) or real(sized, row, *a))
    rerun = run_quietly(main_job.Config(out_dir=str(tmp_path), **{**TINY, "models": ("enet",), "batch_sizes": (1, 2, 4)}))
    assert measured == []  # the crashing point is not tried again, nor a larger one
    assert [(r.batch_size, r.status) for r in rerun.rows] == [(1, "ok"), (2, "crashed"), (4, "out_of_memory")]


@pytest.mark.slow
def test_real_out_of_memory_from_ynnpack_is_recorded(tmp_path):
    # YNNPACK convolutions (the user's XLA flag wins over ours) under a 4 GiB address-space limit:
    # XLA:CPU says only "INTERNAL: YNNPACK operation failed"; the allocation failure is on stderr.
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
    command = (f"ulimit -v {4 * 2**20} && exec {shlex.quote(sys.executable)} -m measure --models=resnet18 "
               f"--batch_sizes=1,512,1024 --min_time=0 --repeats=1 --warmup=0 --out={shlex.quote(str(tmp_path))}")
    child = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    rows = results.read(str(tmp_path)).rows
    assert [(r.batch_size, r.status) for r in rows] == [(1, "ok"), (512, "out_of_memory"), (1024, "out_of_memory")]
    # Which allocation fails first, XLA's temporary buffer (RESOURCE_EXHAUSTED) or a YNNPACK
    # kernel's (seen only on native stderr), depends on how much address space the process holds
    # by then, which varies from run to run; both must be recorded as out of memory.
    # tests/test_timing.py pins the native-stderr path on its own.
    assert ("YNNPACK" in rows[1].error and "allocate" in rows[1].error) or "RESOURCE_EXHAUSTED" in rows[1].error
    assert results.read(str(tmp_path)).environment["xla_flags"].split()[0] == env["XLA_FLAGS"]  # ours after it


def test_settings_get_their_own_sections_and_peaks(tmp_path, monkeypatch):
    no_meter(monkeypatch)
    probes = []
    real_probe = timing.peak_flops_per_s
    monkeypatch.setattr(timing, "peak_flops_per_s", lambda precision, **kw: probes.append(precision) or
                        real_probe(precision, size=64, min_time_s=0.0, **kw))
    base = ONE
    run_quietly(main_job.Config(out_dir=str(tmp_path), **base))
    run_quietly(main_job.Config(out_dir=str(tmp_path), **{**base, "measure": dataclasses.replace(MEASURE, precision="float16")}))
    # Figures of settings a run did not measure are kept as drawn, and one missing is drawn again.
    kept = {path: path.stat().st_mtime_ns for path in (tmp_path / "figures" / "float32-32").iterdir()}
    (tmp_path / "figures" / "float16-32" / "fig_c_time_vs_batch.svg").unlink()
    # Each network at its own resolution: a variant's own, cheaper to time than a network's native one.
    contents = run_quietly(main_job.Config(out_dir=str(tmp_path), **{**base, "models": (f"{CHEAP},resolution=48",),
                                                                 "measure": dataclasses.replace(MEASURE, resolution=None)}))
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "figures" / "float32-32").iterdir()} == kept
    assert probes == ["float32", "float16"]  # stored per precision, reused, never shared across precisions
    assert set(contents.environment["peak_flops_per_s"]) == {"float32", "float16"}
    assert [s.slug for s in contents.settings] == ["float32-32", "float16-32", "float32-native"]
    assert [(r.precision, r.resolution) for r in contents.rows] == [("float32", 32), ("float16", 32), ("float32", 48)]
    for setting in contents.settings:
        assert [r.precision for r in contents.rows_of(setting)] == [setting.precision]
        assert os.path.exists(tmp_path / "figures" / setting.slug / "fig_c_time_vs_batch.png")
        assert os.path.exists(tmp_path / "figures" / setting.slug / "fig_c_time_vs_batch.svg")
    md = (tmp_path / "report.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ") and line != "## Environment"]
    assert sections == ["## float32, 32x32", "## float16, 32x32", "## float32, each network at its own resolution",
                        "## Precisions compared"]


def test_one_run_per_directory(tmp_path, monkeypatch):
    no_meter(monkeypatch)
    probe = []
    monkeypatch.setattr(timing, "peak_flops_per_s", lambda *a, **k: probe.append(1) or 1e9)
    with files.DirectoryLock(str(tmp_path), "test"):
        with pytest.raises(UserError, match=rf"another `python -m measure` \(pid {os.getpid()}\) is writing to"):
            run_quietly(main_job.Config(out_dir=str(tmp_path), **TINY))
    assert probe == [] and not os.path.exists(tmp_path / "results.json")


def test_an_unusable_out_is_found_before_anything_is_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "peak_flops_per_s", lambda *a, **k: pytest.fail("measured before checking --out"))
    (tmp_path / "a_file").write_text("x")
    for out, message in ((tmp_path / "a_file", "exists and is not a directory"),
                         (tmp_path / "a_file" / "below", "cannot create")):
        with pytest.raises(UserError, match=message):
            run_quietly(main_job.Config(out_dir=str(out), **TINY))


def test_corrupt_results_file_is_named(tmp_path):
    (tmp_path / "results.json").write_text('{"rows": [')
    with pytest.raises(UserError, match="results.json is not a valid results file.*--overwrite"):
        run_quietly(main_job.Config(out_dir=str(tmp_path), **TINY))


def _cli(*flags, env=None):
    return subprocess.run([sys.executable, "-m", "measure", *flags], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("flags, message", [
    (("--models=resnet9",), "unknown model 'resnet9'"),
    (("--models=",), "no networks to measure"),
    (("--models=enet", "--batch_sizes=0,2"), "--batch_sizes takes positive integers"),
    (("--models=enet", "--batch_sizes=a"), "--batch_sizes takes positive integers"),
    (("--models=enet", "--batch_sizes="), "--batch_sizes takes positive integers"),
    (("--precision=fp8",), "precision"),
    (("--resolution=8",), "to 4096 pixels; got 8"),
    (("--resolution=100000000000000000000",), "--resolution"),
    (("--resolution=10**20",), "--resolution"),
    (("--min_time=nan",), "--min_time must be a finite number"),
    (("--min_time=inf",), "--min_time must be a finite number"),
    (("--min_time=-1",), "--min_time"),
    (("--power_watts=nan",), "--power_watts must be a finite number"),
    (("--power_watts=-5",), "--power_watts"),
    (("--repeats=0",), "--repeats"),
    (("--warmup=100",), "--warmup"),
    (("stray",), "unexpected arguments"),
])
def test_cli_bad_flags_fail_in_one_line_before_any_output(tmp_path, run_program, flags, message):
    result = run_program("measure", *flags, f"--out={tmp_path}/out")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_cli_bad_out_fails_in_one_line(tmp_path, run_program):
    (tmp_path / "a_file").write_text("x")
    result = run_program("measure", "--models=enet", f"--out={tmp_path}/a_file")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: --out={tmp_path}/a_file exists and is not a directory; choose a directory"]
    (tmp_path / "results.json").mkdir()
    result = run_program("measure", "--models=enet", f"--out={tmp_path}")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path}/results.json is in the way: it is not a regular file; move it away or choose another --out"]
    os.rmdir(tmp_path / "results.json")
    (tmp_path / "report.html").mkdir()
    result = run_program("measure", "--models=enet", f"--out={tmp_path}", "--overwrite")
    assert result.returncode == 2 and "report.html is in the way" in result.stderr


def test_cli_a_backend_that_cannot_start_is_one_line(tmp_path):
    result = _cli("--models=enet", f"--out={tmp_path}/out", env={"JAX_PLATFORMS": "cuda"})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "JAX cannot start its backend" in lines[0], result.stderr



def test_a_bug_while_measuring_is_recorded_as_an_error_and_keeps_its_traceback(tmp_path, monkeypatch):
    no_meter(monkeypatch)

    def broken(*args):
        raise ZeroDivisionError("a bug in the harness")

    monkeypatch.setattr(points, "measure_point", broken)
    with pytest.raises(ZeroDivisionError):
        run_quietly(main_job.Config(out_dir=str(tmp_path), **ONE))
    (row,) = results.read(str(tmp_path)).rows
    assert (row.status, row.error) == ("error", "ZeroDivisionError: a bug in the harness")


def test_a_cpu_is_named_with_the_cores_this_process_may_use(monkeypatch):
    """Timings pinned to one core (taskset, a cpuset) and on all of them never share a name, a directory or a fit."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    one = device.device_name()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 5})
    three = device.device_name()
    assert one.startswith("cpu: ") and one.endswith(", 1 core")
    assert three == one[:-len("1 core")] + "3 cores"
