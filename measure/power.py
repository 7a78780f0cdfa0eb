"""Power and energy from hardware counters: NVML on NVIDIA GPUs, RAPL on x86 CPU packages.

A meter reads a cumulative energy counter; power is the energy spent over a window of repeated
batches divided by its length. The counters move in steps (about 1 ms for RAPL, tens of
milliseconds for NVML), so a window spans at least UPDATES_PER_WINDOW of them, measured when the
meter opens. Idle power is the least of a few sleeping windows after the device has settled.
NVML's GPU is matched to JAX's by PCI bus id or UUID, never by a guessed index.
"""

import abc
import dataclasses
import glob
import os
import time
from typing import Any, Callable, Optional

import jax

from core import cli

RAPL_ROOT = "/sys/class/powercap"
# Counter updates in a power window: the quantisation error of a reading is at most one update.
UPDATES_PER_WINDOW = 25


class MeterUnavailable(Exception):
    """A meter that cannot be read here; the message says why."""


class Meter(abc.ABC):
    """A cumulative energy counter."""

    name: str = ""

    @abc.abstractmethod
    def energy_j(self) -> float:
        """Joules spent since an arbitrary origin; never decreases."""

    def power_w(self) -> Optional[float]:
        """The hardware's instantaneous (or short-average) power; None where it has none."""
        return None

    def close(self) -> None:
        """Releases the hardware interface."""


def _import_pynvml():
    """pynvml from nvidia-ml-py, imported only when a GPU meter is asked for."""
    try:
        import pynvml  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise MeterUnavailable("pynvml is not installed (pip install nvidia-ml-py)") from error
    return pynvml


def _nvml_handle(pynvml, device: Optional[jax.Device]):
    """NVML's handle of JAX's GPU, matched by PCI bus id or UUID, never by a guessed index.

    NVML numbers GPUs by PCI bus id and ignores CUDA_VISIBLE_DEVICES; CUDA numbers the visible
    GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID. An index is trusted only where the
    two orders provably agree: one GPU, or CUDA_DEVICE_ORDER=PCI_BUS_ID.
    """
    bus_id = getattr(device, "pci_bus_id", None)
    if bus_id:
        return pynvml.nvmlDeviceGetHandleByPciBusId_v2(bus_id), f"PCI bus {bus_id}"
    ordinal = 0 if device is None else getattr(device, "local_hardware_id", None)
    ordinal = device.id if ordinal is None else ordinal
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if ordinal < len(visible):
        if not visible[ordinal].isdigit():  # a UUID: unambiguous
            return pynvml.nvmlDeviceGetHandleByUUID(visible[ordinal]), f"UUID {visible[ordinal]}"
        ordinal = int(visible[ordinal])
    if pynvml.nvmlDeviceGetCount() == 1 or os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        return pynvml.nvmlDeviceGetHandleByIndex(ordinal), f"index {ordinal}"
    raise MeterUnavailable("cannot tell which NVML GPU is JAX's GPU (CUDA numbers GPUs fastest first, NVML by "
                           "PCI bus): set CUDA_DEVICE_ORDER=PCI_BUS_ID or name GPUs by UUID in CUDA_VISIBLE_DEVICES")


class NvmlMeter(Meter):
    """The board energy of an NVIDIA GPU (Volta or newer), from nvmlDeviceGetTotalEnergyConsumption."""

    name = "nvml"

    def __init__(self, device: Optional[jax.Device] = None):
        self._pynvml = _import_pynvml()
        try:
            self._pynvml.nvmlInit()
        except Exception as error:  # pynvml.NVMLError and its many subclasses
            raise MeterUnavailable(f"NVML cannot start: {error}") from error
        try:
            self._handle, self.matched_by = _nvml_handle(self._pynvml, device)
            self.energy_j()  # pre-Volta GPUs have no energy counter: fail now, not mid-run
        except MeterUnavailable:
            self._pynvml.nvmlShutdown()
            raise
        except Exception as error:
            self._pynvml.nvmlShutdown()
            raise MeterUnavailable(f"NVML has no energy counter for JAX's GPU: {error}") from error

    def energy_j(self) -> float:
        """Millijoules since the driver loaded, in joules."""
        return self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1e3

    def power_w(self) -> Optional[float]:
        """The board's power draw (averaged over one second on Ampere and newer)."""
        return self._pynvml.nvmlDeviceGetPowerUsage(self._handle) / 1e3

    def close(self) -> None:
        """Shuts NVML down."""
        self._pynvml.nvmlShutdown()


def _read_int(path: str) -> int:
    """An integer sysfs file."""
    with open(path) as f:
        return int(f.read().strip())


def _package_domains(root: str) -> list[str]:
    """RAPL package domains (intel-rapl:N, not their core/uncore/dram subzones), in order."""
    domains = []
    for path in sorted(glob.glob(os.path.join(root, "intel-rapl:*"))):
        if os.path.basename(path).count(":") != 1:
            continue
        try:
            with open(os.path.join(path, "name")) as f:
                name = f.read().strip()
        except OSError:
            name = "package"  # the name file is informative only
        if name.startswith("package"):
            domains.append(path)
    return domains


