"""Power meters on fake hardware: a sysfs RAPL tree, a stand-in pynvml, a meter of known wattage."""

import os
import sys
import time
import types

import pytest

from measure import power, results

MAX_RANGE_UJ = 262_143_328_850


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
    meter, reason = power.open_meter("cpu", rapl_root=str(tmp_path / "missing"))
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
    meter, reason = power.open_meter("cpu", rapl_root=str(tmp_path))
    assert meter is None and "permission denied" in reason and "energy_uj" in reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_rapl_unreadable_file_is_unavailable(tmp_path):
    package = _zone(tmp_path, "intel-rapl:0", "package-0", 1)
    os.chmod(package / "energy_uj", 0)
    meter, reason = power.open_meter("cpu", rapl_root=str(tmp_path))
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
    assert power.idle_power(meter, 0.05) == pytest.approx(40.0, rel=0.02)


def test_open_meter_falls_back_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    meter, reason = power.open_meter("gpu")
    assert meter is None and "nvidia-ml-py" in reason
    assert power.open_meter("tpu") == (None, "no power meter for tpu devices")


def _fake_pynvml(energy_mj=123_456, power_mw=250_000, supported=True):
    """A stand-in for nvidia-ml-py's pynvml that records which GPU was opened."""
    module = types.ModuleType("pynvml")
    module.opened, module.shutdown = [], []
    module.nvmlInit = lambda: None
    module.nvmlShutdown = lambda: module.shutdown.append(True)
    module.nvmlDeviceGetHandleByIndex = lambda i: module.opened.append(("index", i)) or i
    module.nvmlDeviceGetHandleByUUID = lambda u: module.opened.append(("uuid", u)) or u

    def energy(handle):
        if not supported:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return energy_mj

    module.nvmlDeviceGetTotalEnergyConsumption = energy
    module.nvmlDeviceGetPowerUsage = lambda handle: power_mw
    return module


def test_nvml_meter_converts_units_and_honours_visible_devices(monkeypatch):
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    meter, reason = power.open_meter("gpu")
    assert reason == "" and meter.name == "nvml"
    assert fake.opened == [("index", 3)]
    assert meter.energy_j() == pytest.approx(123.456)
    assert meter.power_w() == pytest.approx(250.0)
    meter.close()
    assert fake.shutdown == [True]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    power.NvmlMeter(0)
    assert fake.opened[-1] == ("uuid", "GPU-abc")


def test_nvml_without_energy_counter_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(supported=False))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter, reason = power.open_meter("gpu")
    assert meter is None and "no energy counter" in reason


def test_real_nvml_meter_counts_up():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception:  # pylint: disable=broad-except
        pytest.skip("no NVIDIA driver")
    meter = power.NvmlMeter(0)
    first = meter.energy_j()
    time.sleep(0.2)
    assert meter.energy_j() >= first > 0
    assert meter.power_w() > 0
    meter.close()
