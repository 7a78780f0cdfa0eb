"""The main job: measure every network (or variant) at every batch size on this device, then draw the report.

One run at a time per output directory (a lock). Before anything is measured the input, the
directory and the device are checked; results already there are validated and must come from
this device and runtime. Each point is recorded as `crashed` before it is measured and
replaced by its result after, so a process killed mid-point (the out-of-memory killer) leaves
a row that says so, and the rerun goes on past it.
"""

import dataclasses
import functools
import math
import os
import platform
import re
import shutil
import sys
import time
from typing import Callable, Optional

import jax
import jaxlib

import models
from core import cli, files, runtime, values
from core.errors import UserError
from measure import cost, figures, memory, power, report, results, timing

FIGURES_DIR = "figures"
# Environment entries that must match for rows to share a directory: anything else mixes results.
SAME_RUNTIME_KEYS = ("device", "platform", "jax", "jaxlib", "xla_flags", "glibc_tunables")
IDLE_WINDOW_S = 0.5


@dataclasses.dataclass(frozen=True)
class Config:
    """What to measure and where to write it."""

    models: tuple[str, ...]  # networks or variant strings ("resnet50:width=0.5"); see models.variant
    batch_sizes: tuple[int, ...]
    out_dir: str
    precision: str = "float32"
    resolution: Optional[int] = None  # None: each variant's own input size (its network's unless it sets one)
    timing_options: timing.TimingOptions = timing.TimingOptions()
    power_watts: Optional[float] = None  # a modelled constant, used only where no meter reads
    power_window_s: float = 1.0
    idle_settle_s: float = 2.0  # sleep before the idle power is read, so the device has settled
    overwrite: bool = False
    retry_failed: bool = False  # measure again the points that failed or crashed


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: Optional[jax.Device] = None) -> str:
    """A readable name of the device: the GPU's kind, or the CPU's model with its core count."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu: {_cpu_model()}, {os.cpu_count()} cores"
    return device.device_kind


def default_device() -> jax.Device:
    """JAX's default device; a backend that cannot start is the user's to fix (UserError)."""
    try:
        return jax.devices()[0]
    except Exception as error:  # pylint: disable=broad-except  # JAX raises RuntimeError or a bare AssertionError
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        platforms = os.environ.get("JAX_PLATFORMS", "")
        raise UserError(f"JAX cannot start its backend{f' (JAX_PLATFORMS={platforms})' if platforms else ''}: "
                        f"{first}; check JAX_PLATFORMS and the installed jaxlib (pip install -e '.[cuda]' for "
                        "NVIDIA GPUs)") from None


def default_out_dir(device: Optional[jax.Device] = None) -> str:
    """results/<device>/, the device's name made safe for a path."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return os.path.join("results", slug)