class RaplMeter(Meter):
    """The summed energy of the CPU packages from the Linux powercap RAPL counters (Intel, AMD Zen)."""

    name = "rapl"

    def __init__(self, root: str = RAPL_ROOT):
        self._domains = _package_domains(root)
        if not self._domains:
            raise MeterUnavailable(f"no RAPL package domains under {root}")
        try:
            self._ranges = [_read_int(os.path.join(d, "max_energy_range_uj")) for d in self._domains]
            self._last = [_read_int(os.path.join(d, "energy_uj")) for d in self._domains]
        except PermissionError as error:
            # Linux 5.10 made energy_uj readable by root only (CVE-2020-8694).
            raise MeterUnavailable(f"permission denied reading {error.filename}: run as root or make the "
                                   f"RAPL energy_uj files readable") from error
        except (OSError, ValueError) as error:
            raise MeterUnavailable(f"cannot read RAPL counters under {root}: {error}") from error
        self._total_uj = 0

    def energy_j(self) -> float:
        """Joules since the meter opened, across counter wraparounds (read at least once per wrap)."""
        for i, domain in enumerate(self._domains):
            raw = _read_int(os.path.join(domain, "energy_uj"))
            delta = raw - self._last[i]
            if delta < 0:  # the counter passed max_energy_range_uj and restarted from zero
                delta += self._ranges[i]
            self._total_uj += delta
            self._last[i] = raw
        return self._total_uj / 1e6


def open_meter(device: Optional[jax.Device] = None, rapl_root: str = RAPL_ROOT) -> tuple[Optional[Meter], str]:
    """The meter of a JAX device (GPU: NVML, CPU: RAPL) and "", or None and why not."""
    device = device or jax.devices()[0]
    platform = device.platform
    openers: dict[str, Callable[[], Meter]] = {"gpu": lambda: NvmlMeter(device), "cuda": lambda: NvmlMeter(device),
                                               "cpu": lambda: RaplMeter(rapl_root)}
    if platform not in openers:
        return None, f"no power meter for {platform} devices"
    try:
        return openers[platform](), ""
    except MeterUnavailable as error:
        return None, str(error)


@dataclasses.dataclass(frozen=True)
class PowerReading:
    """Average power over a window of repeated batches, and the energy each batch took."""

    power_w: float
    energy_per_call_j: float
    calls: int
    window_s: float

    def energy_per_image_j(self, batch_size: int) -> float:
        """Energy per image: one batch's energy shared among its images."""
        return self.energy_per_call_j / batch_size

    def row_fields(self, source: str, batch_size: int, idle_power_w: Optional[float] = None) -> dict:
        """The power fields of a results.Row; `source` is the meter's name."""
        return {"power_source": source, "power_w": self.power_w, "idle_power_w": idle_power_w,
                "energy_per_image_j": self.energy_per_image_j(batch_size)}


def update_interval_s(meter: Meter, timeout_s: float = 2.0) -> float:
    """Seconds between two updates of the meter's counter (timeout_s if it never moves that fast)."""
    changes, last = [], meter.energy_j()
    start = time.perf_counter()
    while len(changes) < 2 and time.perf_counter() - start < timeout_s:
        time.sleep(0.0005)
        value = meter.energy_j()
        if value != last:
            changes.append(time.perf_counter())
            last = value
    return changes[1] - changes[0] if len(changes) == 2 else timeout_s


def window_s(meter: Meter, min_window_s: float) -> float:
    """A measuring window long enough that the counter's steps cost at most 1/UPDATES_PER_WINDOW of it."""
    return max(min_window_s, UPDATES_PER_WINDOW * update_interval_s(meter))


def _reading(meter: Meter) -> tuple[float, float]:
    """(seconds, joules): the meter's energy and the clock at the middle of its reading.

    Pairing the reading with the clock on one side only would count any preemption in between
    as time without energy; the middle of a bracket is off by at most half the read.
    """
    before = time.perf_counter()
    joules = meter.energy_j()
    return (before + time.perf_counter()) / 2, joules


def measure_power(meter: Meter, run_batch: Callable[[], Any], min_window_s: float = 1.0) -> PowerReading:
    """Runs `run_batch` (which must block until done) until min_window_s passes, reading energy around it."""
    start_s, start_j = _reading(meter)
    calls = 0
    while True:
        run_batch()
        calls += 1
        cli.check_stop()  # between batches: a stop asked for never waits for a whole window
        if time.perf_counter() - start_s >= min_window_s:
            break
    end_s, end_j = _reading(meter)
    window, energy_j = end_s - start_s, end_j - start_j
    return PowerReading(power_w=energy_j / window, energy_per_call_j=energy_j / calls, calls=calls, window_s=window)


def _sleeping_power(meter: Meter, seconds: float) -> float:
    """Average watts over `seconds` of sleep."""
    start_s, start_j = _reading(meter)
    time.sleep(seconds)
    end_s, end_j = _reading(meter)
    return (end_j - start_j) / (end_s - start_s)


def idle_power(meter: Meter, window_s: float = 1.0, settle_s: float = 2.0, windows: int = 3) -> float:
    """Idle watts once the device has settled: after `settle_s` asleep, the least of a few sleeping windows.

    A device just used (a GPU after JAX starts it, a CPU after the imports) draws more for a
    while; transients only ever raise a window's power, so the least window is the baseline.
    """
    time.sleep(settle_s)
    return min(_sleeping_power(meter, window_s) for _ in range(windows))
