"""The peer providers' builders: a torch.compile'd naive loop, FlashRNN and haste.

FlashRNN and haste are optional: when they are not installed their providers are skipped with a note.
Their adapters take torch.nn's weights; the correctness check (bench/measure.py) decides whether an adapter
computes torch.nn's function before any of its times is recorded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fusedrnn.cells import CELLS

from .base import Runner, installed, leaves, on_cuda
from .registry import Case


def _lstm_step(xp, h, c, w_hh, b_hh):
    i, f, g, o = (xp + F.linear(h, w_hh, b_hh)).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_step(xp, h, w_hh, b_hh):
    xr, xz, xn = xp.chunk(3, 1)
    hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, 1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _tanh_step(xp, h, w_hh, b_hh):
    return torch.tanh(xp + F.linear(h, w_hh, b_hh))


def _relu_step(xp, h, w_hh, b_hh):
    return torch.relu(xp + F.linear(h, w_hh, b_hh))


_STEPS = {"lstm": _lstm_step, "gru": _gru_step, "rnn_tanh": _tanh_step, "rnn_relu": _relu_step}
_COMPILED: dict = {}


def naive_loop(step, case: Case, x, hx, params):
    """torch.nn's math as a Python loop over layers, directions and time steps; ``step`` is one cell update.

    The input projection of all steps is one GEMM per layer and direction, as in every other provider.
    """
    lstm = case.cell == "lstm"
    layer_in, h_n, c_n = x, [], []
    for layer in range(case.L):
        outs = []
        for d in range(case.D):
            k = layer * case.D + d
            w_ih, w_hh, b_ih, b_hh = params[4 * k:4 * k + 4]
            xp = F.linear(layer_in, w_ih, b_ih)
            h, c = hx[0][k], (hx[1][k] if lstm else None)
            ys = [None] * case.T
            for t in (range(case.T) if d == 0 else reversed(range(case.T))):
                if lstm:
                    h, c = step(xp[t], h, c, w_hh, b_hh)
                else:
                    h = step(xp[t], h, w_hh, b_hh)
                ys[t] = h
            outs.append(torch.stack(ys))
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, -1) if case.D == 2 else outs[0]
    return layer_in, [torch.stack(h_n)] + ([torch.stack(c_n)] if lstm else [])


def build_compiled(case, state_dict, device):
    """The naive loop with its cell step compiled by torch.compile (dynamic shapes: one compilation per
    cell, dtype and grad mode serves every B and H, so the suite compiles a few dozen graphs, not hundreds)."""
    import torch._dynamo
    for knob in ("cache_size_limit", "recompile_limit"):  # dtypes x grad modes exceed the default of 8
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 64))
    if case.cell not in _COMPILED:
        _COMPILED[case.cell] = torch.compile(_STEPS[case.cell], dynamic=True)
    step, params = _COMPILED[case.cell], leaves(state_dict)
    return Runner(lambda x, hx: naive_loop(step, case, x, hx, params), params,
                  detail={"compiled": "cell step, torch.compile(dynamic=True); Python loop over T"})


def needs_compiler(case, env):
    if env.device == "cpu":
        return "inductor builds C++ for about a minute per graph on a CPU; this provider runs on GPUs"
    return None


# ------------------------------------------------------------------------------------------------ FlashRNN

_FLASHRNN_FUNCTIONS = {"lstm": "lstm", "rnn_tanh": "elman"}
_FLASHRNN_DTYPES = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def build_flashrnn(case, state_dict, device):
    """FlashRNN's ``flashrnn(Wx [B,T,G,NH,D], R [G,NH,D,P], b [G,NH,D], states [S,B,1,NH,D])``, one head.

    Its LSTM gate order (i, f, z, o) and state order (h, c) are torch's; the input projection runs here as
    one GEMM without bias, both biases go to ``b``. Leaves are torch's weights, so gradients need no mapping.
    """
    from flashrnn import flashrnn
    params = leaves(state_dict)
    w_ih, w_hh, b_ih, b_hh = params
    G, H = CELLS[case.cell].gates, case.H

    def forward(x, hx):
        T, B, _ = x.shape
        wx = F.linear(x, w_ih).view(T, B, G, 1, H).transpose(0, 1)
        R = w_hh.view(G, 1, H, H)  # R[g, head, d, p] multiplies state unit p into gate g of unit d
        b = (b_ih + b_hh).view(G, 1, H)
        states = torch.stack([s[0] for s in hx]).view(len(hx), B, 1, 1, H)
        h, last = flashrnn(wx, R, b, states=states, function=_FLASHRNN_FUNCTIONS[case.cell],
                           backend="cuda_fused", dtype=_FLASHRNN_DTYPES[case.dtype])
        return h[0].reshape(B, T, H).transpose(0, 1), [last[s].reshape(1, B, H) for s in range(len(hx))]

    return Runner(forward, params, detail={"backend": "cuda_fused"})


def needs_flashrnn(case, env):
    if not installed("flashrnn"):
        return "FlashRNN is not installed (pip install flashrnn)"
    if case.cell not in _FLASHRNN_FUNCTIONS:
        return f"no adapter for FlashRNN's {case.cell} (its GRU keeps separate gate biases in its own layout)"
    if case.L > 1 or case.bidirectional:
        return "flashrnn() is one layer, one direction"
    return on_cuda(case, env)


# --------------------------------------------------------------------------------------------------- haste

def _haste_grad_map(make, names_shapes):
    """How ``from_native_weights`` scatters torch's weights into haste's parameters, found by feeding it
    index-valued tensors. Returns f(haste grads) -> torch grads (exact for any permutation/sum layout)."""
    probe = make()
    zeros = [torch.zeros(s, dtype=torch.float64) for _, s in names_shapes]
    probe.from_native_weights(*[z.float() for z in zeros])
    base = [p.detach().double().clone() for p in probe.parameters()]
    where = []  # per native tensor: list of (haste param index, haste flat positions, native flat indices)
    for j, (_, shape) in enumerate(names_shapes):
        args = [z.clone() for z in zeros]
        args[j] = torch.arange(1, args[j].numel() + 1, dtype=torch.float64).view(shape)
        probe.from_native_weights(*[a.float() for a in args])
        hits = []
        for i, p in enumerate(probe.parameters()):
            v = (p.detach().double() - base[i]).flatten()
            pos = v.nonzero().flatten()
            idx = v[pos]
            if not torch.equal(idx, idx.round()) or (idx < 1).any() or (idx > args[j].numel()).any():
                raise RuntimeError("haste's from_native_weights is not a permutation of torch's weights")
            hits.append((i, pos, idx.long() - 1))
        where.append(hits)

    def to_torch(grads):
        out = []
        for (_, shape), hits in zip(names_shapes, where):
            g = torch.zeros(shape, dtype=grads[0].dtype, device=grads[0].device).flatten()
            for i, pos, idx in hits:
                g.index_add_(0, idx.to(g.device), grads[i].flatten()[pos.to(g.device)])
            out.append(g.view(shape))
        return out
    return to_torch


def build_haste(case, state_dict, device):
    import haste_pytorch as haste
    cls = {"lstm": haste.LSTM, "gru": haste.GRU}[case.cell]
    kw = {"forget_bias": 0.0} if case.cell == "lstm" else {}  # torch's LSTM has no built-in forget bias

    def make():
        return cls(case.I, case.H, **kw)
    names_shapes = [(n, tuple(t.shape)) for n, t in state_dict.items()]
    to_torch = _haste_grad_map(make, names_shapes)
    dtype = next(iter(state_dict.values())).dtype
    module = make().to(device=device, dtype=dtype)
    module.from_native_weights(*state_dict.values())
    module.train(case.mode == "fwdbwd")
    lstm = case.cell == "lstm"

    def forward(x, hx):
        out, state = module(x, state=tuple(hx) if lstm else hx[0])
        return out, list(state) if lstm else [state]

    return Runner(forward, list(module.parameters()), grads_to_torch=to_torch)


def needs_haste(case, env):
    if not installed("haste_pytorch"):
        return "haste is not installed (pip install haste_pytorch)"
    if case.cell not in ("lstm", "gru"):
        return f"haste has no {case.cell}"
    if case.L > 1 or case.bidirectional:
        return "haste's LSTM/GRU are one layer, one direction"
    return on_cuda(case, env)
