"""`lowbit train`: train a model in a low-bit format; ``fit(...)`` is the reusable loop.

Recipe defaults follow the MLS paper (§5.1): SGD, momentum 0.9, weight decay 5e-4, lr 0.1,
x0.1 at 50% and 75% of the epochs (ImageNet: every 30 of 90 epochs). Each epoch appends one JSON
line to OUT/metrics.jsonl and atomically replaces OUT/last.pt; ``--resume`` continues bit for bit
(data order and augmentation are seeded per epoch; RNG states are in the checkpoint).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from lowbit.apps import checkpoint
from lowbit.numerics import formats
from lowbit import data as datasets
from lowbit import models
from lowbit.runtime.memory import keep_freed_memory

CHECKPOINT = "last.pt"
METRICS = "metrics.jsonl"
DEFAULT_EPOCHS = {"digits": 20, "pydoc": 4, "cifar10": 160, "imagenet": 90}
DEFAULT_MILESTONES = {"digits": (0.5, 0.75), "pydoc": (0.5, 0.75), "cifar10": (0.5, 0.75), "imagenet": (1 / 3, 2 / 3)}
DEFAULT_MODEL = {"digits": "digits_cnn", "pydoc": "char_transformer", "cifar10": "resnet20", "imagenet": "resnet18"}
BACKENDS = ("software", "emulation", "board", "auto")


@dataclass
class TrainConfig:
    model: Optional[str] = None  # default: the data set's model (digits_cnn / resnet20 / resnet18)
    data: str = "digits"
    format: str = "fp32"
    epochs: Optional[int] = None  # default per data set (DEFAULT_EPOCHS)
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: Optional[tuple] = None  # fractions of the epochs where lr *= gamma
    gamma: float = 0.1
    device: str = "cpu"
    seed: int = 0
    backend: str = "software"
    bitstream: Optional[str] = None  # --backend board: the overlay (.bit / .xclbin with manifest.json beside it)
    remote: Optional[str] = None  # HOST[:PORT] of a board served by `lowbit serve` (implies --backend board)
    skip_first_last: bool = True
    overrides: Optional[dict] = None  # per-layer formats, passed to lowbit.nn.convert
    convert_options: dict = field(default_factory=dict)  # extra keyword options for convert (e.g. PoT techniques)
    out: Optional[str] = None  # None: keep nothing on disk
    resume: bool = False
    power: str = "off"  # "auto": record energy per step with lowbit.power.Recorder when available
    download: bool = False
    image_size: int = 224
    limit_train: Optional[int] = None
    limit_test: Optional[int] = None
    progress: bool = True
    threads: Optional[int] = None

    def resolved(self) -> "TrainConfig":
        """Fill data-set dependent defaults and validate."""
        name, _ = datasets.parse_spec(self.data)
        cfg = TrainConfig(**{f.name: getattr(self, f.name) for f in fields(self)})
        cfg.model = cfg.model or DEFAULT_MODEL[name]
        cfg.epochs = DEFAULT_EPOCHS[name] if cfg.epochs is None else int(cfg.epochs)
        cfg.milestones = tuple(cfg.milestones or DEFAULT_MILESTONES[name])
        cfg.format = str(formats.parse(cfg.format))
        models.info(cfg.model)
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise ValueError(f"epochs and batch size must be >= 1, got {cfg.epochs} and {cfg.batch_size}")
        _check_hyperparameters(cfg)
        if cfg.backend not in BACKENDS:
            raise ValueError(f"unknown backend {cfg.backend!r}; accepted: {', '.join(BACKENDS)}")
        if cfg.remote and cfg.backend not in ("software", "board"):
            raise ValueError(f"--remote runs the GEMMs on a remote board; it cannot go with --backend {cfg.backend}")
        if cfg.bitstream and cfg.backend == "emulation":
            raise ValueError("--bitstream is for a board; it cannot go with --backend emulation")
        if (cfg.remote or cfg.bitstream) and cfg.backend == "software":
            cfg.backend = "board"
        if cfg.power not in ("off", "auto"):
            raise ValueError(f"--power must be 'off' or 'auto', got {cfg.power!r}")
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
        if cfg.resume and not cfg.out:
            raise ValueError("--resume needs --out (the run folder holding last.pt)")
        return cfg

    def milestone_epochs(self) -> list:
        return sorted({max(1, int(round(f * self.epochs))) for f in self.milestones})


def _check_hyperparameters(cfg: TrainConfig) -> None:
    """NaN/Inf or negative rates would only show up as poisoned weights steps later."""
    for option, value, low in (("--lr", cfg.lr, 0.0), ("--momentum", cfg.momentum, 0.0),
                               ("--weight-decay", cfg.weight_decay, 0.0), ("gamma", cfg.gamma, 0.0)):
        if not (math.isfinite(value) and value >= low):
            raise ValueError(f"{option} {value}: expected a finite number >= {low:g}")
    for option, value in (("--limit-train", cfg.limit_train), ("--limit-test", cfg.limit_test)):
        if value is not None and value < 1:
            raise ValueError(f"{option} {value}: expected a number of samples >= 1 (leave it out to use them all)")


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf; the message names the epoch, step and the first offending layer or
    tensor. ``step`` is None when the check before saving the checkpoint found it."""

    def __init__(self, epoch: int, step: Optional[int], where: str) -> None:
        self.epoch, self.step, self.where = epoch, step, where
        at = f"step {step}" if step is not None else "before saving its checkpoint"
        super().__init__(f"non-finite values at epoch {epoch}, {at}: {where}")


