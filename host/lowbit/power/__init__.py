"""Measured power: sensors (pynq rails, Alveo, RAPL, NVML, model), a recorder that integrates
energy per step, and plots. See lowbit.power.recorder for the training-loop API."""
from lowbit.power.recorder import Recorder
from lowbit.power.sensors import (
    AlveoSensor, CallableSensor, ConstantSensor, ModelSensor, NvmlSensor, PynqRailSensor, RaplSensor,
    Sensor, SensorUnavailable, auto_sensors, nvml_sensors, pynq_rail_sensors, rapl_sensors,
)

__all__ = [
    "Recorder", "Sensor", "SensorUnavailable", "auto_sensors", "ConstantSensor", "CallableSensor",
    "ModelSensor", "PynqRailSensor", "pynq_rail_sensors", "AlveoSensor", "RaplSensor", "rapl_sensors",
    "NvmlSensor", "nvml_sensors",
]


def __getattr__(name):
    if name in ("plot_power", "plot_energy_breakdown"):  # matplotlib only when plotting
        from lowbit.power import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'lowbit.power' has no attribute {name!r}")
