"""Result rows of the main job, and their files: results.csv and results.json, written atomically."""

import csv
import dataclasses
import io
import json
import os
import tempfile
from typing import Optional
from models.errors import UserError

# Statuses of a measured point; only "ok" rows carry timings.
OK, OUT_OF_MEMORY, COMPILE_ERROR, ERROR = "ok", "out_of_memory", "compile_error", "error"


@dataclasses.dataclass
class Row:
    """Everything measured and counted for one network at one batch size, units in the names."""

    model: str
    display_name: str
    family: str
    batch_size: int
    resolution: int
    precision: str  # float32, bfloat16 or float16
    device: str  # e.g. "cpu: 2 cores" or "NVIDIA H100 80GB HBM3"
    status: str = OK
    error: str = ""
    # Analytical, from measure.cost, per image (the batch's count divided by the batch size).
    params: int = 0
    macs_per_image: int = 0
    flops_per_image: int = 0
    paper_ops_per_image: int = 0  # the paper's convention, grouped convolutions as dense
    activations_per_image: int = 0
    memory_analytical_bytes: int = 0  # parameters + statistics + input + peak live activations
    # Timing of the jitted eval forward pass, compile excluded.
    time_per_image_s: Optional[float] = None  # median over repeats
    time_per_image_p25_s: Optional[float] = None
    time_per_image_p75_s: Optional[float] = None
    images_per_s: Optional[float] = None
    compile_s: Optional[float] = None
    timed_batches: Optional[int] = None
    achieved_flops_per_s: Optional[float] = None
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
    # The paper's reference numbers (accuracy is the paper's, never measured here).
    top1_percent_paper: float = 0.0
    gops_paper: float = 0.0
    params_m_paper: float = 0.0

    @property
    def key(self) -> tuple:
        """What identifies a measured point, for resuming."""
        return (self.model, self.batch_size, self.resolution, self.precision)


FIELDS = [f.name for f in dataclasses.fields(Row)]
_TYPES = {f.name: f.type for f in dataclasses.fields(Row)}


def _atomic_write(path: str, text: str) -> None:
    """Writes a file so that a reader (or a crash) never sees half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write(out_dir: str, rows: list[Row], environment: dict) -> None:
    """Writes results.json (environment and rows) and results.csv (rows), each atomically."""
    data = {"environment": environment, "rows": [dataclasses.asdict(r) for r in rows]}
    _atomic_write(os.path.join(out_dir, "results.json"), json.dumps(data, indent=1) + "\n")
    text = io.StringIO()
    writer = csv.DictWriter(text, FIELDS)
    writer.writeheader()
    writer.writerows(dataclasses.asdict(r) for r in rows)
    _atomic_write(os.path.join(out_dir, "results.csv"), text.getvalue())


def read(out_dir: str) -> tuple[list[Row], dict]:
    """Reads the rows and environment of a results.json; ValueError names a corrupt file."""
    path = os.path.join(out_dir, "results.json")
    if not os.path.exists(path):
        return [], {}
    try:
        with open(path) as f:
            data = json.load(f)
        rows = [Row(**{k: v for k, v in r.items() if k in _TYPES}) for r in data["rows"]]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"{path} is corrupt ({error}); move it away or rerun with --overwrite") from error
    return rows, data.get("environment", {})
