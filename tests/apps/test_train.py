import json

import pytest
import torch

from lowbit.apps import checkpoint
from lowbit.apps import train
from lowbit.apps.train import NonFiniteError, TrainConfig, fit

QUICK = dict(data="digits", epochs=2, batch_size=64, limit_train=256, limit_test=128, progress=False, seed=0, threads=1)


def test_fit_digits_fp32_learns():
    result = fit(**{**QUICK, "epochs": 4, "limit_train": None, "limit_test": None})
    assert len(result.history) == 4
    assert result.final["test_acc"] > 80.0  # the full digits set at 4 epochs: ~90%
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_same_seed_same_weights_other_seed_differs():
    a = fit(**QUICK).model.state_dict()
    b = fit(**QUICK).model.state_dict()
    c = fit(**{**QUICK, "seed": 1}).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("fmt", ["fp32", "mls:2,1"])  # mls: stochastic rounding on W, A and E
def test_resume_is_bit_for_bit(tmp_path, fmt):
    if fmt != "fp32":
        pytest.importorskip("lowbit.nn")
    straight = fit(**QUICK, format=fmt, out=str(tmp_path / "straight")).model.state_dict()

    class Crash(Exception):
        pass

    def crash_after_first(epoch, record):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        fit(**QUICK, format=fmt, out=str(tmp_path / "resumed"), on_epoch_end=crash_after_first)
    resumed = fit(**QUICK, format=fmt, out=str(tmp_path / "resumed"), resume=True)
    assert resumed.history[0]["epoch"] == 1 and len(resumed.history) == 2
    weights = resumed.model.state_dict()
    assert all(torch.equal(straight[k], weights[k]) for k in straight)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]
    assert json.loads(lines[0]) == resumed.history[0]
    saved = checkpoint.load(tmp_path / "resumed" / "last.pt")
    assert saved["epoch"] == 2 and set(saved) >= {"model", "optimizer", "scheduler", "rng"}


def test_resume_rejects_different_settings(tmp_path):
    fit(**{**QUICK, "epochs": 1}, out=str(tmp_path))
    with pytest.raises(ValueError, match="different settings.*lr"):
        fit(**{**QUICK, "epochs": 1, "lr": 0.05}, out=str(tmp_path), resume=True)


def test_existing_run_needs_resume(tmp_path):
    fit(**{**QUICK, "epochs": 1}, out=str(tmp_path))
    with pytest.raises(FileExistsError, match="--resume"):
        fit(**{**QUICK, "epochs": 1}, out=str(tmp_path))


