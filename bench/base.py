"""What every provider is made of: the machine it runs on, the runner it builds, the provider record.

A ``Runner`` takes the time-major input x [T, B, I] and the initial state hx ([h0] or [h0, c0], each
[L*D, B, H]), runs the input projection itself, and returns (output [T, B, D*H], [h_n] or [h_n, c_n]) shaped
as torch.nn returns them. For forward+backward it names the leaves it differentiates; ``grads_to_torch`` maps
their gradients to torch.nn's flat-weight order and shapes for the correctness check.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field
from typing import Callable

import torch

from .registry import MODES, Case


class Unavailable(Exception):
    """The provider cannot run this case here; the message says why (it becomes "skipped: <message>")."""


@dataclass(frozen=True)
class Env:
    """What this machine offers. ``simulated`` envs only plan (``--dry-run --device cuda`` on a CPU machine)."""

    device: str  # "cuda" or "cpu"
    interpreting: bool  # TRITON_INTERPRET=1: Triton kernels run on CPU tensors
    cudnn: bool
    simulated: bool = False

    @classmethod
    def detect(cls) -> "Env":
        cuda = torch.cuda.is_available()
        from fusedrnn import settings  # not at import: bench/__main__.py sets TRITON_INTERPRET before triton loads

        interp = settings.interpreting()
        return cls("cuda" if cuda else "cpu", interp and not cuda, cuda and torch.backends.cudnn.is_available())

    @classmethod
    def simulated_cuda(cls) -> "Env":
        return cls("cuda", False, True, simulated=True)


@dataclass
class Runner:
    forward: Callable  # (x [T, B, I], hx list of [L*D, B, H]) -> (out [T, B, D*H], [h_n] or [h_n, c_n])
    params: list  # the leaves whose gradients forward+backward computes
    grads_to_torch: Callable = list  # gradients of ``params`` -> torch.nn's flat-weight order and shapes
    probe: Callable | None = None  # (fn) -> dict: runs fn (the checked call) once, returns evidence of what ran
    detail: dict = field(default_factory=dict)  # facts recorded in the row


@dataclass(frozen=True)
class Provider:
    name: str
    tier: str  # "core" (fusedrnn and cuDNN: every case) or "peer" (where a shape set asks for peers)
    description: str
    build: Callable  # (case, state_dict, device) -> Runner; raises Unavailable
    needs: Callable  # (case, env) -> None, or the reason it cannot run there
    modes: tuple = MODES  # the modes it takes part in at all

    def skip_reason(self, case: Case, env: Env) -> str | None:
        return self.needs(case, env)


# ----------------------------------------------------------------------------------------------- helpers

def torch_module(case: Case, dtype: torch.dtype, device, namespace=torch.nn):
    """``namespace.LSTM/GRU/RNN`` for the case (torch.nn or fusedrnn), default-initialised."""
    kw = dict(num_layers=case.L, bidirectional=case.bidirectional, device=device, dtype=dtype)
    name = {"lstm": "LSTM", "gru": "GRU"}.get(case.cell, "RNN")
    if name == "RNN":
        kw["nonlinearity"] = case.cell[len("rnn_"):]
    return getattr(namespace, name)(case.I, case.H, **kw)


@contextlib.contextmanager
def cudnn_enabled(on: bool):
    previous = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = on
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = previous


def module_runner(module, case: Case, state_dict: dict, context=contextlib.nullcontext) -> Runner:
    module.load_state_dict(state_dict)
    module.train(case.mode == "fwdbwd")  # cuDNN runs its training algorithm (and reserve) in train mode only

    def forward(x, hx):
        with context():
            out, h = module(x, tuple(hx) if len(hx) > 1 else hx[0])
        return out, list(h) if isinstance(h, tuple) else [h]

    return Runner(forward, [getattr(module, n) for n in module._flat_weights_names])


def leaves(state_dict: dict) -> list:
    return [t.detach().clone().requires_grad_() for t in state_dict.values()]


def on_cuda(case: Case, env: Env) -> str | None:
    return None if env.device == "cuda" else "needs a CUDA GPU"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
