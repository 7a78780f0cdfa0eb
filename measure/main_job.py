"""The main job: measure every network (or variant) at every batch size on this device, then draw the report.

One run at a time per output directory (a lock). Before anything is measured the input, the
directory and the device are checked; results already there are validated and must come from
this device and runtime. Each point is recorded as `crashed` before it is measured and
replaced by its result after, so a process killed mid-point (the out-of-memory killer) leaves
a row that says so, and the rerun goes on past it.
"""

import dataclasses
import os
import platform
import re
import shutil
import sys
import time
from typing import Callable, Optional, Union

import jax
import jaxlib

import models
from core import cli, files, runtime, values
from core.errors import UserError
from measure import device as device_lib
from measure import figures, points, report, results, timing

FIGURES_DIR = "figures"
# Environment entries that must match for rows to share a directory: anything else mixes results.
SAME_RUNTIME_KEYS = ("device", "platform", "jax", "jaxlib", "xla_flags", "glibc_tunables")


@dataclasses.dataclass(frozen=True)
class Config:
    """What to measure, how, and where to write it."""

    models: tuple[Union[models.Variant, str], ...]  # networks or variants ("resnet50:width=0.5"): models.variant
    batch_sizes: tuple[int, ...]
    out_dir: str
    measure: points.Settings = points.Settings()
    overwrite: bool = False
    retry_failed: bool = False  # measure again the points that failed or crashed


def default_out_dir(device: Optional[jax.Device] = None) -> str:
    """results/<device>/, the device's name made safe for a path."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_lib.device_name(device).lower()).strip("-")
    return os.path.join("results", slug)


def environment(device: jax.Device) -> dict:
    """Where the numbers come from: device, software versions, runtime configuration, host."""
    return {"device": device_lib.device_name(device), "platform": device.platform, "device_count": jax.device_count(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
            **runtime.in_force(),
            "host": platform.node(), "os": platform.platform()}


def check_config(config: Config) -> tuple[models.Variant, ...]:
    """The variants to measure, each once in the given order; UserError on any bad input."""
    variants = tuple(dict.fromkeys(models.variant(name) for name in config.models))
    if not variants:
        raise UserError("no networks to measure: give --models a comma-separated list, e.g. --models=resnet50")
    if not config.batch_sizes:
        raise UserError("no batch sizes to measure at: give --batch_sizes, e.g. --batch_sizes=1,16")
    for variant in variants:
        sized = config.measure.sized(variant)  # UserError when the variant's side and --resolution differ
        for batch_size in config.batch_sizes:
            sized.input_shape(batch_size)
    return variants


def run(config: Config, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> results.Results:
    """Checks everything, then measures every missing point under the directory's lock, then reports."""
    names = check_config(config)
    device = device_lib.default_device()
    files.prepare_out_dir(config.out_dir)
    with files.DirectoryLock(config.out_dir, "`python -m measure`"):
        return _run_locked(config, names, device, log)


def _check_same_runtime(stored: results.Results, here: dict, out_dir: str) -> None:
    """Refuses a directory whose results were measured on another device or runtime."""
    for key in SAME_RUNTIME_KEYS:
        if key in stored.environment and stored.environment[key] != here.get(key, ""):
            raise UserError(f"{out_dir} holds results measured with {key} {stored.environment[key]!r}, not "
                            f"{here.get(key, '')!r}: they would mix; choose another --out or pass --overwrite")
    for row in stored.rows:  # the rows themselves say where they were measured, whatever the environment says
        if row.device != here["device"]:
            raise UserError(f"{out_dir} holds rows measured on {row.device!r}, not on {here['device']!r}; "
                            "choose another --out or pass --overwrite")


def _run_locked(config: Config, variants: tuple[models.Variant, ...], device: jax.Device, log) -> results.Results:
    """The job proper, holding the directory's lock."""
    out, settings = config.out_dir, config.measure
    files.sweep_temporaries(out)
    files.check_replaceable(out, (results.JSON_NAME, results.CSV_NAME) + report.NAMES)
    figures_dir = os.path.join(out, FIGURES_DIR)
    if os.path.lexists(figures_dir) and not os.path.isdir(figures_dir):
        raise UserError(f"{figures_dir} is in the way: it is not a directory; move it away or choose another --out")
    if config.overwrite:
        shutil.rmtree(figures_dir, ignore_errors=True)
    stored = results.Results() if config.overwrite else results.read(out)
    here = environment(device)
    _check_same_runtime(stored, here, out)
    setting = results.Setting(settings.precision, settings.resolution)
    if setting not in stored.settings:
        stored.settings.append(setting)
    peaks = dict(stored.environment.get("peak_flops_per_s", {}))
    stored.environment = {**stored.environment, **here, "peak_flops_per_s": peaks}
    results.write(out, stored)  # results.csv is rebuilt from results.json on every run

    done = {r.key for r in stored.rows if r.status == results.OK or not config.retry_failed}
    batch_sizes = tuple(sorted(config.batch_sizes))
    todo = {v: tuple(b for b in batch_sizes if _key(v, b, settings, here["device"]) not in done) for v in variants}
    todo = {v: batches for v, batches in todo.items() if batches}
    log(f"device: {here['device']}; {sum(map(len, todo.values()))} points to measure, "
        f"{len(stored.rows)} already in {out}")
    log(f"timing: batch sizes {', '.join(map(str, batch_sizes))}; {timing.describe(settings.timing_options)}")
    if here["xla_flags"] or here.get("runtime_notes"):
        log(f"runtime: XLA_FLAGS={here['xla_flags'] or '(none)'}" + (f"; {here['runtime_notes']}"
                                                                     if here.get("runtime_notes") else ""))
    with points.Session(settings, device, here["device"], peaks.get(settings.precision)) as session:
        peaks[settings.precision] = session.peak_flops
        log(session.describe())
        stored.environment.update(session.environment())
        results.write(out, stored)
        _measure_all(todo, config, stored, session, log)
    written = _draw(stored, out, setting)
    report.write_report(stored, out, written)
    log(f"wrote results.csv, results.json, {len(written)} figure files and report.md/html in {out}")
    return stored


