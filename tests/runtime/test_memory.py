"""keep_freed_memory: later training steps reuse the blocks earlier steps freed, without page faults."""
import json
import os
import subprocess
import sys

import pytest

from lowbit.runtime.memory import _glibc, keep_freed_memory

_PROBE = r"""
import json, resource
import torch
import lowbit.nn as lnn
from lowbit.runtime.memory import keep_freed_memory
kept = keep_freed_memory()
torch.manual_seed(0)
conv = lambda ci, co: torch.nn.Conv2d(ci, co, 3, padding=1)
model = lnn.convert(torch.nn.Sequential(conv(3, 16), conv(16, 16), torch.nn.ReLU(), conv(16, 16), conv(16, 4)), "mls:2,1")
x = torch.randn(64, 3, 32, 32)
faults = []
for _ in range(6):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(x).square().mean().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps(dict(kept=kept, faults=faults)))
"""


def _later_step_faults(env_value: str) -> tuple:
    env = dict(os.environ, LOWBIT_KEEP_FREED_MEMORY=env_value)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    return report["kept"], min(report["faults"][2:])


@pytest.mark.skipif(_glibc() is None, reason="glibc allocator only")
def test_later_training_steps_reuse_freed_memory():
    kept, kept_faults = _later_step_faults("1")
    default, default_faults = _later_step_faults("0")
    assert kept and not default
    # steady state: some later step faults (almost) never when kept; every one faults thousands of
    # times with glibc's defaults (the heap top is trimmed and faulted in again)
    assert kept_faults < 50 and default_faults > 500, (kept_faults, default_faults)


def test_env_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("LOWBIT_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
