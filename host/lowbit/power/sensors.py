"""Power sensors with pynq.DataRecorder's interface: ``name``, ``parents`` and ``get_value()`` (watts).

A sensor that also has a cumulative energy counter exposes ``energy_j()`` (joules since it was
created); the recorder prefers the counter to integrating sampled power.

* :class:`PynqRailSensor` / :func:`pynq_rail_sensors`: PMBus rails through ``pynq.get_rails()``
  (UltraScale+ boards: ZCU104, ZCU111, Kria, ...). PYNQ-Z1/Z2 have no rail sensors: measure
  them with an external meter wrapped in a :class:`CallableSensor`.
* :class:`AlveoSensor`: board power of an Alveo card, from pyxrt's electrical report or from
  ``xbutil`` / ``xrt-smi examine -r electrical --format JSON``.
* :class:`RaplSensor` / :func:`rapl_sensors`: CPU package energy from /sys/class/powercap (RAPL),
  counter wrap-around at ``max_energy_range_uj`` handled; the root is injectable for tests.
* :class:`NvmlSensor` / :func:`nvml_sensors`: NVIDIA GPUs through NVML (``pip install nvidia-ml-py``).
* :class:`ConstantSensor`, :class:`CallableSensor`, :class:`ModelSensor` (the energy model's
  joules per step, spread over the measured step time).
* :func:`auto_sensors`: every sensor this machine has; the missing kinds are reported in ONE
  warning and the run goes on.
"""
from __future__ import annotations

import glob
import importlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import warnings


class SensorUnavailable(RuntimeError):
    """This kind of sensor does not exist (or cannot be read) on this machine; the text says why."""


class Sensor:
    """Base class: subclasses implement ``read()`` (watts) and optionally ``energy_j()``."""

    unit = "W"

    def __init__(self, name: str) -> None:
        self.name = name
        self.parents = ()

    def get_value(self, parents=None) -> float:
        return float(self.read())

    @property
    def value(self) -> float:
        return self.get_value()

    def read(self) -> float:
        raise NotImplementedError

    def energy_j(self):
        """Joules since creation from a hardware counter, or None when there is none."""
        return None

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ConstantSensor(Sensor):
    def __init__(self, watts: float, name: str = "constant") -> None:
        super().__init__(name)
        self.watts = float(watts)

    def read(self) -> float:
        return self.watts


class CallableSensor(Sensor):
    """An external meter (USB power meter, lab supply, smart plug): ``read_watts()`` returns watts."""

    def __init__(self, name: str, read_watts) -> None:
        if not callable(read_watts):
            raise TypeError(f"CallableSensor needs a function returning watts, got {type(read_watts).__name__}")
        super().__init__(name)
        self._read = read_watts

    def read(self) -> float:
        return float(self._read())


class ModelSensor(Sensor):
    """The energy model as a sensor: ``joules_per_step`` at every step mark, power = J / step time.

    The recorder calls ``on_mark`` at each mark; only marks labelled one of ``step_labels`` end a
    step (an "epoch" mark right after the last step ends no step and adds no joules), and
    ``energy_j()`` counts whole steps, so the energy per marked step is exactly the model's figure.
    """

    def __init__(self, joules_per_step: float, name: str = "model", clock=time.monotonic,
                 step_labels=("step",)) -> None:
        super().__init__(name)
        self.joules_per_step = float(joules_per_step)
        self.step_labels = tuple(step_labels)
        self._clock = clock
        self._last = clock()
        self._steps = 0
        self._watts = float("nan")  # unknown until the first step ends

    @classmethod
    def for_model(cls, model, input_shape, fmt="fp32", batch: int = 1, table=None, name=None, **kwargs):
        """The energy model's joules per training step of ``model`` (lowbit.energy.estimate, with its
        default table unless ``table`` is given) as a sensor."""
        from lowbit.energy import estimate

        tables = {} if table is None else {"table": table}
        est = estimate(model, input_shape, fmt, batch=batch, **tables, **kwargs)
        return cls(est.joules_per_step(), name or f"model:{est.counts.fmt}:{est.table.name}")

    def on_mark(self, t: float, label: str = "step") -> None:
        if label not in self.step_labels:
            return
        if t > self._last:
            self._watts = self.joules_per_step / (t - self._last)
        self._last = t
        self._steps += 1

    def read(self) -> float:
        return self._watts

    def energy_j(self) -> float:
        return self._steps * self.joules_per_step


