"""Functional entry points: whole multi-layer, (bi)directional recurrent networks, and single cell steps.

``fused_lstm``, ``fused_gru`` and ``fused_rnn`` take torch.nn's weight layout: ``weights`` is the flat list of
an ``nn.LSTM/GRU/RNN``'s ``_flat_weights``, i.e. for each layer and then each direction
``w_ih [G*H, I_l], w_hh [G*H, P]``, then with ``bias=True`` ``b_ih [G*H], b_hh [G*H]``, then with a projection
(LSTM ``proj_size > 0``) ``w_hr [P, H]``. G is 4 for LSTM (gates i, f, g, o), 3 for GRU (r, z, n) and 1 for
RNN; P is proj_size if set, else H; I_l is the input size for layer 0 and D*P after.

Shapes (T time, B batch, I input size, L layers, D = 2 if bidirectional else 1):
    input  [T, B, I], or [B, T, I] with batch_first; with ``batch_sizes`` (a PackedSequence's), the packed
           data [N, I], sequences sorted by decreasing length
    h0 [L*D, B, P], c0 [L*D, B, H]   (None: zeros)
    output [T, B, D*P] ([B, T, D*P] with batch_first; packed [N, D*P])
    h_n [L*D, B, P], c_n [L*D, B, H]  (each sequence's state after its last element)
    reset  bool [T, B] ([B, T] with batch_first; packed: [N], one flag per row of the packed data), or None

Resets: where ``reset[t, b]`` is True, row b starts afresh at step t, in every layer: the state entering step t is
zero (h and c), exactly as if a new sequence began there with a zero initial state (``reset[0, b]`` overrides
hx for row b). Bidirectional layers walk each segment backwards on its own: the reverse state entering step t is
zero where ``reset[t + 1, b]`` is True (at t = T-1 it is hx's reverse part, as without resets). No gradient
crosses a reset, to earlier steps or to hx. ``reset=None`` is the plain recurrence.

Each layer runs the input projection of all timesteps as one GEMM, then the fused recurrent kernel
(fusedrnn.ops); dropout (training only) is applied between layers. Which implementation runs is decided by
fusedrnn.dispatch. The aten path (torch's own RNN) is fusedrnn.aten: torch's function itself in eager, an
opaque custom op under torch.compile.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import aten, dispatch, ops, reference
from .cells import CELLS
from .dispatch import SUPPORTED_DTYPES
from .schedule import Schedule

__all__ = ["fused_lstm", "fused_gru", "fused_rnn", "fused_lstm_cell", "fused_gru_cell", "fused_rnn_cell"]


def _check_devices(input: Tensor, hx: Sequence[Tensor], weights: Sequence[Tensor]) -> None:
    # Devices first, hidden before parameters: aten's order (check_attributes runs before other checks).
    for h in hx:
        if h.device != input.device:
            raise RuntimeError(f"Input and hidden tensors are not at the same device, found input tensor at "
                               f"{input.device} and hidden tensor at {h.device}")
    for w in weights:
        if w.device != input.device:
            raise RuntimeError(f"Input and parameter tensors are not at the same device, found input tensor at "
                               f"{input.device} and parameter tensor at {w.device}")


def _check(cell: str, input: Tensor, hx: Sequence[Tensor], weights: Sequence[Tensor], num_layers: int, bias: bool,
           bidirectional: bool, batch_first: bool, dropout: float, proj_size: int,
           batch_sizes: Tensor | None) -> None:
    """Validate arguments with torch.nn's exception types and messages."""
    packed = batch_sizes is not None
    if input.dim() != (2 if packed else 3):
        raise RuntimeError(f"input must have {2 if packed else 3} dimensions, got {input.dim()}")
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {dropout}")
    dirs = 2 if bidirectional else 1
    per = (4 if bias else 2) + (1 if proj_size else 0)
    if len(weights) != num_layers * dirs * per:
        raise ValueError(f"expected {num_layers * dirs * per} weight tensors for num_layers={num_layers}, "
                         f"bidirectional={bidirectional}, bias={bias}, proj_size={proj_size}, got {len(weights)}")
    if input.size(-1) != weights[0].shape[1]:  # torch.nn's check_input, before its hidden checks
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {weights[0].shape[1]}, "
                           f"got {input.size(-1)}")
    _check_devices(input, hx, weights)
    steps = len(batch_sizes) if packed else input.size(1 if batch_first else 0)
    if steps == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    gates = CELLS[cell].gates
    hidden = weights[1].shape[0] // gates
    width = proj_size or hidden
    batch = int(batch_sizes[0]) if packed else input.size(0 if batch_first else 1)
    for w in weights:
        if w.dtype != input.dtype:
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({w.dtype}). Convert "
                             f"input: input.to({w.dtype}), or convert model: model.to({input.dtype})")
    for k in range(num_layers * dirs):
        w = weights[k * per:(k + 1) * per]
        in_size = input.size(-1) if k < dirs else dirs * width
        expected = [(gates * hidden, in_size), (gates * hidden, width)]
        expected += [(gates * hidden,)] * (2 if bias else 0) + ([(proj_size, hidden)] if proj_size else [])
        for got, want in zip(w, expected):
            if tuple(got.shape) != want:
                raise RuntimeError(f"weights of layer {k // dirs} direction {k % dirs} have shapes "
                                   f"{[list(t.shape) for t in w]}, expected {[list(s) for s in expected]}")
    for i, h in enumerate(hx):
        if h.dtype != input.dtype:
            raise RuntimeError(f"Input and hidden tensors must have the same dtype, found input tensor of "
                               f"{input.dtype} and hidden tensor of {h.dtype}")
        expected = (num_layers * dirs, batch, width if i == 0 else hidden)
        if tuple(h.shape) != expected:
            name = f"hidden[{i}]" if len(hx) > 1 else "hidden"
            raise RuntimeError(f"Expected {name} size {expected}, got {list(h.shape)}")
    if packed and any(int(a) < int(b) for a, b in zip(batch_sizes[:-1], batch_sizes[1:])):
        raise RuntimeError("batch_sizes must be non-increasing, as a PackedSequence's are")


