"""Naive reference implementations: plain torch loops, differentiable to any order.

The oracle for tests (beside torch.nn itself) and a readable statement of the math. Shapes:
  x [T, B, I] (time-major), h [B, H], c [B, H]; weights in torch.nn's layout:
  w_ih [G*H, I], w_hh [G*H, H], b_ih / b_hh [G*H] or None; gate order as torch.nn
  (LSTM i, f, g, o; GRU r, z, n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    xr, xz, xn = F.linear(x, w_ih, b_ih).chunk(3, dim=-1)
    hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    pre = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def layer(cell: str, x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
    """One layer and direction. cell: "lstm", "gru", "rnn_tanh" or "rnn_relu".
    Returns (y [T, B, H], h_n [B, H], c_n [B, H] or None)."""
    h, c = h0, c0
    ys = [None] * x.shape[0]
    order = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    for t in order:
        if cell == "lstm":
            h, c = lstm_cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh)
        elif cell == "gru":
            h = gru_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        else:
            h = rnn_cell(x[t], h, w_ih, w_hh, b_ih, b_hh, cell[len("rnn_"):])
        ys[t] = h
    return torch.stack(ys), h, c


def rnn(cell: str, x, h0, c0, weights, num_layers=1, bias=True, bidirectional=False, batch_first=False):
    """A whole multi-layer network, weights flat in torch.nn's ``_flat_weights`` order.

    x: [T, B, I] ([B, T, I] if batch_first); h0, c0: [L*D, B, H] (c0 None unless LSTM).
    Returns (output [T, B, D*H], h_n [L*D, B, H], c_n [L*D, B, H] or None). No dropout.
    """
    if batch_first:
        x = x.transpose(0, 1)
    dirs = 2 if bidirectional else 1
    per = 4 if bias else 2
    hs, cs = [], []
    for layer_idx in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer_idx * dirs + d
            w = weights[k * per:(k + 1) * per]
            b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
            y, h, c = layer(cell, x, h0[k], None if c0 is None else c0[k], w[0], w[1], b_ih, b_hh, reverse=d == 1)
            outs.append(y)
            hs.append(h)
            cs.append(c)
        x = torch.cat(outs, dim=-1)
    out = x.transpose(0, 1) if batch_first else x
    return out, torch.stack(hs), None if c0 is None else torch.stack(cs)