class RunFolderError(OSError):
    """The run folder (--out) cannot be written: read-only, a file in the way, a full disk."""


def run_folder_error(out: Path, what: str, exc: OSError) -> RunFolderError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some space or choose another --out; a checkpoint already there is untouched"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        advice = "a file is in the way: --out must name a folder (or a path where one can be made)"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "choose a folder you can write to"
    else:
        advice = "check the folder, or choose another --out"
    error = RunFolderError(f"--out {str(out)!r}: cannot write {what} ({exc.strerror or exc}); {advice}")
    error.errno = exc.errno
    return error


@dataclass
class FitResult:
    config: TrainConfig
    history: list
    model: nn.Module

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


# ------------------------------------------------------------------------------------------------
# model construction


def build_model(cfg: TrainConfig, dataset: datasets.Dataset) -> nn.Module:
    torch.manual_seed(cfg.seed)
    model = models.get(cfg.model, num_classes=dataset.num_classes, in_channels=dataset.input_shape[0])
    if cfg.format != "fp32" or cfg.overrides:
        model = quantize_model(model, cfg)
    return model.to(cfg.device)


def quantize_model(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    from lowbit import nn as lnn

    return lnn.convert(
        model,
        cfg.format,
        backend=open_backend(cfg),
        skip_first_last=cfg.skip_first_last,
        overrides=cfg.overrides,
        **cfg.convert_options,
    )


def open_backend(cfg: TrainConfig):
    """The backend name, or for --remote / --bitstream the opened board (no board: an error, never a fallback)."""
    if cfg.backend in ("board", "auto") and (cfg.remote or cfg.bitstream):
        from lowbit.board.device import open_device

        kind = f"remote:{cfg.remote}" if cfg.remote else cfg.backend
        return open_device(kind, bitstream=cfg.bitstream)
    return cfg.backend


def backends_used(model: nn.Module) -> str:
    """The backends the quantized layers really ran on (``board`` may fall back to emulation)."""
    names = {getattr(getattr(m, "spec", None), "backend", None) for m in model.modules()}
    return ",".join(sorted(getattr(b, "name", str(b)) for b in names if b is not None))


def describe_model(model: nn.Module) -> str:
    """lowbit.nn.summary's table of which layer runs what (empty when nothing is quantized)."""
    if backends_used(model) == "":
        return ""
    from lowbit.nn import summary

    return summary(model, print_table=False)


# ------------------------------------------------------------------------------------------------
# non-finite diagnosis


def first_nonfinite_module(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: Optional[dict] = None) -> str:
    """Re-run one batch with hooks; name the first module whose output, then gradient, is non-finite.

    ``rng`` (the RNG state from before the failing step) makes stochastic rounding repeat itself.
    """
    found: list = []
    if rng is not None:
        checkpoint.set_rng_state(rng)

    def bad(tensors) -> bool:
        return any(isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all() for t in tensors)

    def on_forward(name):
        def hook(module, inputs, output):
            outs = output if isinstance(output, (tuple, list)) else (output,)
            if not found and bad(outs) and not bad(inputs):
                found.append(f"forward output of layer {name!r} ({type(module).__name__})")

        return hook

    def on_backward(name):
        def hook(module, grad_input, grad_output):
            if not found and bad(grad_input) and not bad(grad_output):
                found.append(f"gradient computed by layer {name!r} ({type(module).__name__})")

        return hook

    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    handles = [m.register_forward_hook(on_forward(n)) for n, m in leaves]
    handles += [m.register_full_backward_hook(on_backward(n)) for n, m in leaves]
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # full backward hooks on the first layer warn about inputs
            loss = F.cross_entropy(model(x), y)
            if not found:
                if not torch.isfinite(loss):
                    found.append("the loss itself (all layer outputs finite)")
                else:
                    loss.backward()
                    bad_grads = [n for n, p in model.named_parameters() if p.grad is not None and bad([p.grad])]
                    if not found and bad_grads:
                        found.append(f"weight gradient of {bad_grads[0]!r}")
    except Exception as exc:  # a quantizer refusing NaN names its layer; anything else must not hide the failure
        if not found:
            return f"{exc}" if _is_nonfinite_error(exc) else f"unknown layer (diagnosis failed: {exc})"
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    if not found:
        bad_params = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        return f"parameters {bad_params}" if bad_params else "not reproducible on a re-run (stochastic)"
    return found[0]


def _is_nonfinite_error(exc: Exception) -> bool:
    text = str(exc)
    return "NaN" in text or "Inf" in text or "non-finite" in text


def nonfinite_tensor(model: nn.Module) -> Optional[str]:
    """'parameter NAME' or 'buffer NAME' of the first floating tensor holding NaN/Inf, else None
    (one synchronisation for all of them; names are looked up only when something is wrong)."""
    named = [("parameter", n, t) for n, t in model.named_parameters()]
    named += [("buffer", n, t) for n, t in model.named_buffers() if t.is_floating_point()]
    if not named or _all_finite([t.detach() for _, _, t in named]):
        return None
    kind, name, _ = next(item for item in named if not bool(torch.isfinite(item[2].detach()).all()))
    return f"{kind} {name!r}"


def _all_finite(tensors: list) -> bool:
    """One fused max-|x| per tensor (NaN and Inf propagate), ~10x faster than a loop of isfinite
    on ResNet-20's 116 tensors; the loop where the fused op is not available for these tensors."""
    try:
        return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors, math.inf))).all())
    except (AttributeError, RuntimeError, TypeError):
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def grads_finite(model: nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return True
    total = torch.stack([g.detach().float().abs().sum() for g in grads]).sum()
    return bool(torch.isfinite(total))


# ------------------------------------------------------------------------------------------------
# per-layer quantization error


def quantized_modules(model: nn.Module) -> list:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and str(getattr(m, "fmt", "fp32")) != "fp32"]


