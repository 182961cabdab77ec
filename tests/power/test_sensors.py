"""Sensors against fake sysfs trees and fake pynq / NVML / XRT modules."""
import json
import types
import warnings

import pytest

from lowbit.power import sensors as S


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def _zone(root, name, label, energy_uj, max_uj=1_000_000):
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def test_rapl_power_energy_and_wraparound(tmp_path):
    zone = _zone(tmp_path, "intel-rapl:0", "package-0", 990_000)
    _zone(tmp_path, "intel-rapl:0:0", "core", 5)  # a sub-zone: not a top-level sensor
    _zone(tmp_path, "intel-rapl:1", "package-1", 0)
    clock = FakeClock()
    sensors = S.rapl_sensors(str(tmp_path), clock)
    assert [s.name for s in sensors] == ["rapl:package-0", "rapl:package-1"]
    s = sensors[0]
    clock.t += 0.5
    (zone / "energy_uj").write_text("995000")  # +5000 uJ in 0.5 s
    assert s.get_value() == pytest.approx(0.01)
    clock.t += 1.0
    (zone / "energy_uj").write_text("15000")  # wrapped at 1e6: +20000 uJ
    assert s.get_value() == pytest.approx(0.02)
    assert s.energy_j() == pytest.approx(0.025)
    (zone / "energy_uj").write_text("16000")
    assert s.energy_j() == pytest.approx(0.026)
    clock.t += 1.0
    assert s.get_value() == pytest.approx(0.001)  # the energy_j read above is not lost


def test_rapl_missing_and_root_only(tmp_path, monkeypatch):
    with pytest.raises(S.SensorUnavailable, match="no RAPL zones"):
        S.rapl_sensors(str(tmp_path))
    _zone(tmp_path, "intel-rapl:0", "package-0", 1)
    real_open = open

    def deny(path, *a, **k):
        if str(path).endswith("energy_uj") and "max" not in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(S.SensorUnavailable, match="root only"):
        S.rapl_sensors(str(tmp_path))


def _fake_nvml(power_mw=(150_000,), energy_mj=1_000_000, energy_supported=True, count=1):
    state = {"power": list(power_mw), "energy": energy_mj, "init": 0, "shutdown": 0}

    class NVMLError(Exception):
        pass

    def energy(handle):
        if not energy_supported:
            raise NVMLError("Not Supported")
        return state["energy"]

    mod = types.SimpleNamespace(
        nvmlInit=lambda: state.__setitem__("init", state["init"] + 1),
        nvmlShutdown=lambda: state.__setitem__("shutdown", state["shutdown"] + 1),
        nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: ("h", i),
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetPowerUsage=lambda h: state["power"].pop(0) if len(state["power"]) > 1 else state["power"][0],
        nvmlDeviceGetTotalEnergyConsumption=energy,
        NVMLError=NVMLError,
    )
    return mod, state


def test_nvml_power_and_energy_counter(monkeypatch):
    mod, state = _fake_nvml(power_mw=(150_000, 310_500))
    monkeypatch.setitem(__import__("sys").modules, "pynvml", mod)
    (s,) = S.nvml_sensors()
    assert s.name == "nvml:0:NVIDIA H100 80GB HBM3" and s.parents == ()
    assert s.get_value() == 150.0 and s.get_value() == 310.5
    assert s.energy_j() == 0.0
    state["energy"] += 2500  # mJ
    assert s.energy_j() == 2.5
    s.close()
    assert state["shutdown"] == 1


def test_nvml_without_energy_counter_and_without_gpu(monkeypatch):
    mod, _ = _fake_nvml(energy_supported=False)
    assert S.NvmlSensor(0, mod).energy_j() is None
    mod0, _ = _fake_nvml(count=0)
    with pytest.raises(S.SensorUnavailable, match="no NVIDIA GPU"):
        S.nvml_sensors(mod0)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # import fails
    with pytest.raises(S.SensorUnavailable, match="nvidia-ml-py"):
        S.nvml_sensors()


