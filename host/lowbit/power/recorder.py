"""A power recorder: samples sensors in a background thread, marks steps, integrates energy per step.

For the training loop (``lowbit train --power auto``)::

    from lowbit.power import Recorder, auto_sensors

    with Recorder(auto_sensors(), interval=0.05) as rec:
        for batch in loader:
            train_step(batch)
            rec.mark("step")          # ends the step: its energy is what was drawn since the last mark
    per_step = rec.energy_per_mark()  # DataFrame: label, t_start, t_end, seconds, <sensor>_J
    rec.joules_per_step()             # mean J per step of the first measured sensor
    rec.total_joules()                # J since start, summed over the measured sensors

``Recorder()`` with no sensors uses ``auto_sensors()`` (one warning names what is missing).
    rec.to_csv("power.csv")           # every sample, with the marks

Energy per step uses a sensor's hardware energy counter when it has one (RAPL, NVML on Volta+,
the model sensor) and otherwise the trapezoid rule over the power samples; ``mark`` takes a
sample itself, so every step's integral starts and ends on a sample. A sensor that fails while
recording gives NaN and one warning; the run goes on.
"""
from __future__ import annotations

import math
import threading
import time
import warnings

import pandas as pd


class Recorder:
    def __init__(self, sensors=None, interval: "float | None" = 0.1, clock=time.monotonic) -> None:
        """``sensors``: default ``auto_sensors()``. ``interval`` seconds between background samples;
        None samples only at marks and ``sample()``."""
        if interval is not None and not interval > 0:
            raise ValueError(f"interval must be > 0 seconds (or None for marks only), got {interval!r}")
        if sensors is None:
            from lowbit.power.sensors import auto_sensors

            sensors = auto_sensors()
        self.sensors = list(sensors)
        names = [s.name for s in self.sensors]
        if len(set(names)) != len(names):
            raise ValueError(f"sensor names must be unique, got {names}")
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._failed = set()
        self.times, self.powers, self.energies, self.labels = [], [], [], []
        self.marks = []  # (row index, time, label)
        self.t0 = None

    # -- recording ---------------------------------------------------------------------------------
    def start(self) -> "Recorder":
        if self.t0 is not None:
            raise RuntimeError("this Recorder was already started; make a new one per run")
        self.t0 = self._clock()
        self.sample()
        if self.interval is not None:
            self._thread = threading.Thread(target=self._run, name="lowbit-power", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.t0 is not None:
            self.sample()

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _read(self, sensor, method):
        try:
            value = method()
            return math.nan if value is None else float(value)
        except Exception as e:
            if sensor.name not in self._failed:
                self._failed.add(sensor.name)
                warnings.warn(f"power sensor {sensor.name} failed ({type(e).__name__}: {e}); recording NaN",
                              RuntimeWarning, stacklevel=3)
            return math.nan

    def sample(self, label: str = "") -> int:
        """Read every sensor now; returns the row index."""
        if self.t0 is None:
            raise RuntimeError("start the Recorder first (use it as a context manager)")
        with self._lock:
            t = self._clock() - self.t0
            for s in self.sensors:
                if label and hasattr(s, "on_mark"):
                    s.on_mark(t + self.t0, label)
            self.powers.append([self._read(s, s.get_value) for s in self.sensors])
            self.energies.append([self._read(s, s.energy_j) for s in self.sensors])
            self.times.append(t)
            self.labels.append(label)
            return len(self.times) - 1

    def mark(self, label: str = "step") -> int:
        """End a step (or epoch, ...): sample now and label the sample."""
        if not label:
            raise ValueError("a mark needs a non-empty label, e.g. 'step' or 'epoch'")
        row = self.sample(label)
        with self._lock:
            self.marks.append((row, self.times[row], label))
        return row

    # -- results -----------------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """Every sample: t (s since start), one power column (W) per sensor, and the mark label."""
        with self._lock:
            data = {"t": list(self.times)}
            for i, s in enumerate(self.sensors):
                data[s.name] = [row[i] for row in self.powers]
            data["mark"] = list(self.labels)
        return pd.DataFrame(data)

    def energy_per_mark(self, label: "str | None" = None) -> pd.DataFrame:
        """One row per mark: the energy (J) drawn since the previous mark (or the start)."""
        with self._lock:
            times, powers, energies, marks = list(self.times), list(self.powers), list(self.energies), list(self.marks)
        rows, start = [], 0
        for end, t_end, lab in marks:
            row = {"label": lab, "t_start": times[start], "t_end": t_end, "seconds": t_end - times[start]}
            for i, s in enumerate(self.sensors):
                row[f"{s.name}_J"] = self._interval_energy(times, powers, energies, i, start, end)
            rows.append(row)
            start = end
        columns = ["label", "t_start", "t_end", "seconds"] + [f"{s.name}_J" for s in self.sensors]
        out = pd.DataFrame(rows, columns=columns)
        return out if label is None else out[out.label == label].reset_index(drop=True)

    def joules_per_step(self, sensor: "str | None" = None, label: str = "step") -> float:
        """Mean energy of the steps marked ``label`` for one sensor (default: the first measured one).

        The mean (total / steps), not the median: hardware counters tick coarsely (NVML's about every
        100 ms on an H100), so one short step may see 0 J and the next the whole tick."""
        measured = [s.name for s in self.measured()] or [s.name for s in self.sensors]
        if not measured:
            raise ValueError("no sensors recorded: pass some, e.g. Recorder(auto_sensors())")
        name = sensor or measured[0]
        if name not in [s.name for s in self.sensors]:
            raise ValueError(f"no sensor {name!r}; recorded: {[s.name for s in self.sensors]}")
        per = self.energy_per_mark(label)
        if per.empty:
            raise ValueError(f"no marks labelled {label!r}; call rec.mark({label!r}) after each step")
        return float(per[f"{name}_J"].sum() / len(per))

    @staticmethod
    def _interval_energy(times, powers, energies, i, start, end) -> float:
        e0, e1 = energies[start][i], energies[end][i]
        if not (math.isnan(e0) or math.isnan(e1)):
            return e1 - e0
        total = 0.0
        for k in range(start, end):
            total += 0.5 * (powers[k][i] + powers[k + 1][i]) * (times[k + 1] - times[k])
        return total

    def measured(self) -> list:
        """The sensors that measure (every one except model sensors)."""
        return [s for s in self.sensors if not hasattr(s, "on_mark")]

    def total_joules(self) -> float:
        """Energy since start summed over the measured sensors (NaN when none measures)."""
        row = self.sample()
        with self._lock:
            times, powers, energies = list(self.times), list(self.powers), list(self.energies)
        values = [self._interval_energy(times, powers, energies, i, 0, row)
                  for i, s in enumerate(self.sensors) if s in self.measured()]
        values = [v for v in values if not math.isnan(v)]
        return float(sum(values)) if values else math.nan

    def to_csv(self, path) -> None:
        self.frame().to_csv(path, index=False)