def _check_reset(reset, input: Tensor, batch_first: bool, batch_sizes: Tensor | None) -> None:
    """Validate ``reset`` (a bool tensor on the input's device, shaped like the input's leading dimensions) before
    anything runs; the messages name the shape expected for this input."""
    if not isinstance(reset, Tensor):
        raise TypeError(f"reset must be a bool tensor or None, got {type(reset).__name__}")
    if batch_sizes is not None:
        expected, form = (input.size(0), ), "[N], one flag per row of the PackedSequence's data"
    elif batch_first:
        expected, form = tuple(input.shape[:2]), "[B, T] (batch_first=True)"
    else:
        expected, form = tuple(input.shape[:2]), "[T, B] (batch_first=False)"
    if tuple(reset.shape) != expected:
        raise ValueError(f"reset must have shape {form}: {list(expected)} for this input, got {list(reset.shape)}")
    if reset.dtype != torch.bool:
        raise TypeError(f"reset must be a bool tensor (True where a row starts afresh), got {reset.dtype}")
    if reset.device != input.device:
        raise RuntimeError(f"reset must be on the input's device, {input.device}; got {reset.device}")


def _autocast(cell: str, input: Tensor, hx: Sequence[Tensor], weights: Sequence[Tensor], *, packed: bool = False,
              proj: bool = False, step: bool = False):
    """torch.autocast's RNN policy, on the Triton path only (the aten path applies torch's own).

    Casts the floating, non-fp64 tensors to the autocast dtype (what the lower-precision policy of
    ``_cudnn_rnn``, the ``*_cell`` ops and CPU's ``mkldnn_rnn_layer`` does) and returns
    ``(input, hx, weights, amp)`` with ``amp = (device type, dtype of output and h, dtype of c)``, or None
    when autocast is off; the dtypes are torch's (fusedrnn.aten.autocast_dtypes).
    """
    dev = input.device.type
    if dev not in ("cuda", "cpu") or not torch.is_autocast_enabled(dev) or dispatch.select(input.device) != "triton":
        return input, hx, weights, None
    low = torch.get_autocast_dtype(dev)
    h_dtype, c_dtype = aten.autocast_dtypes(cell, dev, low, hx[-1].dtype, packed=packed, proj=proj, step=step)

    def cast(t):
        return t.to(low) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t

    return cast(input), [cast(h) for h in hx], [cast(w) for w in weights], (dev, h_dtype, c_dtype)