def layer_quant_errors(model: nn.Module, probe: Optional[tuple] = None) -> dict:
    """Per quantized layer, the average relative error (lowbit.numerics.stats.quant_error) of its operands:
    "W" the weight, and with a ``probe`` batch (x, y) "A" its input activation and "E" the error
    dL/dZ arriving at it, from one extra forward/backward in eval mode (no optimizer step).
    Nearest rounding, so the figures are deterministic. A layer exposing ``quant_error()`` or
    ``last_quant_error`` is asked instead."""
    layers = quantized_modules(model)
    if not layers:
        return {}
    from lowbit.numerics.stats import quant_error

    operands = {name: {"W": module.weight.detach()} for name, module in layers}
    if probe is not None:
        _capture_operands(model, layers, probe, operands)
    errors = {}
    for name, module in layers:
        exposed = _exposed_error(module)
        errors[name] = exposed if exposed is not None else {
            op: float(quant_error(_as_operand(t), module.fmt, rounding="nearest")) for op, t in operands[name].items()}
    return errors


def _as_operand(t: torch.Tensor) -> torch.Tensor:
    """A Linear's [batch, time, features] operand as the 2-D [rows, features] it is quantized as."""
    return (t.reshape(-1, t.shape[-1]) if t.dim() not in (2, 4) else t).float()