def environment(device: jax.Device) -> dict:
    """Where the numbers come from: device, software versions, runtime configuration, host."""
    return {"device": device_name(device), "platform": device.platform, "device_count": jax.device_count(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
            **runtime.in_force(),
            "host": platform.node(), "os": platform.platform()}


def check_config(config: Config) -> tuple[str, ...]:
    """The variants to measure as canonical strings, each once in the given order; UserError on any bad input."""
    names = tuple(dict.fromkeys(str(models.variant(name)) for name in config.models))
    if not names:
        raise UserError("no networks to measure: give --models a comma-separated list, e.g. --models=resnet50")
    if not config.batch_sizes:
        raise UserError("no batch sizes to measure at: give --batch_sizes, e.g. --batch_sizes=1,16")
    timing.precision_dtype(config.precision)
    for name, value in (("power_watts", config.power_watts), ("power_window_s", config.power_window_s)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name} must be a finite number >= 0; got {value}")
    for name in names:
        variant = models.variant(name)
        if None not in (variant.resolution, config.resolution) and variant.resolution != config.resolution:
            raise UserError(f"{variant} sets resolution {variant.resolution} but --resolution={config.resolution}; "
                            "leave one of them out (or measure that variant in a run of its own)")
        for batch_size in config.batch_sizes:
            _input_shape(name, batch_size, config)
    return names


def _input_shape(name: str, batch_size: int, config: Config) -> tuple[int, ...]:
    """A variant's input shape at the job's resolution, or at its own when it sets one."""
    variant = models.variant(name)
    return models.input_shape(variant.name, batch_size,
                              config.resolution if variant.resolution is None else variant.resolution)


def run(config: Config, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> results.Results:
    """Checks everything, then measures every missing point under the directory's lock, then reports."""
    names = check_config(config)
    device = default_device()
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


def _run_locked(config: Config, names: tuple[str, ...], device: jax.Device, log) -> results.Results:
    """The job proper, holding the directory's lock."""
    out = config.out_dir
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
    setting = results.Setting(config.precision, config.resolution)
    if setting not in stored.settings:
        stored.settings.append(setting)
    peaks = dict(stored.environment.get("peak_flops_per_s", {}))
    stored.environment = {**stored.environment, **here, "peak_flops_per_s": peaks}
    results.write(out, stored)  # results.csv is rebuilt from results.json on every run

    done = {r.key for r in stored.rows if r.status == results.OK or not config.retry_failed}
    todo = [(n, b) for n in names for b in sorted(config.batch_sizes)
            if _key(n, b, config, here["device"]) not in done]
    log(f"device: {here['device']}; {len(todo)} points to measure, {len(stored.rows)} already in {out}")
    log(f"timing: batch sizes {', '.join(map(str, sorted(config.batch_sizes)))}; "
        f"{timing.describe(config.timing_options)}")
    if here["xla_flags"] or here.get("runtime_notes"):
        log(f"runtime: XLA_FLAGS={here['xla_flags'] or '(none)'}" + (f"; {here['runtime_notes']}"
                                                                     if here.get("runtime_notes") else ""))

    meter, meter_note = power.open_meter(device)
    try:
        window_s, idle_w = power_baseline(meter, config)
        if config.precision not in peaks:
            peaks[config.precision] = timing.peak_flops_per_s(config.precision, device=device)
        log(f"peak: {peaks[config.precision] / 1e9:.1f} GFLOP/s ({config.precision} matmul probe)")
        if meter is None:
            log(f"power: not measured ({meter_note})" + (f"; modelled as {config.power_watts} W"
                                                         if config.power_watts is not None else ""))
        stored.environment.update(
            power_meter=meter.name if meter else "none", power_note=meter_note, idle_power_w=idle_w,
            power_window_s=window_s, power_watts_modelled=config.power_watts,
            timing=dataclasses.asdict(config.timing_options))
        results.write(out, stored)
        _measure_all(todo, config, stored, here["device"], meter, idle_w, window_s, log)
    finally:
        if meter is not None:
            meter.close()
    written = _draw(stored, out, setting)
    report.write_report(stored, out, written)
    log(f"wrote results.csv, results.json, {len(written)} figure files and report.md/html in {out}")
    return stored


def power_baseline(meter: Optional[power.Meter], config: Config) -> tuple[float, Optional[float]]:
    """(power window in s, idle power in W, None without a meter), read before the peak probe heats the device."""
    window_s = power.window_s(meter, config.power_window_s) if meter else config.power_window_s
    idle_w = power.idle_power(meter, max(IDLE_WINDOW_S, window_s), config.idle_settle_s) if meter else None
    return window_s, idle_w


def _key(name: str, batch_size: int, config: Config, device: str) -> tuple:
    resolution = _input_shape(name, batch_size, config)[1]
    return results.point_key(name, batch_size, resolution, config.precision, device)


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


def _measure_all(todo, config: Config, stored: results.Results, device: str, meter, idle_w, window_s, log) -> None:
    """Measures the points in order, recording each attempt before it starts."""
    counted = {n: count_variant(n, config) for n in dict.fromkeys(n for n, _ in todo)}
    flops = {(n, b): counted[n].ops("flops") * b for n, b in todo}
    # A larger batch cannot fit where a smaller one ran out of memory or killed the process.
    too_big = {}
    for row in [] if config.retry_failed else stored.rows:
        if row.status in (results.OUT_OF_MEMORY, results.CRASHED) and row.precision == config.precision:
            too_big[(row.model, row.resolution)] = min(row.batch_size, too_big.get((row.model, row.resolution), 1e9))
    eta, weights, out = _Eta(config.timing_options), {}, config.out_dir
    for i, (name, batch_size) in enumerate(todo, 1):
        cli.check_stop()  # between points: every point measured so far is recorded
        started = time.perf_counter()
        row = base_row(name, batch_size, config, device, counted[name])
        unmeasured = functools.partial(failed_row, row)
        limit = too_big.get((name, row.resolution))
        if limit is not None and batch_size > limit:
            row = unmeasured(results.OUT_OF_MEMORY, f"skipped: batch {limit} ran out of memory or crashed")
        else:
            stored.put(unmeasured(results.CRASHED, "the process died while measuring this point (killed, e.g. by "
                                                   "the out-of-memory killer); --retry_failed measures it again"))
            results.write(out, stored)
            try:
                if name not in weights:  # one network's weights on the device at a time
                    weights.clear()
                    weights[name] = variant_variables(name, config, counted[name].variables)
                if isinstance(weights[name], timing.MeasureFailed):
                    failure = weights[name]
                    row = unmeasured(failure.status, f"making the weights: {failure.message}")
                else:
                    row = measure_point(name, batch_size, config, row, meter, idle_w, window_s, weights[name],
                                        stored.environment["peak_flops_per_s"][config.precision])
            except KeyboardInterrupt:
                stored.remove(row.key)  # interrupted, not crashed: the rerun measures it
                results.write(out, stored)
                raise
            except Exception as error:  # a bug: recorded as what it is, then raised with its traceback
                stored.put(unmeasured(results.ERROR, f"{type(error).__name__}: {error}"))
                results.write(out, stored)
                raise
            if row.status == results.OUT_OF_MEMORY:
                too_big[(name, row.resolution)] = batch_size
        stored.put(row)
        results.write(out, stored)
        eta.add(row, time.perf_counter() - started)
        summary = (f"{row.time_per_image_s * 1e3:.2f} ms/image latency, {row.images_per_s:.1f} images/s"
                   if row.status == results.OK else f"{row.status}: {row.error[:100]}")
        log(f"[{i}/{len(todo)}] {name} batch {batch_size}: {summary} (left: {eta.left([flops[p] for p in todo[i:]])})")


def count_variant(name: str, config: Config) -> cost.Cost:
    """The analytical cost of a variant at batch 1, at the resolution it is measured at."""
    variant = models.variant(name)
    return cost.count_model(variant.name, 1, _input_shape(name, 1, config)[1], **dict(variant.knobs))


def base_row(name: str, batch_size: int, config: Config, device: str, counted: cost.Cost) -> results.Row:
    """A row with the variant's identity, its analytical costs and the paper's reference numbers.

    `counted` is the variant's cost at batch 1: in eval every operation count and every live
    activation scales exactly with the batch (tests/test_cost_models.py pins it), parameters not.
    The paper's numbers (accuracy above all) belong to its networks as they are: a variant that
    overrides a knob or the resolution has none (0.0, as a network the paper did not measure).
    """
    variant = models.variant(name)
    spec = models.spec(variant.name)
    paper = spec.paper if variant.is_default else None
    per_batch = counted.input_bytes + counted.peak_activation_bytes
    return results.Row(
        model=name, display_name=variant.display_name, family=spec.family, batch_size=batch_size,
        resolution=counted.resolution, native_resolution=variant.resolution or spec.input_size,
        precision=config.precision,
        device=device, params=counted.params, macs_per_image=counted.ops("macs"),
        flops_per_image=counted.ops("flops"), paper_ops_per_image=counted.ops("paper", dense_groups=True),
        activations_per_image=counted.total.activations,
        # Counted in float32; every value (weights, input, activations) is cast to the precision.
        memory_analytical_bytes=(counted.memory_bytes - per_batch + batch_size * per_batch)
        * timing.precision_dtype(config.precision).itemsize // 4,
        top1_percent_paper=paper.top1_percent if paper else 0.0, gops_paper=paper.gops_paper if paper else 0.0,
        params_m_paper=paper.params_m_paper if paper else 0.0)


def failed_row(row: results.Row, status: str, message: str) -> results.Row:
    """A point that could not be measured: its counts, its status and the first line of why."""
    return dataclasses.replace(row, status=status, error=message.splitlines()[0][:300] if message else "")


def measure_point(name: str, batch_size: int, config: Config, row: results.Row, meter: Optional[power.Meter],
                  idle_w: Optional[float], window_s: float, variables, peak_flops: float) -> results.Row:
    """Times and meters one variant at one batch size; failures become the row's status."""
    peak_before = memory.device_peak_bytes()
    try:
        measured = timing.time_forward(models.variant(name).module(), _input_shape(name, batch_size, config),
                                       config.precision, config.timing_options, variables=variables)
    except timing.MeasureFailed as failure:
        return failed_row(row, failure.status, failure.message)
    fields = measured.row_fields(row.flops_per_image, peak_flops)
    fields.update(memory.compiled_memory(measured.compiled).row_fields())
    peak_after = memory.device_peak_bytes()
    # The allocator's peak never resets: it is this point's only when this point raised it.
    if peak_after is not None and (peak_before is None or peak_after > peak_before):
        fields["memory_device_peak_bytes"] = peak_after
    if meter is not None:
        reading = power.measure_power(meter, measured.run_batch, window_s)
        fields.update(reading.row_fields(meter.name, batch_size, idle_w))
    elif config.power_watts is not None:
        fields.update(power_source="modelled", power_w=config.power_watts,
                      energy_per_image_j=config.power_watts * measured.median_per_image_s)
    return dataclasses.replace(row, **fields)


def variant_variables(name: str, config: Config, abstract=None):
    """The variant's weights on the device, or the MeasureFailed that stopped making them.

    `abstract`: the variables' shapes from the variant's cost count, which traced them already.
    """
    try:
        return timing.device_variables(models.variant(name).module(), _input_shape(name, 1, config), config.precision,
                                       abstract=abstract)
    except timing.MeasureFailed as failure:
        return failure


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
