"""Jupyter-friendly power: no backend switch on import, titled and labelled plots with the model on its
own axis, log bars across decades, an epoch mark that charges no step, one default energy table."""
import subprocess
import sys

import pytest
import torch.nn as nn

from lowbit.power import ConstantSensor, ModelSensor, Recorder


class FakeClock:
    def __init__(self):
        self.t = 10.0

    def __call__(self):
        return self.t


def test_importing_lowbit_never_changes_the_matplotlib_backend():
    code = ("import matplotlib; matplotlib.use('svg')\n"
            "import lowbit, lowbit.power, lowbit.power.plots, lowbit.apps.measure\n"
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def _recorded(with_meter=True):
    clock = FakeClock()
    sensors = ([ConstantSensor(4.5, "rail:VCCINT")] if with_meter else []) + [ModelSensor(2e-6, clock=clock)]
    rec = Recorder(sensors, interval=None, clock=clock)
    with rec:
        for _ in range(3):
            clock.t += 0.5
            rec.mark("step")
        rec.mark("epoch")
    return rec


def test_power_plot_puts_the_model_on_its_own_axis_titled_with_format_and_device(tmp_path):
    from lowbit.power.plots import plot_power

    fig = plot_power(_recorded(), fmt="mls:2,1", device="zcu104 (simulated)")
    measured, modelled = fig.axes
    assert measured.get_ylabel() == "measured power (W)" and modelled.get_ylabel() == "modelled power (uW)"
    assert [l.get_label() for l in measured.get_lines()][:1] == ["rail:VCCINT (W)"]
    assert modelled.get_lines()[0].get_label() == "model (uW)"
    assert fig._suptitle.get_text() == "power over time (mls:2,1, zcu104 (simulated))"
    assert modelled.get_xlabel().startswith("time")
    assert plot_power(_recorded(), tmp_path / "p.png") == str(tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_power_plot_without_a_meter_says_so():
    from lowbit.power.plots import plot_power

    fig = plot_power(_recorded(with_meter=False))
    assert [t.get_text() for t in fig.axes[0].texts] == ["no power sensor found on this machine"]


def test_energy_bars_use_a_log_axis_when_they_span_decades():
    from lowbit import models
    from lowbit.energy import estimate
    from lowbit.power.plots import plot_energy_breakdown

    est = estimate(models.get("resnet20"), (3, 32, 32), "mls:2,1")
    ax = plot_energy_breakdown(est).axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "modelled energy per training step (uJ)"
    assert "mls" in ax.get_title() and est.table.name in ax.get_title()
    small = estimate(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)), (3, 8, 8), "mls:2,1")
    assert plot_energy_breakdown(small).axes[0].get_yscale() == "linear"


def test_an_epoch_mark_charges_no_model_step():
    per = _recorded().energy_per_mark()
    assert list(per.label) == ["step"] * 3 + ["epoch"]
    assert per.model_J.tolist() == pytest.approx([2e-6] * 3 + [0.0], abs=1e-18)


def test_one_default_energy_table_for_estimate_and_the_model_sensor():
    from lowbit.energy import estimate

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    default = estimate(net, (3, 8, 8), "mls:2,1")
    sensor = ModelSensor.for_model(net, (3, 8, 8), "mls:2,1")
    assert sensor.name.endswith(f":{default.table.name}")
    assert sensor.joules_per_step == pytest.approx(default.joules_per_step(), rel=1e-12)
