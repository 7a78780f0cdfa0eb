"""Result rows of the main job and their files: results.json, the source of truth, and results.csv.

results.json holds the environment (device, software, runtime configuration, the peak FLOP/s
probe per precision), the settings the directory was measured at (precision and resolution),
and one row per point. It is validated field by field on read: a malformed file gives one line
naming it and the fix. results.csv is rewritten from the rows on every write, so it is never
behind and a deleted one comes back on the next run.
"""

import csv
import dataclasses
import io
import json
import math
import os
import typing
from typing import Optional

from core import failures, files, precisions
from core.errors import UserError

FORMAT = 2
JSON_NAME, CSV_NAME = "results.json", "results.csv"

# Statuses and precisions are the ground floor's one table of each (a row's status is one of STATUSES).
STATUSES = failures.STATUSES
OK, OUT_OF_MEMORY, COMPILE_ERROR, ERROR, CRASHED = (failures.OK, failures.OUT_OF_MEMORY, failures.COMPILE_ERROR,
                                                    failures.ERROR, failures.CRASHED)
PRECISIONS = precisions.NAMES


@dataclasses.dataclass
class Row:
    """Everything measured and counted for one network at one batch size, units in the names."""

    model: str  # the network's name, or a variant's canonical string ("resnet50:width=0.5"; models.variant)
    display_name: str
    family: str
    batch_size: int
    resolution: int
    precision: str  # float32, bfloat16 or float16
    device: str  # e.g. "cpu: AMD EPYC 9B14, 2 cores" or "NVIDIA H100 80GB HBM3"
    native_resolution: int = 0  # the variant's own input size: the network's (the paper's) unless it sets one
    status: str = OK
    error: str = ""
    # Analytical, from measure.cost, per image (the batch's count divided by the batch size).
    params: int = 0
    macs_per_image: int = 0
    flops_per_image: int = 0
    paper_ops_per_image: int = 0  # the paper's convention, grouped convolutions as dense
    activations_per_image: int = 0
    memory_analytical_bytes: int = 0  # parameters + statistics + input + peak live activations
    # Latency of the jitted eval forward pass: each call dispatched and waited for; compile excluded.
    time_per_image_s: Optional[float] = None  # median batch latency / batch size
    time_per_image_p25_s: Optional[float] = None
    time_per_image_p75_s: Optional[float] = None
    latency_calls: Optional[int] = None
    warmup_calls: Optional[int] = None
    # Throughput: calls dispatched back to back, waited for once at the end.
    throughput_time_per_image_s: Optional[float] = None
    images_per_s: Optional[float] = None  # from the throughput run
    throughput_calls: Optional[int] = None
    dispatch_s: Optional[float] = None  # median host time for a call to return, per call
    compile_s: Optional[float] = None
    achieved_flops_per_s: Optional[float] = None  # FLOPs per image / latency per image
    fraction_of_peak: Optional[float] = None  # achieved / the matmul probe's FLOP/s
    # Memory measured on the device.
    memory_xla_argument_bytes: Optional[int] = None
    memory_xla_output_bytes: Optional[int] = None
    memory_xla_temp_bytes: Optional[int] = None
    memory_xla_total_bytes: Optional[int] = None
    memory_device_peak_bytes: Optional[int] = None  # where the backend reports it (GPU)
    # Power: source is the meter ("nvml", "rapl"), "modelled" (--power_watts) or "not measured".
    power_source: str = "not measured"
    power_w: Optional[float] = None
    idle_power_w: Optional[float] = None
    energy_per_image_j: Optional[float] = None
    # The paper's reference numbers (accuracy is the paper's, never measured here); 0.0 for a variant.
    top1_percent_paper: float = 0.0
    gops_paper: float = 0.0
    params_m_paper: float = 0.0

    @property
    def key(self) -> tuple:
        """Everything that defines a point: two rows with one key are one measurement."""
        return point_key(self.model, self.batch_size, self.resolution, self.precision, self.device)


def point_key(model: str, batch_size: int, resolution: int, precision: str, device: str) -> tuple:
    """The key of a point (see Row.key), for points not measured yet."""
    return (model, batch_size, resolution, precision, device)


