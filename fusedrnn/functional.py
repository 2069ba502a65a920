"""Functional entry points: whole multi-layer, (bi)directional recurrent networks.

``fused_lstm``, ``fused_gru`` and ``fused_rnn`` take torch.nn's weight layout: ``weights`` is the flat list of
an ``nn.LSTM/GRU/RNN``'s ``_flat_weights``, i.e. for each layer and then each direction
``w_ih [G*H, I_l], w_hh [G*H, H]`` followed, with ``bias=True``, by ``b_ih [G*H], b_hh [G*H]``; G is 4 for
LSTM (gates i, f, g, o), 3 for GRU (r, z, n) and 1 for RNN. I_l is the input size for layer 0 and D*H after.

Shapes (T time, B batch, I input size, H hidden size, L layers, D = 2 if bidirectional else 1):
    input  [T, B, I], or [B, T, I] with batch_first
    h0, c0 [L*D, B, H]   (None: zeros)
    output [T, B, D*H], or [B, T, D*H] with batch_first
    h_n, c_n [L*D, B, H]

Each layer runs the input projection of all timesteps as one GEMM (``x @ W_ih^T + b_ih``), then the
fused recurrent kernel (fusedrnn.ops); dropout (training only) is applied between layers. Which
implementation runs is decided by fusedrnn.dispatch.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import dispatch, ops
from .launch import SUPPORTED_DTYPES

__all__ = ["fused_lstm", "fused_gru", "fused_rnn"]


def _check(cell: str, input: Tensor, hx: Sequence[Tensor], weights: Sequence[Tensor], num_layers: int, bias: bool,
           bidirectional: bool, batch_first: bool, dropout: float) -> tuple[int, int]:
    """Validate arguments with torch.nn's exception types and messages; returns (hidden_size, num_directions)."""
    if input.dim() != 3:
        raise RuntimeError(f"input must have 3 dimensions, got {input.dim()}")
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {dropout}")
    dirs = 2 if bidirectional else 1
    per = 4 if bias else 2
    if len(weights) != num_layers * dirs * per:
        raise ValueError(f"expected {num_layers * dirs * per} weight tensors for num_layers={num_layers}, "
                         f"bidirectional={bidirectional}, bias={bias}, got {len(weights)}")
    # Devices first, hidden before parameters, then the sequence length: aten's order (check_attributes runs
    # before the T > 0 check), so an input that breaks several rules gets torch's error.
    for h in hx:
        if h.device != input.device:
            raise RuntimeError(f"Input and hidden tensors are not at the same device, found input tensor at "
                               f"{input.device} and hidden tensor at {h.device}")
    for w in weights:
        if w.device != input.device:
            raise RuntimeError(f"Input and parameter tensors are not at the same device, found input tensor at "
                               f"{input.device} and parameter tensor at {w.device}")
    if input.size(0 if not batch_first else 1) == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    gates = {"lstm": 4, "gru": 3}.get(cell, 1)
    hidden = weights[1].shape[-1]
    batch = input.size(0 if batch_first else 1)
    for w in weights:
        if w.dtype != input.dtype:
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({w.dtype}). Convert "
                             f"input: input.to({w.dtype}), or convert model: model.to({input.dtype})")
    for k in range(num_layers * dirs):
        w_ih, w_hh = weights[k * per], weights[k * per + 1]
        in_size = input.size(-1) if k < dirs else dirs * hidden
        if w_ih.shape != (gates * hidden, in_size) or w_hh.shape != (gates * hidden, hidden):
            raise RuntimeError(f"weights of layer {k // dirs} direction {k % dirs} have shapes "
                               f"{list(w_ih.shape)} and {list(w_hh.shape)}, expected "
                               f"{[gates * hidden, in_size]} and {[gates * hidden, hidden]}")
        if bias:
            for b in weights[k * per + 2:k * per + 4]:
                if b.shape != (gates * hidden,):
                    raise RuntimeError(f"bias of layer {k // dirs} direction {k % dirs} has shape "
                                       f"{list(b.shape)}, expected {[gates * hidden]}")
    expected = (num_layers * dirs, batch, hidden)
    for i, h in enumerate(hx):
        if h.dtype != input.dtype:
            raise RuntimeError(f"Input and hidden tensors must have the same dtype, found input tensor of "
                               f"{input.dtype} and hidden tensor of {h.dtype}")
        if tuple(h.shape) != expected:
            name = f"hidden[{i}]" if len(hx) > 1 else "hidden"
            raise RuntimeError(f"Expected {name} size {expected}, got {list(h.shape)}")
    return hidden, dirs


