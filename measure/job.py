"""The main job: measure every network at every batch size on this device, then draw the report."""

import dataclasses
import functools
import os
import platform
import re
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import jaxlib

import models
from measure import cost, figures, memory, power, report, results, timing
from models.errors import UserError


@dataclasses.dataclass(frozen=True)
class Config:
    """What to measure and where to write it."""

    models: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    out_dir: str
    precision: str = "float32"
    resolution: Optional[int] = None  # None: each network's own input size
    # One warm-up batch, then batches until half a second has passed: on a 2-core CPU the 98
    # points of the paper's sweep then take about 8 minutes; heavy points get one timed batch.
    timing_options: timing.TimingOptions = timing.TimingOptions(min_time_s=0.5, min_repeats=1, warmup=1)
    power_watts: Optional[float] = None  # a modelled constant, used only where no meter reads
    power_window_s: float = 1.0
    overwrite: bool = False


def device_name(device: Optional[jax.Device] = None) -> str:
    """A readable name of the device: the GPU's kind, or the CPU with its core count."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu: {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    return device.device_kind


def default_out_dir() -> str:
    """results/<device>/, the device's name made safe for a path."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name().lower()).strip("-")
    return os.path.join("results", slug)


def environment(config: Config, peak_flops: float, meter_name: str, meter_note: str,
                idle_w: Optional[float]) -> dict:
    """Where the numbers come from: device, software versions, XLA flags, host, meter."""
    device = jax.devices()[0]
    return {
        "device": device_name(device), "platform": device.platform, "device_count": jax.device_count(),
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "host": platform.node(), "os": platform.platform(),
        "precision": config.precision, "peak_flops_per_s": peak_flops,
        "peak_probe": f"{timing.probe_size(device.platform)}^2 matmul, {config.precision}",
        "power_meter": meter_name, "power_note": meter_note, "idle_power_w": idle_w,
        "power_watts_modelled": config.power_watts,
        "timing": dataclasses.asdict(config.timing_options),
    }


def _base_row(name: str, batch_size: int, config: Config, device: str, counted: cost.Cost) -> results.Row:
    """A row with the network's identity, its analytical costs and the paper's reference numbers.

    `counted` is the network's cost at batch 1: in eval every operation count and every live
    activation scales exactly with the batch (tests/test_cost_models.py pins it), parameters not.
    """
    spec = models.spec(name)
    per_batch = counted.input_bytes + counted.peak_activation_bytes
    return results.Row(
        model=name, display_name=spec.display_name, family=spec.family, batch_size=batch_size,
        resolution=counted.resolution, precision=config.precision, device=device, params=counted.params,
        macs_per_image=counted.ops("macs"), flops_per_image=counted.ops("flops"),
        paper_ops_per_image=counted.ops("paper", dense_groups=True), activations_per_image=counted.total.activations,
        # Counted in float32; every value (weights, input, activations) is cast to the precision.
        memory_analytical_bytes=(counted.memory_bytes - per_batch + batch_size * per_batch)
        * jnp.dtype(timing.PRECISIONS[config.precision]).itemsize // 4,
        top1_percent_paper=spec.paper.top1_percent, gops_paper=spec.paper.gops_paper,
        params_m_paper=spec.paper.params_m_paper)


def _failed_row(name: str, batch_size: int, config: Config, device: str, counted: cost.Cost, status: str,
                message: str) -> results.Row:
    """A point that could not be measured: its counts, its status and the first line of why."""
    return dataclasses.replace(_base_row(name, batch_size, config, device, counted), status=status,
                               error=message.splitlines()[0][:300] if message else "")


def measure_point(name: str, batch_size: int, config: Config, device: str, peak_flops: float,
                  meter: Optional[power.Meter], idle_w: Optional[float], variables,
                  counted: cost.Cost) -> results.Row:
    """Times and meters one network at one batch size; failures become the row's status."""
    row = _base_row(name, batch_size, config, device, counted)
    peak_before = memory.device_peak_bytes()
    try:
        measured = timing.time_forward(models.get(name), models.input_shape(name, batch_size, config.resolution),
                                       config.precision, config.timing_options, variables=variables)
    except timing.MeasureFailed as failure:
        return _failed_row(name, batch_size, config, device, counted, failure.status, failure.message)
    fields = measured.row_fields(row.flops_per_image, peak_flops)
    fields.update(memory.compiled_memory(measured.compiled).row_fields())
    peak_after = memory.device_peak_bytes()
    # The allocator's peak never resets: it is this point's only when this point raised it.
    if peak_after is not None and (peak_before is None or peak_after > peak_before):
        fields["memory_device_peak_bytes"] = peak_after
    if meter is not None:
        reading = power.measure_power(meter, measured.run_batch, config.power_window_s)
        fields.update(reading.row_fields(meter.name, batch_size, idle_w))
    elif config.power_watts is not None:
        fields.update(power_source="modelled", power_w=config.power_watts,
                      energy_per_image_j=config.power_watts * measured.median_per_image_s)
    return dataclasses.replace(row, **fields)