FIELDS = [f.name for f in dataclasses.fields(Row)]
_HINTS = typing.get_type_hints(Row)


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a run was asked to measure at: a precision, and a resolution (None: each network's own)."""

    precision: str
    resolution: Optional[int] = None

    def includes(self, row: Row) -> bool:
        """Whether the row was measured at this setting."""
        return row.precision == self.precision and row.resolution == (self.resolution or row.native_resolution)

    @property
    def title(self) -> str:
        """A readable name, e.g. "float32, each network at its own resolution"."""
        where = "each network at its own resolution" if self.resolution is None else f"{self.resolution}x{self.resolution}"
        return f"{self.precision}, {where}"

    @property
    def slug(self) -> str:
        """A file-name-safe name, e.g. "float32-native" or "bfloat16-224"."""
        return f"{self.precision}-{self.resolution or 'native'}"


@dataclasses.dataclass
class Results:
    """The contents of a results directory: environment, settings and rows."""

    environment: dict = dataclasses.field(default_factory=dict)
    settings: list = dataclasses.field(default_factory=list)  # of Setting, in the order first run
    rows: list = dataclasses.field(default_factory=list)  # of Row

    def rows_of(self, setting: Setting) -> list[Row]:
        """The rows measured at one setting, in file order."""
        return [r for r in self.rows if setting.includes(r)]

    def put(self, row: Row) -> None:
        """Adds a row, replacing the one with the same key in place."""
        for i, old in enumerate(self.rows):
            if old.key == row.key:
                self.rows[i] = row
                return
        self.rows.append(row)

    def remove(self, key: tuple) -> None:
        """Drops the row with this key, if any."""
        self.rows = [r for r in self.rows if r.key != key]


def write(out_dir: str, contents: Results) -> None:
    """Writes results.json (strict JSON: no NaN or Infinity), then results.csv from the same rows."""
    data = {"format": FORMAT, "environment": contents.environment,
            "settings": [dataclasses.asdict(s) for s in contents.settings],
            "rows": [dataclasses.asdict(r) for r in contents.rows]}
    files.atomic_write(os.path.join(out_dir, JSON_NAME), json.dumps(data, indent=1, allow_nan=False) + "\n")
    text = io.StringIO()
    writer = csv.DictWriter(text, FIELDS)
    writer.writeheader()
    writer.writerows(dataclasses.asdict(r) for r in contents.rows)
    files.atomic_write(os.path.join(out_dir, CSV_NAME), text.getvalue())


_Malformed = files.Malformed


def read(out_dir: str) -> Results:
    """The contents of out_dir/results.json (empty when absent); UserError names a malformed file."""
    try:
        return files.read_json(os.path.join(out_dir, JSON_NAME), "a valid results file",
                               "move it away or rerun with --overwrite", check=_parse)
    except FileNotFoundError:
        return Results()


def _parse(data) -> Results:
    """Results from decoded JSON, checking the shape and the type of every field."""
    if not isinstance(data, dict):
        raise _Malformed(f"the top level is a {type(data).__name__}, not an object")
    if data.get("format") != FORMAT:
        raise _Malformed(f"format {data.get('format')!r}, this version reads format {FORMAT}")
    unknown = set(data) - {"format", "environment", "settings", "rows"}
    if unknown:
        raise _Malformed(f"unknown keys {sorted(unknown)}")
    environment = _environment(data.get("environment"))
    settings = [_setting(s, i) for i, s in enumerate(_list(data, "settings"))]
    rows = [_row(r, i) for i, r in enumerate(_list(data, "rows"))]
    keys = [r.key for r in rows]
    if len(set(keys)) != len(keys):
        raise _Malformed("two rows measure the same point")
    for row in rows:
        if not any(s.includes(row) for s in settings):
            raise _Malformed(f"row {row.model} at batch {row.batch_size} belongs to no setting")
    return Results(environment, settings, rows)


def _list(data: dict, key: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise _Malformed(f"'{key}' is a {type(value).__name__}, not a list")
    return value


# Environment keys every results file has, with their types; other keys must be JSON scalars.
_ENVIRONMENT_TYPES = {"device": str, "platform": str, "jax": str, "jaxlib": str, "xla_flags": str,
                      "peak_flops_per_s": dict}


def _environment(environment) -> dict:
    if not isinstance(environment, dict):
        raise _Malformed(f"'environment' is a {type(environment).__name__}, not an object")
    for key, kind in _ENVIRONMENT_TYPES.items():
        if not isinstance(environment.get(key), kind):
            raise _Malformed(f"environment '{key}' is missing or not a {kind.__name__}")
    for precision, peak in environment["peak_flops_per_s"].items():
        if precision not in PRECISIONS or not _is_number(peak) or not peak > 0:
            raise _Malformed(f"environment peak_flops_per_s has {precision!r}: {peak!r}")
    return environment


def _setting(value, index: int) -> Setting:
    if not isinstance(value, dict) or set(value) != {"precision", "resolution"}:
        raise _Malformed(f"setting {index} is not {{precision, resolution}}")
    resolution = value["resolution"]
    if value["precision"] not in PRECISIONS or not (resolution is None or _is_int(resolution) and resolution > 0):
        raise _Malformed(f"setting {index} is {value}")
    return Setting(value["precision"], resolution)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _row(value, index: int) -> Row:
    """One row, every field present and of its declared type."""
    if not isinstance(value, dict):
        raise _Malformed(f"row {index} is a {type(value).__name__}, not an object")
    if set(value) != set(FIELDS):
        missing, extra = sorted(set(FIELDS) - set(value)), sorted(set(value) - set(FIELDS))
        raise _Malformed(f"row {index} lacks {missing} / has unknown {extra}")
    fields = {}
    for name in FIELDS:
        fields[name] = _typed(value[name], _HINTS[name], f"row {index} field '{name}'")
    if fields["status"] not in STATUSES or fields["precision"] not in PRECISIONS:
        raise _Malformed(f"row {index} has status {fields['status']!r}, precision {fields['precision']!r}")
    if fields["batch_size"] < 1 or fields["resolution"] < 1:
        raise _Malformed(f"row {index} has batch size {fields['batch_size']}, resolution {fields['resolution']}")
    return Row(**fields)


def describe_rows(rows: list[dict]) -> str:
    """Timed rows (as dicts) in a few words for a progress line: each batch size's time per image, or its status."""
    return ", ".join(f"batch {r['batch_size']} {r['time_per_image_s'] * 1e3:.3g} ms/image" if r["status"] == OK
                     else f"batch {r['batch_size']} {r['status']}" for r in rows)


def row_from_json(value, where: str) -> Row:
    """A row from its JSON object (as `dataclasses.asdict` wrote it), every field checked; UserError naming `where`."""
    try:
        return _row(value, 0)
    except _Malformed as error:
        raise UserError(f"{where}: not a valid result row ({str(error).replace('row 0 ', '')})") from None


def _typed(value, hint, where: str):
    """The value if it has the type `hint` (int, float, str or Optional of one); floats may be ints."""
    args = typing.get_args(hint)
    if args and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is str and isinstance(value, str):
        return value
    if hint is int and _is_int(value):
        return value
    if hint is float and _is_number(value):
        return float(value)
    raise _Malformed(f"{where} is {value!r}, not {getattr(hint, '__name__', hint)}")
