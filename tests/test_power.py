"""Power meters on fake hardware: a sysfs RAPL tree, a stand-in pynvml, a meter of known wattage."""

import os
import sys
import time
import types

import pytest

from measure import power, results

MAX_RANGE_UJ = 262_143_328_850
CPU = types.SimpleNamespace(platform="cpu", id=0)


def gpu(ordinal=0, **attributes):
    """A stand-in for a JAX GPU device: its platform, ordinal and any extra attributes."""
    return types.SimpleNamespace(platform="gpu", id=ordinal, local_hardware_id=ordinal, **attributes)


def _zone(root, name, zone_name, energy_uj, max_range_uj=MAX_RANGE_UJ):
    """A powercap zone directory as the Linux RAPL driver lays it out."""
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(zone_name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return path


def _set_energy(zone, energy_uj):
    """Moves a fake zone's counter, as the hardware would."""
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


def test_rapl_sums_packages_and_skips_subzones(tmp_path):
    package0 = _zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    package1 = _zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    core = _zone(tmp_path, "intel-rapl:0:0", "core", 0)
    _zone(tmp_path, "intel-rapl:2", "psys", 0)  # the platform domain overlaps the packages
    meter = power.RaplMeter(str(tmp_path))
    assert meter.name == "rapl" and meter.energy_j() == 0.0
    _set_energy(package0, 3_000_000)
    _set_energy(package1, 5_500_000)
    _set_energy(core, 9_000_000)
    assert meter.energy_j() == pytest.approx(2.5)
    assert meter.power_w() is None


def test_rapl_unwraps_the_counter(tmp_path):
    package = _zone(tmp_path, "intel-rapl:0", "package-0", 900, max_range_uj=1000)
    meter = power.RaplMeter(str(tmp_path))
    _set_energy(package, 950)
    assert meter.energy_j() == pytest.approx(50e-6)
    _set_energy(package, 30)  # passed 1000 and restarted: 50 to the top, 30 after
    assert meter.energy_j() == pytest.approx(130e-6)
    _set_energy(package, 500)
    assert meter.energy_j() == pytest.approx(600e-6)


def test_rapl_without_packages_is_unavailable(tmp_path):
    with pytest.raises(power.MeterUnavailable, match="no RAPL package"):
        power.RaplMeter(str(tmp_path))
    meter, reason = power.open_meter(CPU, rapl_root=str(tmp_path / "missing"))
    assert meter is None and "no RAPL package" in reason


def test_rapl_permission_denied_is_unavailable(tmp_path, monkeypatch):
    _zone(tmp_path, "intel-rapl:0", "package-0", 1)
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if str(path).endswith("energy_uj") and "max_" not in os.path.basename(str(path)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    with pytest.raises(power.MeterUnavailable, match="permission denied"):
        power.RaplMeter(str(tmp_path))
    meter, reason = power.open_meter(CPU, rapl_root=str(tmp_path))
    assert meter is None and "permission denied" in reason and "energy_uj" in reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_rapl_unreadable_file_is_unavailable(tmp_path):
    package = _zone(tmp_path, "intel-rapl:0", "package-0", 1)
    os.chmod(package / "energy_uj", 0)
    meter, reason = power.open_meter(CPU, rapl_root=str(tmp_path))
    assert meter is None and "permission denied" in reason


class SteadyMeter(power.Meter):
    """A meter whose energy grows at a known wattage with the wall clock."""

    name = "steady"

    def __init__(self, watts):
        self.watts, self.origin = watts, time.perf_counter()

    def energy_j(self):
        """Watts times seconds since the meter was made."""
        return self.watts * (time.perf_counter() - self.origin)


def test_measure_power_recovers_a_known_wattage():
    calls = []
    reading = power.measure_power(SteadyMeter(150.0), lambda: (calls.append(1), time.sleep(0.002)),
                                  min_window_s=0.1)
    assert reading.power_w == pytest.approx(150.0, rel=0.02)
    assert reading.window_s >= 0.1 and reading.calls == len(calls) >= 1
    assert reading.energy_per_call_j == pytest.approx(reading.power_w * reading.window_s / reading.calls,
                                                      rel=0.02)
    assert reading.energy_per_image_j(4) == pytest.approx(reading.energy_per_call_j / 4)
    fields = reading.row_fields("steady", batch_size=4, idle_power_w=20.0)
    assert set(fields) <= set(results.FIELDS)
    assert fields["energy_per_image_j"] == reading.energy_per_image_j(4)


def test_measure_power_runs_at_least_once_and_idle_power():
    meter = SteadyMeter(40.0)
    reading = power.measure_power(meter, lambda: None, min_window_s=0.0)
    assert reading.calls == 1
    assert power.idle_power(meter, 0.2, settle_s=0.0) == pytest.approx(40.0, rel=0.02)


class WakingMeter(power.Meter):
    """A device that draws 100 W for its first 0.3 s awake, then settles at 20 W."""

    name = "waking"

    def __init__(self):
        self.origin = time.perf_counter()

    def energy_j(self):
        """100 W until 0.3 s, 20 W after."""
        t = time.perf_counter() - self.origin
        return 100.0 * min(t, 0.3) + 20.0 * max(0.0, t - 0.3)


def test_idle_power_waits_for_the_device_to_settle():
    assert power.idle_power(WakingMeter(), 0.1, settle_s=0.25, windows=3) == pytest.approx(20.0, rel=0.05)
    assert power.idle_power(WakingMeter(), 0.1, settle_s=0.0, windows=1) > 60  # no settling overstates it


class SteppedMeter(power.Meter):
    """A counter that moves only every `step_s` seconds, as NVML's does."""

    name = "stepped"

    def __init__(self, step_s):
        self.step_s, self.origin = step_s, time.perf_counter()

    def energy_j(self):
        """One joule per step."""
        return float((time.perf_counter() - self.origin) // self.step_s)


def test_power_windows_cover_many_counter_updates():
    assert power.update_interval_s(SteppedMeter(0.02)) == pytest.approx(0.02, rel=0.25)
    assert power.window_s(SteppedMeter(0.02), 0.1) == pytest.approx(power.UPDATES_PER_WINDOW * 0.02, rel=0.25)
    assert power.window_s(SteadyMeter(1.0), 1.0) == 1.0  # a fine-grained counter keeps the minimum


def test_open_meter_falls_back_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    meter, reason = power.open_meter(gpu())
    assert meter is None and "nvidia-ml-py" in reason
    assert power.open_meter(types.SimpleNamespace(platform="tpu")) == (None, "no power meter for tpu devices")


def _fake_pynvml(energy_mj=123_456, power_mw=250_000, supported=True, count=1):
    """A stand-in for nvidia-ml-py's pynvml that records which GPU was opened."""
    module = types.ModuleType("pynvml")
    module.opened, module.shutdown = [], []
    module.nvmlInit = lambda: None
    module.nvmlShutdown = lambda: module.shutdown.append(True)
    module.nvmlDeviceGetCount = lambda: count
    module.nvmlDeviceGetHandleByIndex = lambda i: module.opened.append(("index", i)) or i
    module.nvmlDeviceGetHandleByUUID = lambda u: module.opened.append(("uuid", u)) or u
    module.nvmlDeviceGetHandleByPciBusId_v2 = lambda b: module.opened.append(("pci", b)) or b

    def energy(handle):
        if not supported:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return energy_mj

    module.nvmlDeviceGetTotalEnergyConsumption = energy
    module.nvmlDeviceGetPowerUsage = lambda handle: power_mw
    return module


def test_nvml_meter_converts_units(monkeypatch):
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter, reason = power.open_meter(gpu())
    assert reason == "" and meter.name == "nvml" and meter.matched_by == "index 0"
    assert meter.energy_j() == pytest.approx(123.456)
    assert meter.power_w() == pytest.approx(250.0)
    meter.close()
    assert fake.shutdown == [True]


def test_nvml_matches_jax_gpu_by_pci_bus_id_or_uuid_never_a_guessed_index(monkeypatch):
    fake = _fake_pynvml(count=4)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert power.NvmlMeter(gpu(1, pci_bus_id="00000000:41:00.0")).matched_by == "PCI bus 00000000:41:00.0"
    assert fake.opened[-1] == ("pci", "00000000:41:00.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa,GPU-bbb")
    assert power.NvmlMeter(gpu(1)).matched_by == "UUID GPU-bbb"
    assert fake.opened[-1] == ("uuid", "GPU-bbb")
    # Four GPUs, numbered fastest first by CUDA: physical index 1 need not be NVML's index 1.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    meter, reason = power.open_meter(gpu(1))
    assert meter is None and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in reason
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert power.NvmlMeter(gpu(1)).matched_by == "index 1" and fake.opened[-1] == ("index", 1)


def test_nvml_without_energy_counter_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(supported=False))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter, reason = power.open_meter(gpu())
    assert meter is None and "no energy counter" in reason


def test_real_nvml_meter_counts_up():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception:  # pylint: disable=broad-except
        pytest.skip("no NVIDIA driver")
    import jax  # pylint: disable=import-outside-toplevel
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("JAX sees no GPU")
    meter = power.NvmlMeter(gpus[0])
    first = meter.energy_j()
    time.sleep(0.2)
    assert meter.energy_j() >= first > 0
    assert meter.power_w() > 0
    meter.close()