def _run(cell: str, input: Tensor, hx: list[Tensor], weights: Sequence[Tensor], bias: bool, num_layers: int,
         dropout: float, training: bool, bidirectional: bool, batch_first: bool):
    """Triton path for every cell. ``hx`` is [h0] or [h0, c0] (LSTM). Returns (output, [h_n] or [h_n, c_n])."""
    if input.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fusedrnn supports {', '.join(str(d) for d in SUPPORTED_DTYPES)} tensors, "
                        f"got {input.dtype}")
    dirs = 2 if bidirectional else 1
    per = 4 if bias else 2
    op = ops.LAYER_OPS[cell]
    save = torch.is_grad_enabled() and any(t.requires_grad for t in (input, *hx, *weights))
    x = input.transpose(0, 1) if batch_first else input
    h_out: list[list[Tensor]] = [[] for _ in hx]
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            w_ih, w_hh = weights[k * per], weights[k * per + 1]
            b_ih, b_hh = (weights[k * per + 2], weights[k * per + 3]) if bias else (None, None)
            xp = F.linear(x, w_ih, b_ih)
            c0 = hx[1][k] if len(hx) > 1 else None
            y, h_n, c_n, _, _ = op(xp, hx[0][k], c0, w_hh, b_hh, d == 1, save)
            outs.append(y)
            h_out[0].append(h_n)
            if len(hx) > 1:
                h_out[1].append(c_n)
        x = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, p=dropout, training=True)
    output = x.transpose(0, 1) if batch_first else x  # a time-major view, strides as torch.nn gives them
    return output, [torch.stack(h) for h in h_out]


def _zeros_hx(input: Tensor, weights: Sequence[Tensor], num_layers: int, bidirectional: bool, batch_first: bool):
    batch = input.size(0 if batch_first else 1) if input.dim() == 3 else 0
    hidden = weights[1].shape[-1]
    return input.new_zeros((num_layers * (2 if bidirectional else 1), batch, hidden))


def fused_lstm(input: Tensor, hx: tuple[Tensor, Tensor] | None, weights: Sequence[Tensor], *, bias: bool = True,
               num_layers: int = 1, dropout: float = 0.0, training: bool = False, bidirectional: bool = False,
               batch_first: bool = False) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Multi-layer LSTM, as ``torch.nn.LSTM`` computes it (gates i, f, g, o).

    Args:
        input: [T, B, I] ([B, T, I] with batch_first).
        hx: (h0, c0), each [L*D, B, H], or None for zeros.
        weights: torch.nn's flat weight list (see the module docstring).
        dropout: probability of dropout on the outputs of every layer but the last, applied if ``training``.
    Returns:
        output [T, B, D*H] ([B, T, D*H] with batch_first) and (h_n, c_n), each [L*D, B, H].
    """
    if hx is None:
        zeros = _zeros_hx(input, weights, num_layers, bidirectional, batch_first)
        hx = (zeros, zeros)
    _check("lstm", input, hx, weights, num_layers, bias, bidirectional, batch_first, dropout)
    if dispatch.select(input.device) == "aten":
        out, h, c = torch.lstm(input, tuple(hx), list(weights), bias, num_layers, dropout, training, bidirectional,
                               batch_first)
        return out, (h, c)
    out, (h, c) = _run("lstm", input, list(hx), weights, bias, num_layers, dropout, training, bidirectional,
                       batch_first)
    return out, (h, c)


def fused_gru(input: Tensor, hx: Tensor | None, weights: Sequence[Tensor], *, bias: bool = True, num_layers: int = 1,
              dropout: float = 0.0, training: bool = False, bidirectional: bool = False,
              batch_first: bool = False) -> tuple[Tensor, Tensor]:
    """Multi-layer GRU, as ``torch.nn.GRU`` computes it (gates r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).

    Args and shapes as ``fused_lstm``, with ``hx`` a single h0 [L*D, B, H] or None. Returns (output, h_n).
    """
    if hx is None:
        hx = _zeros_hx(input, weights, num_layers, bidirectional, batch_first)
    _check("gru", input, [hx], weights, num_layers, bias, bidirectional, batch_first, dropout)
    if dispatch.select(input.device) == "aten":
        return torch.gru(input, hx, list(weights), bias, num_layers, dropout, training, bidirectional, batch_first)
    out, (h,) = _run("gru", input, [hx], weights, bias, num_layers, dropout, training, bidirectional, batch_first)
    return out, h


def fused_rnn(input: Tensor, hx: Tensor | None, weights: Sequence[Tensor], *, nonlinearity: str = "tanh",
              bias: bool = True, num_layers: int = 1, dropout: float = 0.0, training: bool = False,
              bidirectional: bool = False, batch_first: bool = False) -> tuple[Tensor, Tensor]:
    """Multi-layer Elman RNN, as ``torch.nn.RNN`` computes it: h' = tanh|relu(W_ih x + b_ih + W_hh h + b_hh).

    Args and shapes as ``fused_gru``; ``nonlinearity`` is "tanh" or "relu". Returns (output, h_n).
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    if hx is None:
        hx = _zeros_hx(input, weights, num_layers, bidirectional, batch_first)
    _check("rnn_" + nonlinearity, input, [hx], weights, num_layers, bias, bidirectional, batch_first, dropout)
    if dispatch.select(input.device) == "aten":
        fn = torch.rnn_tanh if nonlinearity == "tanh" else torch.rnn_relu
        return fn(input, hx, list(weights), bias, num_layers, dropout, training, bidirectional, batch_first)
    out, (h,) = _run("rnn_" + nonlinearity, input, [hx], weights, bias, num_layers, dropout, training, bidirectional,
                     batch_first)
    return out, h
