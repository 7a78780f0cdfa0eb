"""The predictor's measurements: calibration kernels and networks timed here, and results directories read back.

Calibration times a list of targets (kernel strings from measure.predict.kernels, and networks or
variants) at each batch size, one line per target appended to a JSONL log through core.joblog:
within a budget in seconds, resumed by the same command without timing a target twice. Each line
holds results.Row dicts, as the explorer's measure jobs do, so one reader takes the calibration
log, an explorer sweep's JSONL files and a main job's results.json alike. Rows from another
device or precision are refused, as results directories refuse them.

A shared machine's pace drifts (other tenants, clocks) by tens of per cent over minutes, more than
the predictor's error. So each line also holds the time of one fixed kernel (kernels.PACE_REFERENCE)
taken just before and after its target, and read_points sets every target's latency against it:
times taken in a slow minute and a fast one land on one scale, the median pace of all the lines read.
"""

import dataclasses
import glob
import os
import time
from typing import Callable, Optional

import numpy as np

import models
from core import joblog
from core.errors import UserError
from measure import cost as cost_lib
from measure import findings, points, results, timing
from measure.cost import memo as cost_memo
from measure.predict import features, kernels
from measure.predict import model as model_lib

KERNEL_FAMILY = model_lib.KERNEL_FAMILY
PACE_OPTIONS = timing.TimingOptions(min_time_s=0.03, min_repeats=5, warmup=0)  # compiled and warm once per Timer


def layers_of(name: str, resolution: Optional[int] = None) -> features.Layers:
    """The counted layers (batch 1) of a kernel string or a variant (at `resolution` where given)."""
    if kernels.is_kernel(name):
        spec = kernels.parse(name)
        return features.Layers.of(cost_lib.count_module(spec.module(), spec.input_shape(1)))
    variant = models.variant(name).sized(resolution)
    return features.Layers.of(cost_lib.count_variant(variant, memo=cost_memo.SHARED))


def layers_to_time(variants: list[str]) -> list[str]:
    """The distinct layers of these variants (kernels.of_network), as kernel strings, in order of first use."""
    found = {}
    for variant in map(models.variant, variants):
        found.update(dict.fromkeys(str(k) for k in kernels.of_network(variant.module(), variant.input_shape(1))))
    return list(found)


def job_list(targets: list[str], batch_sizes: tuple[int, ...], precision: str, device: str) -> list:
    """(key, payload) per target: every batch size of it timed in one job."""
    batches = ",".join(map(str, batch_sizes))
    return [(f"time {name} {precision} batches={batches} on {device}", {"name": name}) for name in targets]


class Timer:
    """Times calibration targets on one device: networks through the main job's points, kernels alone."""

    def __init__(self, settings: points.Settings, batch_sizes: tuple[int, ...], device, device_name: str,
                 environment: dict):
        self.settings, self.batch_sizes, self.device, self.device_name = settings, batch_sizes, device, device_name
        self.environment = environment  # recorded on every line: a log is refused where its runtime differs
        self._session: Optional[points.Session] = None
        self._pace: Optional[timing.Timing] = None

    def __call__(self, payload: dict) -> dict:
        """The rows of one target, one per batch size, and the machine's pace around them."""
        name, start = payload["name"], time.perf_counter()
        before = self.pace_s()
        rows = self._kernel(kernels.parse(name)) if kernels.is_kernel(name) else self._network(name)
        # The faster of the two: a spike in one reading is the reference's bad luck, not the machine's pace.
        pace = min(before, self.pace_s())
        return {"name": name, "environment": self.environment, "rows": [dataclasses.asdict(r) for r in rows],
                "pace_s": pace, "seconds": time.perf_counter() - start}

    def pace_s(self) -> float:
        """Seconds per call of kernels.PACE_REFERENCE now (the lower quartile of a few calls)."""
        if self._pace is None:
            spec = kernels.parse(kernels.PACE_REFERENCE)
            self._pace = timing.time_forward(spec.module(), spec.input_shape(1), self.settings.precision,
                                             PACE_OPTIONS, device=self.device)
        return float(np.percentile(timing.latencies(self._pace.run_batch, PACE_OPTIONS), 25))

    def _network(self, name: str) -> list[results.Row]:
        """A network's points, measured as the main job measures them (power where a meter reads)."""
        if self._session is None:
            self._session = points.Session(self.settings, self.device, self.device_name)
        return list(self._session.points(models.variant(name), self.batch_sizes))

    def _kernel(self, spec: kernels.KernelSpec) -> list[results.Row]:
        """A kernel's latency at each batch size (its counts beside it)."""
        counted = cost_lib.count_module(spec.module(), spec.input_shape(1))
        rows = []
        for batch_size in self.batch_sizes:
            row = results.Row(model=str(spec), display_name=str(spec), family=KERNEL_FAMILY, batch_size=batch_size,
                              resolution=spec.input_shape()[1], native_resolution=spec.input_shape()[1],
                              precision=self.settings.precision, device=self.device_name, params=counted.params,
                              macs_per_image=counted.ops("macs"), flops_per_image=counted.ops("flops"))
            try:
                measured = timing.time_forward(spec.module(), spec.input_shape(batch_size), self.settings.precision,
                                               self.settings.timing_options, device=self.device)
            except timing.MeasureFailed as failure:
                rows.append(points.failed_row(row, failure.status, failure.message))
                continue
            rows.append(dataclasses.replace(row, **measured.row_fields(row.flops_per_image)))
        return rows

    def close(self) -> None:
        """Closes the power meter, if one was opened."""
        if self._session is not None:
            self._session.close()
            self._session = None