class PynqRailSensor(Sensor):
    """One PMBus rail's power sensor from ``pynq.get_rails()``."""

    def __init__(self, name: str, power_sensor) -> None:
        super().__init__(name)
        self._sensor = power_sensor

    def read(self) -> float:
        return float(self._sensor.get_value())


def pynq_rail_sensors(names=None, pynq_module=None) -> list:
    """Power sensors of the board's PMBus rails (all, or those in ``names``)."""
    try:
        with warnings.catch_warnings():  # pynq warns about libsensors itself; we say it once below
            warnings.simplefilter("ignore")
            pynq = pynq_module or importlib.import_module("pynq")
            rails = pynq.get_rails()
    except Exception as e:  # pynq missing, or no libsensors on this machine
        raise SensorUnavailable(f"pynq rails unavailable ({type(e).__name__}: {e})") from None
    found = [PynqRailSensor(f"rail:{n}", r.power) for n, r in sorted(rails.items())
             if getattr(r, "power", None) is not None and (names is None or n in names)]
    if not found:
        raise SensorUnavailable(
            "no PMBus power rails (PYNQ-Z1/Z2 have none): measure the board with an external meter "
            "and pass CallableSensor('board', read_watts) to the Recorder")
    return found


def _find_watts(report):
    """The board power in an XRT electrical report (pyxrt or xbutil JSON)."""
    if isinstance(report, dict):
        for key in ("power_consumption_watts", "power_consumption"):
            if key in report:
                return float(report[key])
        items = report.values()
    elif isinstance(report, list):
        items = report
    else:
        return None
    for item in items:
        watts = _find_watts(item)
        if watts is not None:
            return watts
    return None


class AlveoSensor(Sensor):
    """Alveo board power: pyxrt if importable, else ``xbutil``/``xrt-smi`` (one process per read)."""

    def __init__(self, device: "int | str" = 0, pyxrt_module=None, tool=None, runner=subprocess.run) -> None:
        super().__init__(f"alveo:{device}")
        self._device, self._runner = device, runner
        self._pyxrt = pyxrt_module
        if self._pyxrt is None and tool is None:
            try:
                self._pyxrt = importlib.import_module("pyxrt")
            except ImportError:
                pass
        self._tool = None if self._pyxrt else (tool or shutil.which("xrt-smi") or shutil.which("xbutil"))
        if self._pyxrt is None and self._tool is None:
            raise SensorUnavailable("Alveo: neither pyxrt nor xbutil/xrt-smi found (source the XRT setup.sh)")
        self.read()  # fail now, with the reason, rather than in the recorder's thread

    def _report(self):
        if self._pyxrt is not None:
            dev = self._pyxrt.device(self._device)
            return json.loads(dev.get_info(self._pyxrt.xrt_info_device.electrical))
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "electrical.json")
            cmd = [self._tool, "examine", "-r", "electrical", "--format", "JSON", "-o", out, "--force"]
            if isinstance(self._device, str):
                cmd[2:2] = ["-d", self._device]
            proc = self._runner(cmd, capture_output=True, text=True, timeout=30)
            if proc.returncode != 0 or not os.path.exists(out):
                raise SensorUnavailable(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout or '').strip()[:300]}")
            with open(out) as f:
                return json.load(f)

    def read(self) -> float:
        watts = _find_watts(self._report())
        if watts is None:
            raise SensorUnavailable("Alveo electrical report has no power_consumption_watts field")
        return watts