def test_nan_stops_naming_step_and_layer_and_keeps_last_checkpoint(tmp_path):
    import lowbit.data as data
    from lowbit import models

    torch.manual_seed(0)
    model = models.get("digits_cnn")
    calls = {"n": 0}
    steps_per_epoch = 4  # 256 samples / 64

    def poison(module, inputs, output):  # from epoch 2, step 2 on, as if the layer had blown up
        if module.training:
            calls["n"] += 1
            if calls["n"] >= steps_per_epoch + 3:
                return output * float("nan")
        return output

    model.conv2.register_forward_hook(poison)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError) as err:
        fit(**QUICK, out=str(out), model=model)
    assert (err.value.epoch, err.value.step) == (2, 2)
    assert "'conv2'" in str(err.value) and "step 2" in str(err.value)
    saved = checkpoint.load(out / "last.pt")
    assert saved["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_nan_from_a_gradient_names_the_layer():
    from lowbit import models

    torch.manual_seed(0)
    model = models.get("digits_cnn")
    model.conv3.register_full_backward_hook(lambda m, gi, go: (gi[0] * float("inf"),))
    with pytest.raises(NonFiniteError, match="gradient computed by layer 'conv3'"):
        fit(**QUICK, model=model)


def test_checkpoint_save_is_atomic_on_failure(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"v": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        checkpoint.save(path, {"v": Unpicklable()})
    assert checkpoint.load(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_checkpoint_unreadable_message(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        checkpoint.load(bad)


def test_config_defaults_follow_the_paper_recipe():
    cfg = TrainConfig(data="cifar10:/nowhere").resolved()
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.momentum, cfg.weight_decay) == ("resnet20", 160, 0.1, 0.9, 5e-4)
    assert cfg.milestone_epochs() == [80, 120]
    assert TrainConfig(data="imagenet:/x").resolved().milestone_epochs() == [30, 60]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--format", "mls:9,9"], "out of range"),
        (["--model", "resnet99"], "unknown model"),
        (["--data", "mnist"], "accepted: digits"),
        (["--data", "cifar10:/nowhere/at/all"], "--download"),
        (["--resume"], "--resume needs --out"),
        (["--override", "conv2"], "LAYER=FORMAT"),
    ],
)
def test_cli_errors_are_clear(argv, message, capsys):
    assert train.main(argv + ["--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_cli_runs_and_writes_metrics(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--epochs", "1", "--batch-size", "64", "--limit-train", "128", "--limit-test", "64", "--quiet", "--threads", "1", "--out", str(out)]
    assert train.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == "digits_cnn" and summary["format"] == "fp32" and 0 <= summary["test_acc"] <= 100
    record = json.loads((out / "metrics.jsonl").read_text())
    assert set(record) >= {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "time_s", "quant_error"}

    assert json.loads((out / "config.json").read_text())["seed"] == 0


def test_power_auto_without_meter_continues(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lowbit.power", None)  # as if the module were not installed
    result = fit(**{**QUICK, "epochs": 1}, power="auto")
    assert "energy_j" not in result.final
    assert "power measurement unavailable" in capsys.readouterr().err


def test_power_auto_without_sensors_continues(capsys, monkeypatch):
    import lowbit.power as power

    monkeypatch.setattr(power, "auto_sensors", lambda **kw: [])
    result = fit(**{**QUICK, "epochs": 1}, power="auto")
    assert "energy_j" not in result.final
    assert "no power sensor" in capsys.readouterr().err


def test_power_auto_logs_joules_per_epoch_from_a_sensor(tmp_path, monkeypatch):
    import lowbit.power as power

    monkeypatch.setattr(power, "auto_sensors", lambda **kw: [power.ConstantSensor(10.0, "bench_supply")])
    result = fit(**QUICK, power="auto", out=str(tmp_path))
    for record in result.history:
        # 10 W for the epoch's training steps: positive, and no more than 10 W x the epoch's wall time
        assert 0 < record["energy_j"] <= 10.0 * record["time_s"]
        assert record["joules_per_step"] > 0 and record["power_sensors"] == ["bench_supply"]
    assert (tmp_path / "power.csv").read_text().startswith("t,bench_supply,mark")


def test_metrics_carry_per_layer_weight_quant_error():
    pytest.importorskip("lowbit.nn")
    record = fit(**{**QUICK, "epochs": 1}, format="mls:2,1").final
    assert sorted(record["quant_error"]) == ["conv2", "conv3"]  # first conv and fc stay fp32
    for errors in record["quant_error"].values():
        assert sorted(errors) == ["A", "E", "W"] and all(0 < v < 0.5 for v in errors.values())


def test_fit_restores_the_thread_count():
    before = torch.get_num_threads()
    fit(**{**QUICK, "epochs": 1, "threads": before + 1})
    assert torch.get_num_threads() == before


def test_nan_weight_in_a_quantized_layer_is_named():
    pytest.importorskip("lowbit.nn")
    from lowbit import models
    from lowbit.nn import convert

    torch.manual_seed(0)
    model = convert(models.get("digits_cnn"), "mls:2,1")
    with torch.no_grad():
        model.conv3.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="conv3") as err:
        fit(**QUICK, model=model)
    assert (err.value.epoch, err.value.step) == (1, 0)


def test_cli_trains_resnet20_on_an_extracted_cifar_folder(tmp_path, capsys):
    import importlib.util
    import tarfile
    from pathlib import Path

    # the fake-archive writer lives with the data tests (no shared conftest between test folders)
    spec = importlib.util.spec_from_file_location("data_tests", Path(__file__).parents[1] / "data" / "test_data.py")
    data_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data_tests)
    archive, _ = data_tests.write_fake_cifar(tmp_path, n=8)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "cifar", filter="data")
    argv = ["--model", "resnet20", "--data", f"cifar10:{tmp_path / 'cifar'}", "--epochs", "1", "--batch-size", "16",
            "--quiet", "--threads", "1", "--out", str(tmp_path / "run")]
    assert train.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == "resnet20" and summary["epochs"] == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["milestones"] == [0.5, 0.75]