def _key(variant: models.Variant, batch_size: int, settings: points.Settings, device: str) -> tuple:
    """The results key of one point: the variant, batch size and side it is measured at, precision, device."""
    side = settings.sized(variant).input_shape(batch_size)[1]
    return results.point_key(str(variant), batch_size, side, settings.precision, device)


def _draw(stored: results.Results, out: str, measured: results.Setting) -> list[str]:
    """Every setting's figures under figures/<setting>/; returns their paths relative to out.

    Only the setting this run measured has new points: another setting's figures are drawn again
    only where one is missing (the same points draw the same files).
    """
    written = []
    for setting in stored.settings:
        directory = os.path.join(FIGURES_DIR, setting.slug)
        rows = stored.rows_of(setting)
        names = figures.file_names(rows)
        if setting != measured and all(os.path.isfile(os.path.join(out, directory, name)) for name in names):
            written += [os.path.join(directory, name) for name in names]
            continue
        os.makedirs(os.path.join(out, directory), exist_ok=True)
        written += [os.path.join(directory, f) for f in figures.draw_all(rows, os.path.join(out, directory))]
    return written


def _measure_all(todo: dict, config: Config, stored: results.Results, session: points.Session, log) -> None:
    """Measures the points in order, recording each attempt as crashed before it starts."""
    counted = {v: session.count(v) for v in todo}
    flops = [counted[v].ops("flops") * b for v, batches in todo.items() for b in batches]
    # A larger batch cannot fit where a smaller one ran out of memory or killed the process.
    too_big = {}
    for row in [] if config.retry_failed else stored.rows:
        if row.status in (results.OUT_OF_MEMORY, results.CRASHED) and row.precision == config.measure.precision:
            too_big[(row.model, row.resolution)] = min(row.batch_size, too_big.get((row.model, row.resolution), 1e9))
    eta, out, done, attempt = _Eta(config.measure.timing_options), config.out_dir, 0, []

    def starting(row: results.Row) -> None:
        """Records the attempt first: a process killed mid-point leaves a row that says so."""
        cli.check_stop()  # a safe point: every point measured so far is recorded
        attempt[:] = [row]
        stored.put(points.failed_row(row, results.CRASHED, "the process died while measuring this point (killed, "
                                     "e.g. by the out-of-memory killer); --retry_failed measures it again"))
        results.write(out, stored)

    for variant, batch_sizes in todo.items():
        side = config.measure.sized(variant).input_shape(1)[1]
        rows = session.points(variant, batch_sizes, counted=counted[variant],
                              too_big=too_big.get((str(variant), side)), starting=starting)
        started = time.perf_counter()
        try:
            for row in rows:
                attempt.clear()
                stored.put(row)
                results.write(out, stored)
                eta.add(row, time.perf_counter() - started)
                done += 1
                summary = (f"{row.time_per_image_s * 1e3:.2f} ms/image latency, {row.images_per_s:.1f} images/s"
                           if row.status == results.OK else f"{row.status}: {row.error[:100]}")
                log(f"[{done}/{len(flops)}] {variant} batch {row.batch_size}: {summary} "
                    f"(left: {eta.left(flops[done:])})")
                started = time.perf_counter()
        except KeyboardInterrupt:
            if attempt:  # interrupted, not crashed: the rerun measures it
                stored.remove(attempt[0].key)
                results.write(out, stored)
            raise
        except Exception as error:  # a bug: recorded as what it is, then raised with its traceback
            if attempt:
                stored.put(points.failed_row(attempt[0], results.ERROR, f"{type(error).__name__}: {error}"))
                results.write(out, stored)
            raise


class _Eta:
    """Time left: each point costs a fixed overhead (compile, weights) plus its calls at the FLOP/s seen."""

    def __init__(self, options: timing.TimingOptions):
        self.options, self.overhead_s, self.rate, self.points = options, 0.0, 0.0, 0

    def add(self, row: results.Row, wall_s: float) -> None:
        """Learns from one finished point how long its overheads took and how fast the device computes."""
        if row.status != results.OK:
            return
        calls = row.warmup_calls + row.latency_calls + row.throughput_calls
        self.points += 1
        self.overhead_s += (max(0.0, wall_s - row.time_per_image_s * row.batch_size * calls)
                            - self.overhead_s) / self.points
        self.rate += (row.achieved_flops_per_s - self.rate) / self.points

    def left(self, batch_flops: list[float]) -> str:
        """A readable estimate for the points still to measure, given each one's FLOPs per batch."""
        if not self.points:
            return "?"
        o = self.options
        # Warm-up calls, then latency and throughput runs of min_repeats calls or min_time_s each.
        seconds = sum(self.overhead_s + o.warmup * f / self.rate + 2 * max(o.min_time_s, o.min_repeats * f / self.rate)
                      for f in batch_flops)
        return values.format_duration(seconds)