def _capture_operands(model: nn.Module, layers: list, probe: tuple, operands: dict) -> None:
    def on_input(name):
        def hook(module, inputs):
            operands[name]["A"] = inputs[0].detach()
        return hook

    def on_grad(name):
        def hook(module, grad_output):
            operands[name]["E"] = grad_output[0].detach()
        return hook

    handles = [m.register_forward_pre_hook(on_input(n)) for n, m in layers]
    handles += [m.register_full_backward_pre_hook(on_grad(n)) for n, m in layers]
    was_training = model.training
    rng = checkpoint.rng_state()  # logging must not shift the training run's random numbers
    try:
        model.eval()
        with torch.enable_grad():
            x, y = probe
            F.cross_entropy(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        checkpoint.set_rng_state(rng)


def _exposed_error(module: nn.Module) -> Optional[dict]:
    if callable(getattr(module, "quant_error", None)):
        return _jsonable(module.quant_error())
    if getattr(module, "last_quant_error", None) is not None:
        return _jsonable(module.last_quant_error)
    return None


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "_asdict"):
        return _jsonable(value._asdict())
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


# ------------------------------------------------------------------------------------------------
# power


def open_recorder(cfg: TrainConfig):
    """A started-on-enter lowbit.power.Recorder when ``--power auto`` finds a sensor, else None."""
    if cfg.power != "auto":
        return None
    try:
        from lowbit.power import Recorder, auto_sensors
    except ImportError as exc:
        print(f"lowbit train: --power auto: power measurement unavailable ({exc}); continuing without it", file=sys.stderr)
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # we say it once below, in our words
        sensors = [s for s in auto_sensors(warn=False) if not hasattr(s, "on_mark")]
    if not sensors:
        print("lowbit train: --power auto: no power sensor on this machine (RAPL, NVML, PYNQ rails, Alveo); "
              "continuing without energy figures", file=sys.stderr)
        return None
    return Recorder(sensors, interval=0.05)


def epoch_energy(recorder, first_mark: int) -> dict:
    """Joules of this epoch's training steps (step marks from ``first_mark`` on), summed over sensors,
    and the mean per step (coarse counters such as NVML's update every ~100 ms, so a median of single
    steps reads 0 J); evaluation and checkpointing are not counted."""
    per = recorder.energy_per_mark("step").iloc[first_mark:]
    columns = [c for c in per.columns if c.endswith("_J")]
    per_step = per[columns].sum(axis=1, min_count=1)
    return {"energy_j": float(per_step.sum()), "joules_per_step": float(per_step.sum() / max(len(per_step), 1)),
            "power_sensors": [c[:-2] for c in columns]}


