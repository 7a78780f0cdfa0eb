"""A variant's points on the device: its counted row, its weights, and each batch size's time, memory and power.

The one way both the main job (measure/main_job.py) and the explorer's run step (explore/jobs.py)
measure a variant. A `Session` opens the device's power meter, reads idle power and the peak
FLOP/s once, then `Session.points` yields one results.Row per batch size: the variant's weights
are made once for all of them, and once a batch runs out of memory the larger ones are skipped.
"""

import dataclasses
import math
from typing import Callable, Iterator, Optional

import jax

import models
from core.errors import UserError
from measure import cost, device_memory, power, results, timing

IDLE_WINDOW_S = 0.5


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a variant's points are measured: precision, input side, timing and power."""

    precision: str = "float32"
    resolution: Optional[int] = None  # None: each variant's own input side (its network's unless it sets one)
    timing_options: timing.TimingOptions = timing.TimingOptions()
    power_watts: Optional[float] = None  # a modelled constant, used only where no meter reads
    power_window_s: float = 1.0
    idle_settle_s: float = 2.0  # sleep before the idle power is read, so the device has settled

    def __post_init__(self):
        timing.precision_dtype(self.precision)  # UserError naming the precisions
        for name in ("power_watts", "power_window_s", "idle_settle_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UserError(f"{name} must be a finite number >= 0; got {value}")

    def sized(self, variant: models.Variant) -> models.Variant:
        """The variant at the side it is measured at: its own when it sets one, else these settings'."""
        return variant.sized(self.resolution)


def base_row(variant: models.Variant, batch_size: int, settings: Settings, device: str,
             counted: cost.Cost) -> results.Row:
    """A row with the variant's identity, its analytical costs and the paper's reference numbers.

    `counted` is the variant's cost at batch 1 (Session.count): in eval every operation count and
    every live activation scales exactly with the batch (tests/test_cost_models.py pins it),
    parameters not. The paper's numbers (accuracy above all) belong to its networks as they are: a
    variant that overrides a knob or the resolution has none (0.0, as a network the paper did not measure).
    """
    spec = models.spec(variant.name)
    paper = spec.paper if variant.is_default else None
    per_batch = counted.input_bytes + counted.peak_activation_bytes
    return results.Row(
        model=str(variant), display_name=variant.display_name, family=spec.family, batch_size=batch_size,
        resolution=counted.resolution, native_resolution=variant.resolution or spec.input_size,
        precision=settings.precision, device=device, params=counted.params, macs_per_image=counted.ops("macs"),
        flops_per_image=counted.ops("flops"), paper_ops_per_image=counted.ops("paper", dense_groups=True),
        activations_per_image=counted.total.activations,
        # Counted in float32; every value (weights, input, activations) is cast to the precision.
        memory_analytical_bytes=(counted.memory_bytes - per_batch + batch_size * per_batch)
        * timing.precision_dtype(settings.precision).itemsize // 4,
        top1_percent_paper=paper.top1_percent if paper else 0.0, gops_paper=paper.gops_paper if paper else 0.0,
        params_m_paper=paper.params_m_paper if paper else 0.0)


def failed_row(row: results.Row, status: str, message: str) -> results.Row:
    """A point that could not be measured: its counts, its status and the first line of why."""
    return dataclasses.replace(row, status=status, error=message.splitlines()[0][:300] if message else "")


def measure_point(sized: models.Variant, row: results.Row, session: "Session", variables) -> results.Row:
    """Times and meters one variant (at its measured side) at the row's batch size; failures become its status."""
    peak_before = device_memory.device_peak_bytes()
    try:
        measured = timing.time_forward(sized.module(), sized.input_shape(row.batch_size), session.settings.precision,
                                       session.settings.timing_options, variables=variables)
    except timing.MeasureFailed as failure:
        return failed_row(row, failure.status, failure.message)
    fields = measured.row_fields(row.flops_per_image, session.peak_flops)
    fields.update(device_memory.compiled_memory(measured.compiled).row_fields())
    peak_after = device_memory.device_peak_bytes()
    # The allocator's peak never resets: it is this point's only when this point raised it.
    if peak_after is not None and (peak_before is None or peak_after > peak_before):
        fields["memory_device_peak_bytes"] = peak_after
    if session.meter is not None:
        reading = power.measure_power(session.meter, measured.run_batch, session.window_s)
        fields.update(reading.row_fields(session.meter.name, row.batch_size, session.idle_w))
    elif session.settings.power_watts is not None:
        fields.update(power_source="modelled", power_w=session.settings.power_watts,
                      energy_per_image_j=session.settings.power_watts * measured.median_per_image_s)
    return dataclasses.replace(row, **fields)


class Session:
    """The device's power meter, idle power and peak FLOP/s, read once, for measuring variants' points.

    The idle power is read before the peak probe heats the device. `peak_flops`: a probe's result
    from earlier (a results directory keeps it), else the probe runs here.
    """

    def __init__(self, settings: Settings, device: jax.Device, device_name: str, peak_flops: Optional[float] = None):
        self.settings, self.device, self.device_name = settings, device, device_name
        self.meter, self.meter_note = power.open_meter(device)
        try:
            meter = self.meter
            self.window_s = power.window_s(meter, settings.power_window_s) if meter else settings.power_window_s
            self.idle_w = power.idle_power(meter, max(IDLE_WINDOW_S, self.window_s), settings.idle_settle_s) \
                if meter else None
            self.peak_flops = peak_flops or timing.peak_flops_per_s(settings.precision, device=device)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the power meter, if one is open."""
        if self.meter is not None:
            self.meter.close()
            self.meter = None

    def describe(self) -> str:
        """How power is read (or modelled) and the peak, in one line for the log."""
        if self.meter is not None:
            watts = f"power: {self.meter.name}, idle {self.idle_w:.1f} W"
        else:
            watts = f"power: not measured ({self.meter_note})" + (
                f"; modelled as {self.settings.power_watts} W" if self.settings.power_watts is not None else "")
        return f"{watts}; peak {self.peak_flops / 1e9:.1f} GFLOP/s ({self.settings.precision} matmul probe)"

    def environment(self) -> dict:
        """What a results directory records about how its points were metered and timed."""
        return {"power_meter": self.meter.name if self.meter else "none", "power_note": self.meter_note,
                "idle_power_w": self.idle_w, "power_window_s": self.window_s,
                "power_watts_modelled": self.settings.power_watts,
                "timing": dataclasses.asdict(self.settings.timing_options)}

    def count(self, variant: models.Variant) -> cost.Cost:
        """The variant's analytical cost at batch 1, at the side it is measured at."""
        return cost.count_variant(self.settings.sized(variant))

    def points(self, variant: models.Variant, batch_sizes: tuple[int, ...], *, counted: Optional[cost.Cost] = None,
               too_big: Optional[int] = None,
               starting: Callable[[results.Row], None] = lambda row: None) -> Iterator[results.Row]:
        """One row per batch size, in the given order; batches above one that ran out of memory are skipped.

        `too_big`: a batch size known not to fit (from an earlier run). `starting(row)` is called with
        the bare row before each point is measured, so a caller can record the attempt first.
        """
        sized, counted = self.settings.sized(variant), counted or self.count(variant)
        variables = None  # the variant's weights on the device, made for its first measured point
        for batch_size in batch_sizes:
            row = base_row(variant, batch_size, self.settings, self.device_name, counted)
            if too_big is not None and batch_size > too_big:
                yield failed_row(row, results.OUT_OF_MEMORY, f"skipped: batch {too_big} ran out of memory or crashed")
                continue
            starting(row)
            if variables is None:
                try:
                    variables = timing.device_variables(sized.module(), sized.input_shape(1), self.settings.precision,
                                                        device=self.device, abstract=counted.variables)
                except timing.MeasureFailed as failure:
                    variables = failure
            if isinstance(variables, timing.MeasureFailed):
                row = failed_row(row, variables.status, f"making the weights: {variables.message}")
            else:
                row = measure_point(sized, row, self, variables)
            if row.status == results.OUT_OF_MEMORY:
                too_big = batch_size if too_big is None else min(too_big, batch_size)
            yield row
