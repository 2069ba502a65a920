"""Pointwise math of each recurrent cell, as small ``@triton.jit`` helpers: the only code that knows the cells.

The tile code in ``tile.py`` (the recurrent matmul, the loads and the stores, written once for every cell and every
kernel) hands the per-gate pre-activations to ``cell_fwd`` / ``cell_bwd`` here, which pick the cell's math by the
constexpr ``CELL``. The tile code itself branches only on the cell's traits (``fusedrnn/cells.py``: G, NS,
HAS_C, READS_H, SPLIT_DX), never on its name. Everything is elementwise over a ``[BLOCK_B, BLOCK_H]`` tile; the
gates travel as tuples (``x[k]``, ``r[k]``, k < G), the saved activations as an NS-tuple.

Legend: B batch, H hidden, G gates per cell (LSTM 4, GRU 3, RNN 1), NS saved activations (LSTM 4, GRU 4, RNN 1).

Per gate k, ``x[k]`` is the input pre-activation (``x @ W_ih^T + b_ih``, computed for all steps at once
outside the loop) and ``r[k]`` the recurrent one (``h_{t-1} @ W_hh^T + b_hh``). Keeping the two apart is what
GRU needs: its candidate gate is ``n = tanh(x_n + r * r_n)``.

Saved activations (what the backward reads, in the gate order of torch.nn):
  LSTM      i, f, g, o (after their activations); c_t itself is kept by the kernel
  GRU       r, z, n, r_n (the recurrent part of n, with b_hn)
  RNN       h_t in full precision (tanh' = 1 - h^2; relu' = 0 where h <= 0, else 1, as torch: a NaN h passes dh)
"""

import triton
import triton.language as tl

CELL_LSTM = tl.constexpr(0)
CELL_GRU = tl.constexpr(1)
CELL_RNN_TANH = tl.constexpr(2)
CELL_RNN_RELU = tl.constexpr(3)


@triton.jit
def _tanh(x):
    # 1 - 2 / (e^{2x} + 1) with 2x capped at 80, where it is 1 - 4e-35, 1.0 in fp32 and fp64 alike: e^80 does not
    # overflow (the interpreter warned "overflow encountered in exp" on e^{2x}), the limits at +-inf stay exact (1,
    # and -1 from e^{-inf} = 0), NaN stays NaN (NaN > 80 is false), absolute error ~ eps. One exp, one division and
    # a select; libdevice.tanh would be faster on a GPU but does not run under the interpreter.
    z = 2.0 * x
    return 1.0 - 2.0 / (tl.exp(tl.where(z > 80.0, 80.0, z)) + 1.0)


@triton.jit
def _sigmoid(x):
    # 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with e = exp(-|x|) in (0, 1]: no overflow, exact limits
    # 1 and 0 at +-inf (e = 0), NaN propagated (e and r are NaN, and NaN < 0 is false), relative error a few ulp on
    # both sides (1 / (1 + e^{-x}) had it only for x >= 0).
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    return tl.where(x < 0.0, e * r, r)


@triton.jit
def cell_fwd(CELL: tl.constexpr, x, r, h_prev, c_prev):
    """One step of the cell. ``x`` and ``r``: G-tuples of the gates' input and recurrent pre-activations; h_prev
    (read by cells with READS_H) and c_prev (HAS_C) the state at t-1. Returns (h_t, c_t, saved): c_t zeros for a
    cell without c, ``saved`` the NS-tuple the backward reads."""
    zero = tl.zeros_like(r[0])
    if CELL == CELL_LSTM:
        i = _sigmoid(x[0] + r[0])
        f = _sigmoid(x[1] + r[1])
        g = _tanh(x[2] + r[2])
        o = _sigmoid(x[3] + r[3])
        c = f * c_prev + i * g
        h = o * _tanh(c)
        return h, c, (i, f, g, o)
    elif CELL == CELL_GRU:
        rg = _sigmoid(x[0] + r[0])
        z = _sigmoid(x[1] + r[1])
        n = _tanh(x[2] + rg * r[2])
        h = (1.0 - z) * n + z * h_prev
        return h, zero, (rg, z, n, r[2])
    elif CELL == CELL_RNN_TANH:
        h = _tanh(x[0] + r[0])
        return h, zero, (h, )
    else:
        # relu that propagates NaN, as torch.relu does: a plain tl.maximum(v, 0.0) compiles to max.f32, which
        # returns the operand that is not NaN (NaN in, 0 out). PropagateNan.ALL gives max.NaN.f32 (one instruction,
        # as before); PTX has no max.NaN.f64, for which the select (NaN < 0 is false) is shorter than its expansion.
        v = x[0] + r[0]
        if v.dtype == tl.float64:
            h = tl.where(v < 0.0, 0.0, v)
        else:
            h = tl.maximum(v, 0.0, propagate_nan=tl.PropagateNan.ALL)
        return h, zero, (h, )


@triton.jit
def cell_bwd(CELL: tl.constexpr, dh, dc, saved, h_prev, c_prev, c):
    """Gradients of one step, given dh = dL/dh_t (all paths), dc = dL/dc_t from step t+1 (HAS_C), the NS-tuple
    ``saved`` of ``cell_fwd``, h_prev (READS_H) and c_prev, c = c_{t-1}, c_t (HAS_C).

    Returns (dx, dr, dh_prev, dc_prev):
      dx       G-tuple, the gradients of the gates' input pre-activations (dXp);
      dr       G-tuple, those of their recurrent pre-activations (dHp): dx but for GRU's n gate, whose recurrent
               part is scaled by r (the cells with SPLIT_DX);
      dh_prev  the pointwise part of dL/dh_{t-1} (GRU's z * dh; the matmul part is added by the kernel);
      dc_prev  dL/dc_{t-1} (LSTM; zeros otherwise).
    """
    zero = tl.zeros_like(dh)
    if CELL == CELL_LSTM:
        i, f, g, o = saved
        tc = _tanh(c)
        dc = dc + dh * o * (1.0 - tc * tc)
        di = dc * g * i * (1.0 - i)
        df = dc * c_prev * f * (1.0 - f)
        dg = dc * i * (1.0 - g * g)
        do = dh * tc * o * (1.0 - o)
        return (di, df, dg, do), (di, df, dg, do), zero, dc * f
    elif CELL == CELL_GRU:
        r, z, n, rn = saved
        dn = dh * (1.0 - z) * (1.0 - n * n)
        dr = dn * rn * r * (1.0 - r)
        dz = dh * (h_prev - n) * z * (1.0 - z)
        return (dr, dz, dn), (dr, dz, dn * r), dh * z, zero
    elif CELL == CELL_RNN_TANH:
        d = dh * (1.0 - saved[0] * saved[0])
        return (d, ), (d, ), zero, zero
    else:
        # torch's relu backward (threshold_backward on the output): 0 where h <= 0, else dh; a NaN h passes dh.
        d = tl.where(saved[0] <= 0.0, 0.0, dh)
        return (d, ), (d, ), zero, zero