# ------------------------------------------------------------------------------------------------
# the loop


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def train_epoch(model, optimizer, dataset, cfg: TrainConfig, epoch: int, recorder=None) -> dict:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    batches = dataset.train.batches(cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, augment=True)
    desc = f"epoch {epoch + 1}/{cfg.epochs}"
    for step, (x, y) in enumerate(_progress(batches, dataset.train.num_batches(cfg.batch_size), desc, cfg.progress)):
        x, y = x.to(cfg.device, non_blocking=True), y.to(cfg.device, non_blocking=True)
        rng = checkpoint.rng_state()
        optimizer.zero_grad(set_to_none=True)
        try:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            finite = bool(torch.isfinite(loss))
            if finite:
                loss.backward()
                finite = grads_finite(model)
        except ValueError as exc:  # the quantizers refuse NaN/Inf operands with a ValueError
            if not _is_nonfinite_error(exc):
                raise
            finite = False
        if not finite:
            raise NonFiniteError(epoch + 1, step, first_nonfinite_module(model, x, y, rng))
        optimizer.step()
        poisoned = nonfinite_tensor(model)  # the step (or BN's running statistics) can overflow
        if poisoned is not None:
            raise NonFiniteError(epoch + 1, step, f"{poisoned} after the optimizer step")
        if recorder is not None:
            if x.is_cuda:  # mark when the step's GPU work is done, not when it was queued
                torch.cuda.synchronize(x.device)
            recorder.mark("step")
        total_loss += float(loss.detach()) * y.numel()
        correct += int((logits.argmax(1) == y).sum())
        seen += y.numel()
    return {"train_loss": total_loss / seen, "train_acc": 100.0 * correct / seen}


@torch.no_grad()
def evaluate(model: nn.Module, split, cfg: TrainConfig) -> dict:
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in split.batches(max(cfg.batch_size, 256)):
        x, y = x.to(cfg.device), y.to(cfg.device)
        logits = model(x)
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        seen += y.numel()
    return {"test_loss": total_loss / seen, "test_acc": 100.0 * correct / seen}


def _probe_batch(dataset, cfg: TrainConfig) -> tuple:
    """The first (unshuffled, unaugmented) training batch: the same probe every epoch."""
    x, y = next(dataset.train.batches(min(cfg.batch_size, 256)))
    return x.to(cfg.device), y.to(cfg.device)


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestone_epochs(), gamma=cfg.gamma)
    return optimizer, scheduler


def load_dataset(cfg: TrainConfig) -> datasets.Dataset:
    dataset = datasets.load(cfg.data, download=cfg.download, image_size=cfg.image_size, split_seed=0)
    return dataset.limit(cfg.limit_train, cfg.limit_test)


def _identity(cfg: TrainConfig) -> dict:
    """What a resumed run must share with the checkpointed one."""
    keys = ("model", "data", "format", "epochs", "batch_size", "lr", "momentum", "weight_decay", "milestones",
            "gamma", "seed", "skip_first_last", "overrides", "convert_options", "limit_train", "limit_test")
    return {k: json.loads(json.dumps(getattr(cfg, k), default=str)) for k in keys}


def fit(
    config: Optional[TrainConfig] = None,
    *,
    model: Optional[nn.Module] = None,
    dataset: Optional[datasets.Dataset] = None,
    on_epoch_end: Optional[Callable[[int, dict], None]] = None,
    **options,
) -> FitResult:
    """Train and evaluate; ``fit(model="digits_cnn", format="mls:2,1", epochs=5)`` works too.

    ``model`` / ``dataset`` replace the ones the config names (e.g. to share one loaded data set).
    Raises NonFiniteError on NaN/Inf (the last checkpoint on disk stays the last good one).
    """
    if config is not None and options:
        raise TypeError("pass either a TrainConfig or keyword options, not both")
    cfg = (config or TrainConfig(**options)).resolved()
    keep_freed_memory()
    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit(cfg, model, dataset, on_epoch_end)
    finally:
        torch.set_num_threads(previous_threads)


