"""The recorder: marks, trapezoid integration against known integrals, counters, threads, plots."""
import math
import time
import warnings

import pytest

from lowbit.power import CallableSensor, ConstantSensor, ModelSensor, Recorder


class FakeClock:
    def __init__(self):
        self.t = 10.0

    def __call__(self):
        return self.t


def _run(rec, clock, steps, samples_per_step, dt):
    with rec:
        for _ in range(steps):
            for _ in range(samples_per_step):
                clock.t += dt
                rec.sample()
            clock.t += dt
            rec.mark("step")


def test_linear_and_constant_power_integrate_exactly():
    clock = FakeClock()
    linear = CallableSensor("linear", lambda: 2.0 + 3.0 * (clock.t - 10.0))  # P(t) = 2 + 3t
    rec = Recorder([linear, ConstantSensor(7.0)], interval=None, clock=clock)
    _run(rec, clock, steps=3, samples_per_step=4, dt=0.25)  # each step lasts 1.25 s
    per = rec.energy_per_mark()
    assert list(per.label) == ["step"] * 3
    for k, row in per.iterrows():
        a, b = 1.25 * k, 1.25 * (k + 1)
        assert row.seconds == pytest.approx(1.25)
        assert row.linear_J == pytest.approx(2 * (b - a) + 1.5 * (b * b - a * a), rel=1e-12)
        assert row.constant_J == pytest.approx(7.0 * 1.25, rel=1e-12)
    assert rec.joules_per_step("constant") == pytest.approx(8.75)


def test_marks_split_steps_and_epochs():
    clock = FakeClock()
    rec = Recorder([ConstantSensor(2.0)], interval=None, clock=clock)
    with rec:
        for epoch in range(2):
            for _ in range(3):
                clock.t += 0.5
                rec.mark("step")
            clock.t += 1.0
            rec.mark("epoch")
    per = rec.energy_per_mark()
    assert list(per.label) == ["step"] * 3 + ["epoch"] + ["step"] * 3 + ["epoch"]
    assert per.constant_J.tolist() == pytest.approx([1.0, 1.0, 1.0, 2.0] * 2)
    assert len(rec.energy_per_mark("epoch")) == 2
    frame = rec.frame()
    assert list(frame.columns) == ["t", "constant", "mark"]
    assert (frame.mark != "").sum() == 8 and frame.t.iloc[0] == 0.0
    assert frame.t.iloc[-1] == pytest.approx(5.0)  # 2 x (3 x 0.5 + 1.0) s


def test_energy_counter_is_preferred_to_sampled_power():
    class Counter(ConstantSensor):
        """Reports 1 W but its counter says 5 J per second: the counter wins."""

        def __init__(self, clock):
            super().__init__(1.0, "counter")
            self.clock, self.t0 = clock, clock()

        def energy_j(self):
            return 5.0 * (self.clock() - self.t0)

    clock = FakeClock()
    rec = Recorder([Counter(clock)], interval=None, clock=clock)
    _run(rec, clock, steps=2, samples_per_step=2, dt=0.1)
    assert rec.energy_per_mark().counter_J.tolist() == pytest.approx([1.5, 1.5])


def test_model_sensor_gives_the_model_energy_per_step():
    clock = FakeClock()
    model = ModelSensor(0.25, clock=clock)
    rec = Recorder([model, ConstantSensor(4.0)], interval=None, clock=clock)
    _run(rec, clock, steps=4, samples_per_step=1, dt=0.05)
    per = rec.energy_per_mark()
    assert per.model_J.tolist() == pytest.approx([0.25] * 4)
    assert model.get_value() == pytest.approx(0.25 / 0.1)
    assert rec.joules_per_step() == pytest.approx(0.4)  # the measured sensor, not the model


def test_background_thread_samples_between_marks():
    rec = Recorder([ConstantSensor(3.0)], interval=0.005)
    with rec:
        for _ in range(3):
            time.sleep(0.05)
            rec.mark("step")
    frame, per = rec.frame(), rec.energy_per_mark()
    assert len(frame) > 3 + 2 * 3  # more than the mark samples: the thread sampled too
    assert per.constant_J.tolist() == pytest.approx((3.0 * per.seconds).tolist(), rel=1e-9)
    assert frame.t.is_monotonic_increasing


