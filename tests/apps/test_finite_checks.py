"""No poisoned checkpoint: parameters and buffers are checked after every optimizer step and every
tensor before every save; the stop message says whether a good checkpoint exists."""
import pytest
import torch

from lowbit.apps import checkpoint
from lowbit.apps import train
from lowbit.apps.train import NonFiniteError, fit

QUICK = dict(data="digits", epochs=2, batch_size=64, limit_train=256, limit_test=128, progress=False, seed=0, threads=1)


def _all_finite(state) -> bool:
    return checkpoint.first_nonfinite(state) is None


def test_lr_30_stops_on_an_inf_buffer_and_never_saves_it(tmp_path, capsys):
    """--lr 30 used to exit 0 with Inf in bn2/bn3.running_var."""
    out = tmp_path / "run"
    argv = ["--lr", "30", "--epochs", "3", "--limit-train", "512", "--limit-test", "128", "--quiet",
            "--threads", "1", "--out", str(out)]
    assert train.main(argv) == 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "non-finite values at epoch" in line and "after the optimizer step" in line
    assert "buffer 'bn" in line or "parameter '" in line or "layer '" in line, line
    if (out / "last.pt").exists():
        assert f"The last good checkpoint is untouched: {out / 'last.pt'}" in line
        saved = checkpoint.load(out / "last.pt")
        assert _all_finite(saved) and saved["epoch"] >= 1
    else:
        assert "No checkpoint was written" in line


def test_a_run_that_diverges_before_any_checkpoint_does_not_claim_one(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--lr", "1e30", "--epochs", "2", "--limit-train", "256", "--quiet", "--threads", "1", "--out", str(out)]
    assert train.main(argv) == 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "No checkpoint was written" in line and "untouched" not in line
    assert not (out / "last.pt").exists()


def test_no_out_says_nothing_was_saved(capsys):
    assert train.main(["--lr", "1e30", "--epochs", "2", "--limit-train", "256", "--quiet", "--threads", "1"]) == 3
    assert "Nothing was saved (no --out)" in capsys.readouterr().err


def test_a_parameter_poisoned_by_the_optimizer_step_is_named(monkeypatch):
    from lowbit import models

    torch.manual_seed(0)
    model = models.get("digits_cnn")
    name, victim = list(model.named_parameters())[2]
    original = torch.optim.SGD.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                victim.fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    with pytest.raises(NonFiniteError) as err:
        fit(**QUICK, model=model)
    assert (err.value.epoch, err.value.step) == (1, 2)
    assert f"parameter {name!r} after the optimizer step" in str(err.value)


def test_a_buffer_poisoned_after_the_last_step_is_caught_before_the_save(tmp_path, monkeypatch):
    evaluate = train.evaluate
    epochs = {"n": 0}

    def poisoning_evaluate(model, split, cfg):
        result = evaluate(model, split, cfg)
        epochs["n"] += 1
        if epochs["n"] == 2:
            model.bn3.running_var[0] = float("inf")
        return result

    monkeypatch.setattr(train, "evaluate", poisoning_evaluate)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="epoch 2, before saving its checkpoint: model.bn3.running_var") as err:
        fit(**QUICK, out=str(out))
    assert err.value.step is None
    saved = checkpoint.load(out / "last.pt")
    assert saved["epoch"] == 1 and _all_finite(saved)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("option,value", [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-0.1"),
                                          ("--momentum", "nan"), ("--weight-decay", "-1")])
def test_nonfinite_or_negative_hyperparameters_are_refused_before_training(option, value, capsys):
    assert train.main([option, value, "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"lowbit train: error: {option} ") and "expected a finite number >= 0" in line