def _no_autocast(amp):
    return torch.autocast(amp[0], enabled=False) if amp else contextlib.nullcontext()


def _run(cell: str, input: Tensor, hx: list[Tensor], weights: Sequence[Tensor], bias: bool, num_layers: int,
         dropout: float, training: bool, bidirectional: bool, batch_first: bool, proj_size: int,
         batch_sizes: Tensor | None, reset: Tensor | None = None, naive: bool = False):
    """Triton path for every cell (``naive``: the reference recurrence, for resets on the aten path: torch's RNN has
    none). ``hx`` is [h0] or [h0, c0] (LSTM). Returns (output, [h_n] or [h_n, c_n])."""
    if not naive and input.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fusedrnn supports {', '.join(str(d) for d in SUPPORTED_DTYPES)} tensors, "
                        f"got {input.dtype}")
    dirs = 2 if bidirectional else 1
    per = (4 if bias else 2) + (1 if proj_size else 0)
    op = ops.LAYER_OPS[cell]
    save = torch.is_grad_enabled() and any(t.requires_grad for t in (input, *hx, *weights))
    sizes = None if batch_sizes is None else [int(b) for b in batch_sizes]
    x = input.transpose(0, 1) if batch_first and sizes is None else input
    zeros = [None] * dirs  # per direction: where the state entering a step is zero (Schedule.entering)
    if reset is not None:
        flags = reset.t() if batch_first and sizes is None else reset
        T, B = (len(sizes), sizes[0]) if sizes is not None else tuple(x.shape[:2])
        zeros = [Schedule(T, B, sizes, d == 1).entering(flags) for d in range(dirs)]
    h_out: list[list[Tensor]] = [[] for _ in hx]
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            w = weights[k * per:(k + 1) * per]
            b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
            c0 = hx[1][k] if len(hx) > 1 else None
            w_hr = w[-1] if proj_size else None
            if naive:
                y, h_n, c_n = reference.recurrence(cell, x, hx[0][k], c0, w[0], w[1], b_ih, b_hh, w_hr, sizes, d == 1,
                                                   zeros[d])
            else:
                y, h_n, c_n, *_ = op(x, hx[0][k], c0, w[0], w[1], b_ih, b_hh, w_hr, sizes, d == 1, save, zeros[d])
            outs.append(y)
            h_out[0].append(h_n)
            if len(hx) > 1:
                h_out[1].append(c_n)
        x = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, p=dropout, training=True)
    output = x.transpose(0, 1) if batch_first and sizes is None else x  # time-major view, as torch.nn gives it
    return output, [torch.stack(h) for h in h_out]


def _zeros_hx(input: Tensor, weights: Sequence[Tensor], gates: int, num_layers: int, bidirectional: bool,
              batch_first: bool, batch_sizes: Tensor | None, width: int | None = None):
    if batch_sizes is not None:
        batch = int(batch_sizes[0]) if len(batch_sizes) else 0
    else:
        batch = input.size(0 if batch_first else 1) if input.dim() == 3 else 0
    hidden = width or weights[1].shape[0] // gates
    return input.new_zeros((num_layers * (2 if bidirectional else 1), batch, hidden))


