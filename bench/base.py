"""What every provider is made of: the machine it runs on, the runner it builds, the provider record.

A ``Runner`` takes the time-major input x [T, B, I] and the initial state hx ([h0] or [h0, c0], each
[L*D, B, H]), runs the input projection itself, and returns (output [T, B, D*H], [h_n] or [h_n, c_n]) shaped
as torch.nn returns them. For forward+backward it names the leaves it differentiates; ``grads_to_torch`` maps
their gradients to torch.nn's flat-weight order and shapes for the correctness check. A case with resets inside the
sequence (``Case.episode``) also passes ``reset`` [T, B] bool to the runners of the providers that take them
(``Provider.takes_resets``): fusedrnn as ``reset=``, torch.nn through ``run_split`` (every row split at its
resets, the segments packed: what a torch.nn user does today, timed with the split).
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
    forward: Callable  # (x [T, B, I], hx list of [L*D, B, H][, reset]) -> (out [T, B, D*H], [h_n] or [h_n, c_n])
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
    takes_resets: bool = False  # whether its runner takes a case's resets (Case.episode)

    def skip_reason(self, case: Case, env: Env) -> str | None:
        if case.episode and not self.takes_resets:
            return "takes no resets inside a sequence"
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
    """A runner of ``module`` (torch.nn's or fusedrnn's) with the case's weights. Resets go to a fusedrnn module as
    ``reset=``; a torch.nn module has none, so it runs on the split segments (``run_split``)."""
    module.load_state_dict(state_dict)
    module.train(case.mode == "fwdbwd")  # cuDNN runs its training algorithm (and reserve) in train mode only
    fused = type(module).__module__.startswith("fusedrnn")

    def forward(x, hx, reset=None):
        with context():
            if reset is not None and not fused:
                return run_split(module, x, hx, reset)
            state = tuple(hx) if len(hx) > 1 else hx[0]
            out, h = module(x, state) if reset is None else module(x, state, reset=reset)
        return out, list(h) if isinstance(h, tuple) else [h]

    return Runner(forward, [getattr(module, n) for n in module._flat_weights_names])


def run_split(module, x, hx: list, reset):
    """torch.nn ``module`` (time-major) over every row of x [T, B, I] split at its resets (reset [T, B] bool): each
    segment one sequence of a PackedSequence (``enforce_sorted=False``), from a zero state, but for hx where a
    direction starts from it (forward: a row's first segment unless reset[0]; reverse: its last). Returns (output
    [T, B, D*H], [h_n (, c_n)] [L*D, B, H]) as one fused pass with ``reset=`` gives them: each direction's final
    state is that of the segment it ends in. Differentiable in x, hx and the weights."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    T, B = reset.shape
    starts = reset.t().clone()
    starts[:, 0] = True  # [B, T]: where a segment starts, row-major
    seg = starts.reshape(-1).long().cumsum(0) - 1  # the segment of each (b, t)
    n = int(seg[-1]) + 1  # one host sync: the number of segments
    lengths = torch.bincount(seg, minlength=n)
    first = seg.view(B, T)[:, 0]  # a row's first and last segments
    last = seg.view(B, T)[:, -1]
    begin = lengths.cumsum(0) - lengths  # where each segment starts in the [B*T] order
    pos = torch.arange(B * T, device=x.device) - begin[seg]  # the step within its segment
    rows = x.transpose(0, 1).reshape(B * T, -1)
    padded = x.new_zeros(int(lengths.max()), n, x.shape[-1]).index_put((pos, seg), rows)
    packed = pack_padded_sequence(padded, lengths.cpu(), enforce_sorted=False)
    D = 2 if module.bidirectional else 1
    keep = (~reset[0]).to(x.dtype)[:, None]  # reset[0, b] overrides hx for the forward direction

    def initial(h):  # [L*D, B, .] -> [L*D, n, .]: hx into the segments that start from it, zeros elsewhere
        parts = []
        for k in range(h.shape[0]):
            forward = k % D == 0
            parts.append(h.new_zeros(n, h.shape[-1]).index_copy(0, first if forward else last,
                                                                h[k] * keep if forward else h[k]))
        return torch.stack(parts)

    def final(h):  # [L*D, n, .] -> [L*D, B, .]: forward parts from a row's last segment, reverse from its first
        return torch.stack([h[k, last if k % D == 0 else first] for k in range(h.shape[0])])

    state = [initial(h) for h in hx]
    out, h_n = module(packed, tuple(state) if len(state) > 1 else state[0])
    out = pad_packed_sequence(out)[0]  # [max length, n, D*H]
    y = out[pos, seg].view(B, T, -1).transpose(0, 1)
    return y, [final(h) for h in (h_n if isinstance(h_n, tuple) else (h_n, ))]


def leaves(state_dict: dict) -> list:
    return [t.detach().clone().requires_grad_() for t in state_dict.values()]


def on_cuda(case: Case, env: Env) -> str | None:
    return None if env.device == "cuda" else "needs a CUDA GPU"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