def test_resume_restores_metrics_lost_between_checkpoint_and_metrics_write(tmp_path):
    out = tmp_path / "run"
    first = fit(**{**QUICK, "epochs": 1}, out=str(out)).history
    (out / "metrics.jsonl").write_text("")  # as if the crash came right after the checkpoint's rename
    cfg = {**QUICK, "epochs": 1}
    fit(**cfg, out=str(out), resume=True)
    assert [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()] == first


def test_cli_trains_resnet18_on_an_image_folder(tmp_path, capsys):
    pytest.importorskip("PIL")
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("data_tests", Path(__file__).parents[1] / "data" / "test_data.py")
    data_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data_tests)
    data_tests.write_fake_imagefolder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=2, size=(40, 36))
    argv = ["--data", f"imagenet:{tmp_path / 'imgs'}", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
            "--quiet", "--threads", "1"]
    assert train.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == "resnet18" and 0 <= summary["test_acc"] <= 100


def test_quant_error_probe_does_not_change_the_training_run(monkeypatch):
    pytest.importorskip("lowbit.nn")
    with_probe = fit(**QUICK, format="mls:2,1").model.state_dict()
    monkeypatch.setattr(train, "_probe_batch", lambda dataset, cfg: None)  # weight errors only
    without = fit(**QUICK, format="mls:2,1").model.state_dict()
    assert all(torch.equal(with_probe[k], without[k]) for k in with_probe)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fmt", ["fp32", "mls:2,1"])
def test_fit_on_cuda_and_resume(tmp_path, fmt):
    if fmt != "fp32":
        pytest.importorskip("lowbit.nn")
    straight = fit(**QUICK, format=fmt, device="cuda", out=str(tmp_path / "straight"))
    assert next(straight.model.parameters()).is_cuda and 0 <= straight.final["test_acc"] <= 100

    def crash_after_first(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(**QUICK, format=fmt, device="cuda", out=str(tmp_path / "resumed"), on_epoch_end=crash_after_first)
    resumed = fit(**QUICK, format=fmt, device="cuda", out=str(tmp_path / "resumed"), resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    # bit-for-bit equality is not asserted: cuDNN's default conv backward kernels are not
    # deterministic (torch.use_deterministic_algorithms(True) makes them so, at a cost)
    assert all(torch.isfinite(v).all() for v in resumed.model.state_dict().values() if v.is_floating_point())


def test_cli_overrides_reach_convert(capsys):
    pytest.importorskip("lowbit.nn")
    argv = ["--format", "mls:2,1", "--override", "conv3=none", "--override", "conv2=mls:2,4", "--epochs", "1",
            "--limit-train", "64", "--limit-test", "32", "--threads", "1"]
    assert train.main(argv) == 0
    err = capsys.readouterr().err
    assert "conv2  QConv2d  mls:2,4" in err and "conv3  Conv2d   fp32 (torch)" in err


def test_epoch_energy_is_the_mean_over_steps_of_a_coarse_counter():
    import pandas as pd

    from lowbit.apps.train import epoch_energy

    class CoarseCounter:  # NVML-like: the counter moves on one step in three
        def energy_per_mark(self, label):
            return pd.DataFrame({"gpu_J": [9.0, 0.0, 0.0, 3.0], "t": [0, 1, 2, 3]})

    e = epoch_energy(CoarseCounter(), first_mark=1)
    assert e["energy_j"] == 3.0
    assert e["joules_per_step"] == 1.0
    assert e["power_sensors"] == ["gpu"]