def _fit(cfg: TrainConfig, model, dataset, on_epoch_end) -> FitResult:
    dataset = dataset or load_dataset(cfg)
    if model is None:
        model = build_model(cfg, dataset)
    else:
        model = model.to(cfg.device)
    optimizer, scheduler = make_optimizer(model, cfg)
    if cfg.progress and describe_model(model):
        print(describe_model(model), file=sys.stderr)
    out = Path(cfg.out) if cfg.out else None
    start_epoch, history = _start(cfg, out, model, optimizer, scheduler)
    recorder = open_recorder(cfg)
    with recorder if recorder is not None else contextlib.nullcontext():
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            first_mark = 0
            if recorder is not None:  # the interval before this mark (evaluation, checkpoint) is not a step
                recorder.mark("between_epochs")
                first_mark = sum(1 for mark in recorder.marks if mark[2] == "step")
            lr = optimizer.param_groups[0]["lr"]
            metrics = train_epoch(model, optimizer, dataset, cfg, epoch, recorder)
            scheduler.step()
            metrics.update(evaluate(model, dataset.test, cfg))
            record = {"epoch": epoch + 1, "lr": lr, **metrics, "time_s": time.perf_counter() - t0}
            record["quant_error"] = layer_quant_errors(model, _probe_batch(dataset, cfg))
            if recorder is not None:
                record.update(epoch_energy(recorder, first_mark))
            history.append(record)
            if out is not None:
                _persist(cfg, out, model, optimizer, scheduler, epoch + 1, history, record)
            if cfg.progress:
                from tqdm import tqdm

                tqdm.write(_epoch_line(record), file=sys.stderr)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
        if recorder is not None and out is not None:
            recorder.to_csv(out / "power.csv")
    return FitResult(cfg, history, model)


def _start(cfg, out, model, optimizer, scheduler) -> tuple:
    if out is None:
        torch.manual_seed(cfg.seed)
        return 0, []
    ckpt_path = out / CHECKPOINT
    if not cfg.resume:
        if ckpt_path.exists():
            raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str) + "\n")
            (out / METRICS).write_text("")
        except OSError as exc:
            raise run_folder_error(out, "the run folder", exc) from exc
        torch.manual_seed(cfg.seed)
        return 0, []
    checkpoint.remove_stale_temps(ckpt_path)
    state = checkpoint.load(ckpt_path, map_location=cfg.device)
    missing = [k for k in RUN_STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"--resume: {ckpt_path} is a lowbit checkpoint but not of a training run (it lacks "
                         f"{missing}); resume from the last.pt that lowbit train wrote")
    if state["identity"] != _identity(cfg):
        diff = {k: (state["identity"].get(k), v) for k, v in _identity(cfg).items() if state["identity"].get(k) != v}
        raise ValueError(f"--resume: {ckpt_path} was trained with different settings (checkpoint, now): {diff}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    checkpoint.set_rng_state(state["rng"])
    _rewrite_metrics(out / METRICS, state["history"])
    return state["epoch"], list(state["history"])


def _rewrite_metrics(path: Path, history: list) -> None:
    """metrics.jsonl from the checkpoint's history, the source of truth: a crash between the
    checkpoint and the metrics write can leave a line missing or one too many."""
    path.write_text("".join(json.dumps(record) + "\n" for record in history))


RUN_STATE_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "history", "identity")