def fused_lstm(input: Tensor, hx: tuple[Tensor, Tensor] | None, weights: Sequence[Tensor], *, bias: bool = True,
               num_layers: int = 1, dropout: float = 0.0, training: bool = False, bidirectional: bool = False,
               batch_first: bool = False, proj_size: int = 0, batch_sizes: Tensor | None = None,
               reset: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Multi-layer LSTM, as ``torch.nn.LSTM`` computes it (gates i, f, g, o; with proj_size, h = W_hr h).

    Args:
        input: [T, B, I] ([B, T, I] with batch_first), or packed data [N, I] with ``batch_sizes``.
        hx: (h0 [L*D, B, P], c0 [L*D, B, H]), or None for zeros.
        weights: torch.nn's flat weight list (see the module docstring).
        dropout: probability of dropout on the outputs of every layer but the last, applied if ``training``.
        batch_sizes: a PackedSequence's batch_sizes (sequences sorted by decreasing length), or None.
        reset: bool [T, B] ([B, T] with batch_first, [N] packed): where rows start afresh (module docstring).
    Returns:
        output [T, B, D*P] ([B, T, D*P] with batch_first, [N, D*P] packed) and (h_n, c_n).
    """
    if hx is None:
        hx = (_zeros_hx(input, weights, 4, num_layers, bidirectional, batch_first, batch_sizes, proj_size or None),
              _zeros_hx(input, weights, 4, num_layers, bidirectional, batch_first, batch_sizes))
    input, hx, weights, amp = _autocast("lstm", input, hx, weights, packed=batch_sizes is not None, proj=proj_size > 0)
    _check("lstm", input, hx, weights, num_layers, bias, bidirectional, batch_first, dropout, proj_size, batch_sizes)
    if reset is not None:
        _check_reset(reset, input, batch_first, batch_sizes)
    on_aten = dispatch.select(input.device) == "aten"
    if on_aten and reset is None:
        out, (h, c) = aten.run("lstm", input, hx, weights, batch_sizes, bias, num_layers, dropout, training,
                               bidirectional, batch_first)
        return out, (h, c)
    with _no_autocast(amp):
        out, (h, c) = _run("lstm", input, list(hx), weights, bias, num_layers, dropout, training, bidirectional,
                           batch_first, proj_size, batch_sizes, reset, on_aten)
    if amp:
        out, h, c = out.to(amp[1]), h.to(amp[1]), c.to(amp[2])
    return out, (h, c)


def _single_state(cell: str, input, hx, weights, bias, num_layers, dropout, training, bidirectional, batch_first,
                  batch_sizes, reset):
    if hx is None:
        hx = _zeros_hx(input, weights, CELLS[cell].gates, num_layers, bidirectional, batch_first, batch_sizes)
    input, (hx,), weights, amp = _autocast(cell, input, [hx], weights)
    _check(cell, input, [hx], weights, num_layers, bias, bidirectional, batch_first, dropout, 0, batch_sizes)
    if reset is not None:
        _check_reset(reset, input, batch_first, batch_sizes)
    on_aten = dispatch.select(input.device) == "aten"
    if on_aten and reset is None:
        out, (h,) = aten.run(cell, input, [hx], weights, batch_sizes, bias, num_layers, dropout, training,
                             bidirectional, batch_first)
        return out, h
    with _no_autocast(amp):
        out, (h,) = _run(cell, input, [hx], weights, bias, num_layers, dropout, training, bidirectional, batch_first,
                         0, batch_sizes, reset, on_aten)
    return (out.to(amp[1]), h.to(amp[1])) if amp else (out, h)


def fused_gru(input: Tensor, hx: Tensor | None, weights: Sequence[Tensor], *, bias: bool = True, num_layers: int = 1,
              dropout: float = 0.0, training: bool = False, bidirectional: bool = False, batch_first: bool = False,
              batch_sizes: Tensor | None = None, reset: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Multi-layer GRU, as ``torch.nn.GRU`` computes it (gates r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).

    Args and shapes as ``fused_lstm`` (no projection), with ``hx`` a single h0 [L*D, B, H] or None.
    Returns (output, h_n).
    """
    return _single_state("gru", input, hx, weights, bias, num_layers, dropout, training, bidirectional, batch_first,
                         batch_sizes, reset)


def fused_rnn(input: Tensor, hx: Tensor | None, weights: Sequence[Tensor], *, nonlinearity: str = "tanh",
              bias: bool = True, num_layers: int = 1, dropout: float = 0.0, training: bool = False,
              bidirectional: bool = False, batch_first: bool = False, batch_sizes: Tensor | None = None,
              reset: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Multi-layer Elman RNN, as ``torch.nn.RNN`` computes it: h' = tanh|relu(W_ih x + b_ih + W_hh h + b_hh).

    Args and shapes as ``fused_gru``; ``nonlinearity`` is "tanh" or "relu". Returns (output, h_n).
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return _single_state("rnn_" + nonlinearity, input, hx, weights, bias, num_layers, dropout, training,
                         bidirectional, batch_first, batch_sizes, reset)


# ---- single steps (the Cells) -----------------------------------------------------------------------------


def _check_cell(input: Tensor, hx: Sequence[Tensor], w_ih: Tensor, w_hh: Tensor, biases: Sequence[Tensor]):
    """torch's cell checks (aten's check_forward_input / check_forward_hidden), same types and messages."""
    for h in hx:
        for w in (w_ih, w_hh, *biases):
            if w.device != input.device or h.device != input.device:
                bad = w.device if w.device != input.device else h.device
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"{input.device} and {bad}!")
    if input.size(1) != w_ih.size(1):
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {w_ih.size(1)}")
    for i, h in enumerate(hx):
        if input.size(0) != h.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{i} batch size {h.size(0)}")
        if h.size(1) != w_hh.size(1):
            raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {h.size(1)}, expected {w_hh.size(1)}")
    for t in (*hx, w_ih, w_hh, *biases):
        if t.dtype != input.dtype:
            a, b = (input.dtype, t.dtype)
            raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got {_short(a)} and {_short(b)}")


def _short(dtype: torch.dtype) -> str:
    return {torch.float64: "Double", torch.float32: "Float", torch.float16: "Half",
            torch.bfloat16: "BFloat16"}.get(dtype, str(dtype))


def _cell(cell: str, input: Tensor, hx: list[Tensor], w_ih, w_hh, b_ih, b_hh):
    """One step; input [B, I], hx [h] or [h, c] each [B, H]. Returns [h'] or [h', c']."""
    input, hx, (w_ih, w_hh, b_ih, b_hh), amp = _autocast(cell, input, hx, (w_ih, w_hh, b_ih, b_hh), step=True)
    biases = [b for b in (b_ih, b_hh) if b is not None]
    _check_cell(input, hx, w_ih, w_hh, biases)
    if dispatch.select(input.device) == "aten":
        fn = getattr(torch, f"{cell}_cell")  # torch.lstm_cell, gru_cell, rnn_tanh_cell, rnn_relu_cell
        if CELLS[cell].has_c:
            return list(fn(input, tuple(hx), w_ih, w_hh, b_ih, b_hh))
        return [fn(input, hx[0], w_ih, w_hh, b_ih, b_hh)]
    if input.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fusedrnn supports {', '.join(str(d) for d in SUPPORTED_DTYPES)} tensors, "
                        f"got {input.dtype}")
    save = torch.is_grad_enabled() and any(t.requires_grad for t in (input, *hx, w_ih, w_hh, *biases))
    with _no_autocast(amp):
        h, c, _ = ops.STEP_OPS[cell](input, hx[0], hx[1] if CELLS[cell].has_c else None, w_ih, w_hh, b_ih, b_hh,
                                     save)
    if amp:
        h, c = h.to(amp[1]), c.to(amp[2])
    return [h, c] if CELLS[cell].has_c else [h]


def fused_lstm_cell(input: Tensor, hx: tuple[Tensor, Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                    b_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One LSTM step, as ``torch.nn.LSTMCell``: input [B, I], hx (h [B, H], c [B, H]) -> (h', c'). One launch."""
    h, c = _cell("lstm", input, list(hx), w_ih, w_hh, b_ih, b_hh)
    return h, c


def fused_gru_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                   b_hh: Tensor | None = None) -> Tensor:
    """One GRU step, as ``torch.nn.GRUCell``: input [B, I], hx [B, H] -> h'. One launch."""
    return _cell("gru", input, [hx], w_ih, w_hh, b_ih, b_hh)[0]


def fused_rnn_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                   b_hh: Tensor | None = None, nonlinearity: str = "tanh") -> Tensor:
    """One Elman RNN step, as ``torch.nn.RNNCell``: input [B, I], hx [B, H] -> h'. One launch."""
    if nonlinearity not in ("tanh", "relu"):
        raise RuntimeError(f"Unknown nonlinearity: {nonlinearity}")
    return _cell("rnn_" + nonlinearity, input, [hx], w_ih, w_hh, b_ih, b_hh)[0]