def test_failing_sensor_gives_nan_and_one_warning():
    def flaky():
        raise OSError("i2c timeout")

    clock = FakeClock()
    rec = Recorder([CallableSensor("flaky", flaky), ConstantSensor(1.0)], interval=None, clock=clock)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _run(rec, clock, steps=2, samples_per_step=2, dt=0.1)
    assert len(w) == 1 and "i2c timeout" in str(w[0].message)
    per = rec.energy_per_mark()
    assert math.isnan(per.flaky_J[0]) and per.constant_J[0] == pytest.approx(0.3)


def test_recorder_misuse_is_explained(tmp_path):
    with pytest.raises(ValueError, match="interval"):
        Recorder([], interval=0)
    with pytest.raises(ValueError, match="unique"):
        Recorder([ConstantSensor(1.0), ConstantSensor(2.0)])
    rec = Recorder([ConstantSensor(1.0)], interval=None)
    with pytest.raises(RuntimeError, match="start the Recorder"):
        rec.mark()
    with rec:
        with pytest.raises(ValueError, match="label"):
            rec.mark("")
    with pytest.raises(ValueError, match="no marks labelled"):
        rec.joules_per_step()
    with pytest.raises(RuntimeError, match="already started"):
        rec.start()
    rec.to_csv(tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().startswith("t,constant,mark")
    with pytest.raises(ValueError, match="no sensors"):
        Recorder([], interval=None).joules_per_step()


def test_plots_write_pngs(tmp_path):
    import torch.nn as nn

    from lowbit.energy import estimate
    from lowbit.power.plots import plot_energy_breakdown, plot_power

    clock = FakeClock()
    rec = Recorder([CallableSensor("ramp", lambda: clock.t), ModelSensor(1.0, clock=clock)], interval=None, clock=clock)
    _run(rec, clock, steps=3, samples_per_step=3, dt=0.1)
    png = plot_power(rec, tmp_path / "power.png")
    est = estimate(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.Flatten(),
                                 nn.Linear(4 * 4 * 4, 3)), (3, 8, 8), "mls:2,1")
    bars = plot_energy_breakdown(est, tmp_path / "energy.png")
    for path in (png, bars):
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_total_joules_sums_measured_sensors_only(monkeypatch):
    clock = FakeClock()
    rec = Recorder([ConstantSensor(2.0, "a"), ConstantSensor(3.0, "b"), ModelSensor(100.0, clock=clock)],
                   interval=None, clock=clock)
    with rec:
        clock.t += 2.0
        rec.mark("step")
        clock.t += 1.0
        assert rec.total_joules() == pytest.approx(15.0)  # 5 W for 3 s; the model is not a measurement
    assert [s.name for s in rec.measured()] == ["a", "b"]
    import lowbit.power.sensors as S

    monkeypatch.setattr(S, "FACTORIES", {"fake": lambda: [ConstantSensor(1.0, "auto")]})
    assert [s.name for s in Recorder(interval=None).sensors] == ["auto"]
    with Recorder([], interval=None) as empty:
        assert math.isnan(empty.total_joules())


def test_coarse_counter_gives_the_right_mean_per_step():
    class Coarse(ConstantSensor):
        """A 10 W counter that only updates every 0.1 s (like NVML's on an H100)."""

        def __init__(self, clock):
            super().__init__(10.0, "coarse")
            self.clock, self.t0 = clock, clock()

        def energy_j(self):
            return 10.0 * (int(round((self.clock() - self.t0) * 1000)) // 100) / 10

    clock = FakeClock()
    rec = Recorder([Coarse(clock)], interval=None, clock=clock)
    _run(rec, clock, steps=40, samples_per_step=0, dt=0.025)  # 40 steps of 25 ms = 1 s
    per = rec.energy_per_mark()
    assert per.coarse_J.median() == 0.0  # most steps see no tick: the median would be wrong
    assert rec.joules_per_step() == pytest.approx(10.0 * 0.025)


def test_model_sensor_for_a_model_uses_the_energy_model():
    import torch.nn as nn

    from lowbit.energy import estimate

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    sensor = ModelSensor.for_model(model, (3, 8, 8), "mls:2,1", batch=4, table="mls65")
    assert sensor.name == "model:mls:2,1:mls65"
    assert sensor.joules_per_step == estimate(model, (3, 8, 8), "mls:2,1", "mls65", batch=4).joules_per_step()
