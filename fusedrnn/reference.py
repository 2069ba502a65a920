"""Naive reference implementations: plain torch loops, differentiable to any order.

The oracle for tests (beside torch.nn itself), the double-backward path of the fused ops, and a readable
statement of the math. Weights in torch.nn's layout: w_ih [G*H, I], w_hh [G*H, P], b_ih / b_hh [G*H] or None,
w_hr [P, H] (LSTM projection, P = proj_size) or None; gate order as torch.nn (LSTM i, f, g, o; GRU r, z, n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cells import CELLS


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


#: cell name (``fusedrnn.cells.CELLS``) -> one step (x, h, c, w_ih, w_hh, b_ih, b_hh) -> (h', c' or None).
STEPS = {
    "lstm": lambda x, h, c, *w: lstm_cell(x, h, c, *w),
    "gru": lambda x, h, c, *w: (gru_cell(x, h, *w), None),
    "rnn_tanh": lambda x, h, c, *w: (rnn_cell(x, h, *w, nonlinearity="tanh"), None),
    "rnn_relu": lambda x, h, c, *w: (rnn_cell(x, h, *w, nonlinearity="relu"), None),
}
assert set(STEPS) == set(CELLS), "every cell of the table has a reference step"


def step(cell: str, x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One step of ``cell`` (a name of ``fusedrnn.cells.CELLS``): x [B, I], h [B, H], c [B, H] (cells with a cell
    state) or None. Returns (h', c' or None)."""
    return STEPS[cell](x, h, c, w_ih, w_hh, b_ih, b_hh)


def recurrence(cell: str, x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, batch_sizes=None, reverse=False,
               zero=None):
    """One layer and direction over a sequence.

    x: [T, B, I], or packed rows [N, I] with ``batch_sizes`` (rows of step t first, as in a PackedSequence;
    sequence b runs the steps t with batch_sizes[t] > b). h0 [B, P], c0 [B, H] or None. zero: [T, B] (packed [N])
    flags or None: where set, the state entering that element is zero (h and c), as if a sequence started there.
    Returns (y [T, B, P] or [N, P], h_n [B, P], c_n [B, H] or None): h_n holds each sequence's last state.
    """
    if batch_sizes is None:
        sizes = [h0.shape[0]] * x.shape[0]
        rows = [x[t] for t in range(x.shape[0])]
        flags = None if zero is None else [zero[t] for t in range(x.shape[0])]
    else:
        sizes = [int(b) for b in batch_sizes]
        rows = list(torch.split(x, sizes))
        flags = None if zero is None else list(torch.split(zero, sizes))
    h, c = h0, c0
    ys = [None] * len(sizes)
    for t in (reversed(range(len(sizes))) if reverse else range(len(sizes))):
        n = sizes[t]
        h_in, c_in = h[:n], None if c is None else c[:n]
        if flags is not None:
            keep = ~flags[t].bool()[:, None]
            h_in = torch.where(keep, h_in, torch.zeros_like(h_in))
            c_in = None if c_in is None else torch.where(keep, c_in, torch.zeros_like(c_in))
        h_t, c_t = step(cell, rows[t], h_in, c_in, w_ih, w_hh, b_ih, b_hh)
        if w_hr is not None:
            h_t = F.linear(h_t, w_hr)
        ys[t] = h_t
        h = torch.cat([h_t, h[n:]])  # rows that have not started or have finished keep their state
        if c is not None:
            c = torch.cat([c_t, c[n:]])
    y = torch.stack(ys) if batch_sizes is None else torch.cat(ys)
    return y, h, c


def rnn(cell: str, x, h0, c0, weights, num_layers=1, bias=True, bidirectional=False, batch_first=False,
        proj_size=0):
    """A whole multi-layer network, weights flat in torch.nn's ``_flat_weights`` order.

    x: [T, B, I] ([B, T, I] if batch_first); h0 [L*D, B, P], c0 [L*D, B, H] (c0 None unless LSTM).
    Returns (output [T, B, D*P], h_n [L*D, B, P], c_n [L*D, B, H] or None). No dropout.
    """
    if batch_first:
        x = x.transpose(0, 1)
    dirs = 2 if bidirectional else 1
    per = (4 if bias else 2) + (1 if proj_size else 0)
    hs, cs = [], []
    for layer_idx in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer_idx * dirs + d
            w = weights[k * per:(k + 1) * per]
            b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
            y, h, c = recurrence(cell, x, h0[k], None if c0 is None else c0[k], w[0], w[1], b_ih, b_hh,
                                 w[-1] if proj_size else None, reverse=d == 1)
            outs.append(y)
            hs.append(h)
            cs.append(c)
        x = torch.cat(outs, dim=-1)
    out = x.transpose(0, 1) if batch_first else x
    return out, torch.stack(hs), None if c0 is None else torch.stack(cs)