class RaplSensor(Sensor):
    """CPU energy from a powercap RAPL zone; ``get_value`` is the mean power since the previous read."""

    def __init__(self, zone: str, root: str = "/sys/class/powercap", clock=time.monotonic) -> None:
        self.path = os.path.join(root, zone)
        try:
            with open(os.path.join(self.path, "name")) as f:
                label = f.read().strip()
        except OSError:
            label = zone
        super().__init__(f"rapl:{label}")
        self._clock = clock
        self._lock = threading.Lock()
        self.max_range_uj = self._read_int("max_energy_range_uj")
        self._raw = self._read_int("energy_uj")
        self._total_uj = 0
        self._last_t, self._last_uj, self._watts = clock(), 0, 0.0

    def _read_int(self, field: str) -> int:
        path = os.path.join(self.path, field)
        try:
            with open(path) as f:
                return int(f.read().strip())
        except PermissionError:
            raise SensorUnavailable(f"{path} is readable by root only: run as root, or "
                                    f"`sudo chmod o+r {os.path.join(os.path.dirname(path), '*', 'energy_uj')}`") from None
        except (OSError, ValueError) as e:
            raise SensorUnavailable(f"cannot read {path}: {e}") from None

    def _update(self) -> int:
        """Unwrapped microjoules since creation (the counter restarts at 0 after max_energy_range_uj)."""
        raw = self._read_int("energy_uj")
        delta = raw - self._raw
        if delta < 0:
            delta += self.max_range_uj
        self._raw, self._total_uj = raw, self._total_uj + delta
        return self._total_uj

    def energy_j(self) -> float:
        with self._lock:
            return self._update() * 1e-6

    def read(self) -> float:
        with self._lock:
            total, t = self._update(), self._clock()
            if t > self._last_t:
                self._watts = (total - self._last_uj) * 1e-6 / (t - self._last_t)
                self._last_t, self._last_uj = t, total
            return self._watts


def rapl_sensors(root: str = "/sys/class/powercap", clock=time.monotonic) -> list:
    """One sensor per top-level RAPL zone (CPU packages; psys where present)."""
    zones = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "intel-rapl:*"))
                   if os.path.basename(p).count(":") == 1)
    if not zones:
        raise SensorUnavailable(f"no RAPL zones under {root} (not an Intel/AMD CPU with powercap, or a VM)")
    return [RaplSensor(z, root, clock) for z in zones]


class NvmlSensor(Sensor):
    """One NVIDIA GPU through NVML: power draw, and the total-energy counter on Volta and newer."""

    def __init__(self, index: int = 0, nvml_module=None) -> None:
        self._nvml = nvml_module or _import_nvml()
        self._nvml.nvmlInit()
        self._handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
        name = self._nvml.nvmlDeviceGetName(self._handle)
        super().__init__(f"nvml:{index}:{name.decode() if isinstance(name, bytes) else name}")
        try:
            self._energy0 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception:  # NVMLError_NotSupported on pre-Volta GPUs
            self._energy0 = None

    def read(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0  # milliwatts

    def energy_j(self):
        if self._energy0 is None:
            return None
        return (self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) - self._energy0) / 1000.0  # mJ

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass


def _import_nvml():
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise SensorUnavailable("NVML: `pip install nvidia-ml-py` (module pynvml) to read NVIDIA GPU power") from None


def nvml_sensors(nvml_module=None) -> list:
    nvml = nvml_module or _import_nvml()
    try:
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
    except Exception as e:
        raise SensorUnavailable(f"NVML: no NVIDIA driver/GPU ({type(e).__name__}: {e})") from None
    if count == 0:
        raise SensorUnavailable("NVML: no NVIDIA GPU")
    return [NvmlSensor(i, nvml) for i in range(count)]


def _alveo_sensors() -> list:
    return [AlveoSensor(0)]


FACTORIES = {"pynq": pynq_rail_sensors, "alveo": _alveo_sensors, "rapl": rapl_sensors, "nvml": nvml_sensors}


def auto_sensors(kinds=None, factories=None, warn: bool = True) -> list:
    """Every sensor of the given kinds (default: all) this machine has; what is missing, in one warning."""
    factories = factories or FACTORIES
    kinds = list(factories) if kinds is None else kinds
    found, missing = [], []
    for kind in kinds:
        if kind not in factories:
            raise ValueError(f"unknown sensor kind {kind!r}; choose from {list(factories)}")
        try:
            found.extend(factories[kind]())
        except SensorUnavailable as e:
            missing.append(f"{kind}: {e}")
        except Exception as e:  # a broken driver must not stop the training run
            missing.append(f"{kind}: {type(e).__name__}: {e}")
    if missing and warn:
        warnings.warn("power sensors not available (the run goes on without them): " + "; ".join(missing),
                      RuntimeWarning, stacklevel=2)
    return found