def test_pynq_rails_and_pynq_z2(monkeypatch):
    class Power:
        name, parents = "power", ()

        def __init__(self, w):
            self.w = w

        def get_value(self, parents=None):
            return self.w

    rails = {"VCCINT": types.SimpleNamespace(power=Power(3.25)), "12V": types.SimpleNamespace(power=Power(9.5)),
             "VCCAUX": types.SimpleNamespace(power=None)}
    fake = types.SimpleNamespace(get_rails=lambda: rails)
    found = S.pynq_rail_sensors(pynq_module=fake)
    assert [(s.name, s.get_value()) for s in found] == [("rail:12V", 9.5), ("rail:VCCINT", 3.25)]
    assert [s.name for s in S.pynq_rail_sensors(["VCCINT"], pynq_module=fake)] == ["rail:VCCINT"]
    z2 = types.SimpleNamespace(get_rails=lambda: {})
    with pytest.raises(S.SensorUnavailable, match="PYNQ-Z1/Z2 have none.*external meter"):
        S.pynq_rail_sensors(pynq_module=z2)
    monkeypatch.setitem(__import__("sys").modules, "pynq", z2)
    with pytest.raises(S.SensorUnavailable):
        S.pynq_rail_sensors()


def test_sensors_work_with_pynq_datarecorder_multisensor():
    MultiSensor = pytest.importorskip("pynq.pmbus").MultiSensor

    sensors = [S.ConstantSensor(2.0, "a"), S.CallableSensor("meter", lambda: 4.5)]
    assert MultiSensor(sensors).get_values() == (2.0, 4.5)


REPORT = {"devices": [{"device_id": "0000:3b:00.1", "electrical": {
    "power_rails": [{"id": "12v_pex", "voltage": {"volts": "12.1"}}],
    "power_consumption_max_watts": "225", "power_consumption_watts": "23.5"}}]}


def test_alveo_xbutil_json():
    calls = []

    def runner(cmd, **kw):
        calls.append(cmd)
        out = cmd[cmd.index("-o") + 1]
        with open(out, "w") as f:
            json.dump(REPORT, f)
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    s = S.AlveoSensor("0000:3b:00.1", tool="/opt/xilinx/xrt/bin/xbutil", runner=runner)
    assert s.get_value() == 23.5
    assert calls[0][:5] == ["/opt/xilinx/xrt/bin/xbutil", "examine", "-d", "0000:3b:00.1", "-r"]
    assert "--format" in calls[0] and "JSON" in calls[0]


def test_alveo_pyxrt_and_failures():
    pyxrt = types.SimpleNamespace(
        device=lambda i: types.SimpleNamespace(get_info=lambda key: json.dumps({"power_consumption_watts": "31.25"})),
        xrt_info_device=types.SimpleNamespace(electrical="electrical"))
    assert S.AlveoSensor(0, pyxrt_module=pyxrt).get_value() == 31.25
    bad = lambda cmd, **kw: types.SimpleNamespace(returncode=1, stdout="", stderr="no device found")  # noqa: E731
    with pytest.raises(S.SensorUnavailable, match="no device found"):
        S.AlveoSensor(0, tool="xbutil", runner=bad)


def test_auto_sensors_reports_missing_once_and_goes_on():
    def broken():
        raise OSError("driver crashed")

    def none():
        raise S.SensorUnavailable("not here")

    factories = {"good": lambda: [S.ConstantSensor(1.0)], "none": none, "broken": broken}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        found = S.auto_sensors(("good", "none", "broken"), factories=factories)
    assert [s.name for s in found] == ["constant"]
    assert len(w) == 1 and "none: not here" in str(w[0].message) and "driver crashed" in str(w[0].message)
    with pytest.raises(ValueError, match="unknown sensor kind"):
        S.auto_sensors(("gpu",), factories=factories)


def test_callable_sensor_needs_a_function():
    with pytest.raises(TypeError, match="returning watts"):
        S.CallableSensor("x", 3.0)
