"""Training and measuring one (task, cell, length) run.

Adam with a cosine learning-rate decay and gradient-norm clipping, on freshly generated batches (the data never
repeats). Measured: accuracy on a held-out batch after training, and the gradient profile (below) before and
after training.

Gradient profile: for a batch x [T, B, F] made a leaf (``requires_grad``), the loss of the LAST prediction
only, summed over the batch, is backpropagated and ``g[t]`` = mean over examples b of ``||dl_b / dx[t, b]||_2``.
``g[0]`` is the gradient norm reaching the first timestep: how much the last output can still learn from the
first input, T - 1 steps back. For end-of-sequence tasks the last prediction is the whole loss; for per-step
tasks (binary_add, segments) the other steps' losses are left out so that only the path across time counts.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .models import SeqModel, build_model
from .tasks import ADDING_TOLERANCE, Task

__all__ = ["TrainConfig", "RunResult", "derive_seed", "forward", "loss_fn", "accuracy", "train", "grad_profile",
           "run"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters shared by every run (defaults: the CLI's default preset). ``probe_batch``: examples of
    the held-out batch used for the gradient profile; ``gate_init``: see models.build_model."""

    hidden: int = 32
    steps: int = 300
    batch: int = 64
    lr: float = 1e-2
    clip: float = 1.0
    eval_batch: int = 512
    probe_batch: int = 128
    seed: int = 0
    gate_init: str = "chrono"


@dataclass
class RunResult:
    """What one run measured. ``grad_init`` / ``grad_end``: the gradient profile g[t], t = 0..T-1, of the
    model before and after training; ``losses``: the training loss of every step."""

    task: str
    cell: str
    length: int
    accuracy: float
    train_s: float
    losses: list[float] = field(default_factory=list)
    grad_init: list[float] = field(default_factory=list)
    grad_end: list[float] = field(default_factory=list)

    @property
    def grad0_init(self) -> float:
        return self.grad_init[0]

    @property
    def grad0_end(self) -> float:
        return self.grad_end[0]


def derive_seed(seed: int, *parts: object) -> int:
    """A stable seed for a (seed, parts...) combination (Python's hash() is salted per process)."""
    return zlib.crc32(repr((seed, *parts)).encode()) & 0x7FFFFFFF


def forward(model: SeqModel, task: Task, x: Tensor) -> Tensor:
    """``model`` applied to a batch x [T, B, F] of ``task``: the one place where a model meets a batch (training,
    gradient profile, evaluation). A task with ``reset`` hands its boundary flags (Task.boundaries) to the
    recurrent layer as ``reset=``."""
    return model(x, task.boundaries(x) if task.reset else None)


def _last(task: Task, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    return (out[-1], y[-1]) if task.kind == "steps" else (out, y)


def loss_fn(task: Task, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy (classes; every step for "steps" tasks) or MSE ("value"). out [B, C] or [T, B, C]."""
    if task.kind == "value":
        return F.mse_loss(out.squeeze(-1), y, reduction=reduction)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction=reduction)


@torch.no_grad()
def accuracy(task: Task, out: Tensor, y: Tensor) -> float:
    """Fraction of sequences answered right: the class, the value within ADDING_TOLERANCE, or every step."""
    if task.kind == "value":
        right = (out.squeeze(-1) - y).abs() < ADDING_TOLERANCE
    elif task.kind == "steps":
        right = (out.argmax(-1) == y).all(dim=0)
    else:
        right = out.argmax(-1) == y
    return right.float().mean().item()


def train(model: SeqModel, task: Task, length: int, cfg: TrainConfig, data_seed: int,
          on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model`` in place for ``cfg.steps`` steps of Adam (learning rate ``cfg.lr`` with cosine decay,
    gradient norm clipped to ``cfg.clip``) on batches of ``task`` at ``length``.

    Batches come from a generator seeded with ``data_seed``, so two models trained with the same arguments see
    the same data. Returns the loss of every step (before its update). ``on_step(step, loss)`` is called after
    each step.
    """
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(data_seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # Cosine decay to zero: a high rate early gets off the plateaus, a low one late settles the answer.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
    losses = []
    for step in range(cfg.steps):
        x, y = task.generate(cfg.batch, length, gen)
        x, y = x.to(device), y.to(device)
        loss = loss_fn(task, forward(model, task, x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


def grad_profile(model: SeqModel, task: Task, x: Tensor, y: Tensor) -> list[float]:
    """g[t] for t = 0..T-1 (see the module docstring) on x [T, B, F], y as the task gives it. Leaves the
    model's parameter gradients untouched."""
    x = x.detach().clone().requires_grad_(True)
    out, target = _last(task, forward(model, task, x), y)
    loss = loss_fn(task, out, target, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad.norm(dim=-1).mean(dim=1).tolist()


def run(task: Task, cell: str, length: int, cfg: TrainConfig, device: torch.device | str = "cpu",
        on_step: Callable[[int, float], None] | None = None) -> RunResult:
    """Build, measure, train and measure again one model. Same seed, task and length: same data and init."""
    model = build_model(cell, task.n_in, cfg.hidden, task.n_out, task.kind == "steps",
                        derive_seed(cfg.seed, "init", task.name, length), task.memory_steps(length), cfg.gate_init,
                        device)
    x_eval, y_eval = task.generate(cfg.eval_batch, length,
                                   torch.Generator().manual_seed(derive_seed(cfg.seed, "eval", task.name, length)))
    x_eval, y_eval = x_eval.to(device), y_eval.to(device)
    probe = (x_eval[:, :cfg.probe_batch], y_eval[..., :cfg.probe_batch])
    grad_init = grad_profile(model, task, *probe)
    start = time.perf_counter()
    losses = train(model, task, length, cfg, derive_seed(cfg.seed, "train", task.name, length), on_step)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - start
    with torch.no_grad():
        acc = accuracy(task, forward(model, task, x_eval), y_eval)
    return RunResult(task.name, cell, length, acc, train_s, losses, grad_init, grad_profile(model, task, *probe))