def _persist(cfg, out, model, optimizer, scheduler, epochs_done, history, record) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epochs_done,
        "rng": checkpoint.rng_state(),
        "history": history,
        "identity": _identity(cfg),
        "config": asdict(cfg),
    }
    try:
        checkpoint.save(out / CHECKPOINT, state)
        with open(out / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
    except checkpoint.NonFiniteStateError as exc:
        raise NonFiniteError(epochs_done, None, exc.where) from None
    except OSError as exc:
        raise run_folder_error(out, CHECKPOINT, exc) from exc


def _epoch_line(r: dict) -> str:
    line = (f"epoch {r['epoch']}: loss {r['train_loss']:.4f}  train {r['train_acc']:.2f}%  "
            f"test {r['test_acc']:.2f}%  lr {r['lr']:.4g}  {r['time_s']:.1f}s")
    if "energy_j" in r:
        line += f"  {r['energy_j']:.1f} J"
    return line


# ------------------------------------------------------------------------------------------------
# CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit train", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help=f"one of {', '.join(models.names())} (default: the data set's usual model)")
    p.add_argument("--data", default="digits", help=f"{datasets.ACCEPTED} (default digits)")
    p.add_argument("--format", default="fp32", help="fp32 | mls:Ex,Mx[,g=Eg,Mg,group=..] | pot:4 | mogami:fp32 ...")
    p.add_argument("--epochs", type=int, help="default: digits 20, cifar10 160, imagenet 90")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--milestones", help="lr x0.1 at these fractions of the epochs, e.g. 0.5,0.75")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="software", choices=BACKENDS,
                   help="board: this machine's board, an error without one; auto: a board, else emulation (says so)")
    p.add_argument("--bitstream", help="the board's overlay (.bit or .xclbin, manifest.json beside it)")
    p.add_argument("--remote", metavar="HOST[:PORT]", help="run the GEMMs on a board served by `lowbit serve`")
    p.add_argument("--quantize-first-last", action="store_true", help="also quantize the first and last layers")
    p.add_argument("--override", action="append", default=[], metavar="LAYER=FORMAT",
                   help="per-layer format by module name, e.g. conv2=mls:2,4 or conv3=none to keep the "
                        "torch layer (repeatable)")
    p.add_argument("--out", help="run folder for metrics.jsonl and last.pt (default: keep nothing)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--power", default="off", choices=("off", "auto"), help="auto: log joules per epoch via lowbit.power")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 if PATH has no copy")
    p.add_argument("--image-size", type=int, default=224, help="ImageNet crop size")
    p.add_argument("--limit-train", type=int, help="use only the first N training samples")
    p.add_argument("--limit-test", type=int, help="use only the first N test samples")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {}
    for item in args.override:
        layer, sep, fmt = item.partition("=")
        if not sep or not layer or not fmt:
            raise ValueError(f"--override {item!r}: expected LAYER=FORMAT, e.g. layer1.0.conv1=fp32")
        overrides[layer] = None if fmt.lower() in ("none", "torch") else fmt  # None: keep the torch layer
    milestones = None
    if args.milestones:
        try:
            milestones = tuple(float(v) for v in args.milestones.split(","))
        except ValueError:
            raise ValueError(f"--milestones {args.milestones!r}: expected fractions like 0.5,0.75") from None
    return TrainConfig(
        model=args.model, data=args.data, format=args.format, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, milestones=milestones,
        device=args.device, seed=args.seed, backend=args.backend, bitstream=args.bitstream,
        remote=args.remote, skip_first_last=not args.quantize_first_last,
        overrides=overrides or None, out=args.out, resume=args.resume, power=args.power, download=args.download,
        image_size=args.image_size, limit_train=args.limit_train, limit_test=args.limit_test,
        progress=not args.quiet, threads=args.threads,
    )


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args).resolved()
        result = fit(cfg)
    except NonFiniteError as exc:
        print(f"lowbit train: stopped: {exc}. {_what_is_kept(args.out)}", file=sys.stderr)
        return 3
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        print(f"lowbit train: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    final = result.final
    print(json.dumps({"model": cfg.model, "format": cfg.format, "backend": backends_used(result.model) or cfg.backend,
                      "epochs": cfg.epochs,
                      "test_acc": round(final.get("test_acc", math.nan), 2),
                      "train_loss": round(final.get("train_loss", math.nan), 4)}))
    return 0


def _what_is_kept(out: Optional[str]) -> str:
    if out and (Path(out) / CHECKPOINT).is_file():
        return f"The last good checkpoint is untouched: {Path(out) / CHECKPOINT}."
    if out:
        return f"No checkpoint was written to {out} (the run stopped before its first epoch ended)."
    return "Nothing was saved (no --out)."


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