class _Eta:
    """Time left: each point costs a fixed overhead (compile, memory analysis) plus its FLOPs at the rate seen."""

    def __init__(self, options: timing.TimingOptions):
        self.options, self.overhead_s, self.rate, self.points = options, 0.0, 0.0, 0

    def add(self, row: results.Row, wall_s: float) -> None:
        """Learns from one finished point how long overheads take and how fast the device computes."""
        if row.status != results.OK:
            return
        batch_s = row.time_per_image_s * row.batch_size
        compute_s = batch_s * (self.options.warmup + row.timed_batches)
        self.points += 1
        self.overhead_s += (max(0.0, wall_s - compute_s) - self.overhead_s) / self.points
        self.rate += (row.achieved_flops_per_s - self.rate) / self.points

    def left(self, batch_flops: list[float]) -> str:
        """A readable estimate for the points still to measure, given each one's FLOPs per batch."""
        if not self.points:
            return "?"
        seconds = sum(self.overhead_s + max(self.options.min_time_s, self.options.min_repeats * f / self.rate)
                      + self.options.warmup * f / self.rate for f in batch_flops)
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _device_variables(name: str, config: Config):
    """The network's weights on the device, or the MeasureFailed that stopped making them."""
    try:
        return timing.device_variables(models.get(name), models.input_shape(name, 1, config.resolution),
                                       config.precision)
    except timing.MeasureFailed as failure:
        return failure


def run(config: Config, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> list[results.Row]:
    """Measures every missing point, writing results after each one, then draws figures and report."""
    for name in config.models:
        for batch_size in config.batch_sizes:
            models.input_shape(name, batch_size, config.resolution)  # bad input fails before any work
    rows, previous_env = ([], {}) if config.overwrite else results.read(config.out_dir)
    device = device_name()
    if previous_env and previous_env.get("device") != device:
        raise UserError(f"{config.out_dir} holds results measured on {previous_env['device']!r}, not on "
                         f"{device!r}; choose another --out or pass --overwrite")
    done = {row.key for row in rows}
    todo = [(n, b) for n in config.models for b in config.batch_sizes
            if (n, b, models.input_shape(n, b, config.resolution)[1], config.precision) not in done]
    log(f"device: {device}; {len(todo)} points to measure, {len(done)} already in {config.out_dir}")

    peak_flops = previous_env.get("peak_flops_per_s") or timing.peak_flops_per_s(config.precision)
    log(f"peak: {peak_flops / 1e9:.1f} GFLOP/s ({config.precision} matmul probe)")
    meter, meter_note = power.open_meter(jax.default_backend())
    idle_w = power.idle_power(meter, config.power_window_s) if meter else None
    if meter is None:
        log(f"power: not measured ({meter_note})" + (f"; modelled as {config.power_watts} W"
                                                     if config.power_watts is not None else ""))
    env = environment(config, peak_flops, meter.name if meter else "none", meter_note, idle_w)

    costs = {n: cost.count_model(n, 1, config.resolution) for n in dict.fromkeys(n for n, _ in todo)}
    flops = {(n, b): costs[n].ops("flops") * b for n, b in todo}
    eta, failed_models, weights = _Eta(config.timing_options), {}, {}
    try:
        for i, (name, batch_size) in enumerate(todo, 1):
            started = time.perf_counter()
            if name not in weights:  # one network's weights on the device at a time
                weights.clear()
                weights[name] = _device_variables(name, config)
            unmeasured = functools.partial(_failed_row, name, batch_size, config, device, costs[name])
            if isinstance(weights[name], timing.MeasureFailed):
                row = unmeasured(weights[name].status, f"making the weights: {weights[name].message}")
            elif name in failed_models:  # a larger batch cannot fit where a smaller one did not
                row = unmeasured(results.OUT_OF_MEMORY, f"skipped: batch {failed_models[name]} ran out of memory")
            else:
                row = measure_point(name, batch_size, config, device, peak_flops, meter, idle_w, weights[name],
                                    costs[name])
                if row.status == results.OUT_OF_MEMORY:
                    failed_models[name] = batch_size
            rows.append(row)
            results.write(config.out_dir, rows, env)
            eta.add(row, time.perf_counter() - started)
            summary = (f"{row.time_per_image_s * 1e3:.2f} ms/image" if row.status == results.OK
                       else f"{row.status}: {row.error[:80]}")
            log(f"[{i}/{len(todo)}] {name} batch {batch_size}: {summary} "
                f"(left: {eta.left([flops[p] for p in todo[i:]])})")
    finally:
        if meter is not None:
            meter.close()
    written = figures.draw_all(rows, config.out_dir)
    report.write_report(rows, env, config.out_dir, written)
    log(f"wrote results.csv, results.json, {len(written)} figure files and report.md/html in {config.out_dir}")
    return rows