def calibrate(targets: list[str], log_path: str, timer: Timer, budget_s: float,
              progress: Callable[[str], None] = print) -> list[str]:
    """Times the targets not yet in the log, in order, until the log holds `budget_s` of timing, then merges it.

    The budget counts every run's timing, so a rerun after a kill finishes the work rather than
    adding a budget's worth. The first model.FEWEST_TARGETS are timed however long they take: a
    budget too short for a slow or busy machine still ends in a fit. Returns the keys timed.
    """
    jobs = job_list(targets, timer.batch_sizes, timer.settings.precision, timer.device_name)
    try:
        ran = joblog.run_jobs(jobs[:model_lib.FEWEST_TARGETS], log_path, timer, progress=progress, describe=_describe)
        left = max(budget_s - logged_seconds(log_path), 0.0)
        return ran + joblog.run_jobs(jobs, log_path, timer, progress=progress, describe=_describe,
                                     budget_s=left)
    finally:
        joblog.collect(log_path)


def logged_seconds(log_path: str) -> float:
    """Seconds of timing the log and its running shard file hold, summed over their lines."""
    lines = {}
    for path in [log_path, *joblog.shard_files(log_path)]:
        if os.path.exists(path):
            for line in joblog.ResultLog(path, repair=False).contents.rows:
                lines.setdefault(line["key"], line)
    return sum(_positive(line.get("seconds")) or 0.0 for line in lines.values())


def _describe(result: dict) -> str:
    """What one timed target found, for its progress line."""
    return results.describe_rows(result["rows"])


def timed_rows(path: str) -> list[tuple[results.Row, dict, Optional[float]]]:
    """(row, the environment it was timed in, the pace around it; where recorded) of a results directory or a log."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, results.JSON_NAME)):
        stored = results.read(path)
        return [(row, stored.environment, None) for row in stored.rows]
    if os.path.isdir(path):
        logs = sorted(glob.glob(os.path.join(glob.escape(path), "*.jsonl")))
        if not logs:
            raise UserError(f"{path} holds neither {results.JSON_NAME} nor JSONL logs of timed rows; give a "
                            "directory python -m measure, python -m explore or python -m measure.predict wrote")
    elif os.path.isfile(path):
        logs = [path]
    else:
        raise UserError(f"{path} does not exist; give a results directory or a calibration log")
    return [(results.row_from_json(value, f"{log}: {line['key']}: row {i}"), line.get("environment") or {},
             _positive(line.get("pace_s")))
            for log in logs for line in joblog.ResultLog(log, repair=False).contents.rows
            for i, value in enumerate(line.get("rows") or ())]


def _positive(value) -> Optional[float]:
    """A logged pace or duration: a positive finite number, else None (an older log's, or a hand-edited one's)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number and np.isfinite(value) and value > 0 else None


def read_points(paths: list[str], device: str, precision: str, environment: dict) -> list[model_lib.Point]:
    """The measured points of results directories or logs, each counted again here; UserError on another device.

    A latency timed beside a pace reading is scaled to the median pace of all of them (see the module docstring).
    """
    found, counted = [], {}  # a target timed at several batch sizes is counted once
    read = [(path, *entry) for path in paths for entry in timed_rows(path)]
    paces = [pace for *_, pace in read if pace is not None]
    typical = float(np.median(paces)) if paces else None
    for path, row, stored, pace in read:
        for key, value in stored.items():
            if key in environment and value != environment[key]:
                raise UserError(f"{path} was measured with {key} {value!r}, not {environment[key]!r}: its "
                                "times do not hold here; leave it out or fit on this machine's measurements")
        if row.status != results.OK or row.precision != precision or row.time_per_image_s is None:
            continue
        if row.device != device:
            raise UserError(f"{path} holds rows timed on {row.device!r}, not on {device!r}: they would mix; "
                            "leave it out or fit on this device's measurements")
        resolution = None if row.resolution == row.native_resolution else row.resolution
        if (row.model, resolution) not in counted:
            counted[row.model, resolution] = layers_of(row.model, resolution)
        found.append(_point(row, counted[row.model, resolution], path, typical / pace if pace else 1.0))
    return found


def _point(row: results.Row, layers: features.Layers, source: str, pace_scale: float) -> model_lib.Point:
    """The point of a measured row: its latency per call (at the typical pace) and the features of its layers."""
    power = row.power_w if findings.has_power(row) and row.power_source != "modelled" else None
    # The lower quartile of the timed calls: the time a shared machine's other jobs disturb least.
    per_image = row.time_per_image_p25_s or row.time_per_image_s
    return model_lib.Point(row.model, row.batch_size, per_image * row.batch_size * pace_scale,
                           layers.vector(row.batch_size), source, power, row.family, layers)
