"""Custom ops: one recurrent layer and direction, forward and backward, per cell kind.

``fusedrnn::<cell>_layer`` (cell in lstm, gru, rnn_tanh, rnn_relu) runs the recurrence over a whole sequence
from the precomputed input pre-activations; ``fusedrnn::<cell>_layer_backward`` is its backward through
time. Both are ``torch.library`` custom ops with fake (meta) implementations, so torch.compile treats them
as opaque, and the forward has autograd registered. The input projection and its gradients are plain
torch GEMMs around the op (see functional.py).

Signature of every forward op (shapes: T time, B batch, H hidden, G gates, NS saved per unit):
    (xp [T, B, G*H], h0 [B, H], c0 [B, H] | None (LSTM only), w_hh [G*H, H], b_hh [G*H] | None,
     reverse: bool, save: bool)
    -> (y [T, B, H], h_n [B, H], c_n [B, H] | [0], saved [T, B, NS*H] | [0], cs [T+1, B, H] | [0])
``saved`` and ``cs`` exist only with ``save=True`` and are what the backward reads.
"""

from typing import Optional

import torch
from torch import Tensor

from . import launch

LAYER_OPS: dict = {}


def _define(cell: str):
    spec = launch.CELLS[cell]
    is_lstm = cell == "lstm"

    def layer(xp: Tensor, h0: Tensor, c0: Optional[Tensor], w_hh: Tensor, b_hh: Optional[Tensor], reverse: bool,
              save: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return launch.recurrence_fwd(cell, xp, h0, c0, w_hh, b_hh, reverse, save)

    def layer_fake(xp, h0, c0, w_hh, b_hh, reverse, save):
        T, B, _ = xp.shape
        H = w_hh.shape[0] // spec.gates
        acc = launch.acc_dtype(xp.dtype)
        y = xp.new_empty((T, B, H))
        h_n = xp.new_empty((B, H))
        c_n = xp.new_empty((B, H) if is_lstm else (0,))
        saved = xp.new_empty((T, B, spec.saved * H) if save else (0,), dtype=acc)
        cs = xp.new_empty((T + 1, B, H) if save and is_lstm else (0,), dtype=acc)
        return y, h_n, c_n, saved, cs

    def layer_backward(dy: Tensor, dh_n: Tensor, dc_n: Optional[Tensor], h0: Tensor, w_hh: Tensor, y: Tensor,
                       saved: Tensor, cs: Tensor, reverse: bool,
                       has_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return launch.recurrence_bwd(cell, dy, dh_n, dc_n, h0, w_hh, y, saved, cs, reverse, has_bias)

    def layer_backward_fake(dy, dh_n, dc_n, h0, w_hh, y, saved, cs, reverse, has_bias):
        T, B, H = y.shape
        return (y.new_empty((T, B, spec.gates * H)), y.new_empty((B, H)), y.new_empty((B, H) if is_lstm else (0,)),
                w_hh.new_empty(w_hh.shape), w_hh.new_empty((w_hh.shape[0],) if has_bias else (0,)))

    fwd_op = torch.library.custom_op(f"fusedrnn::{cell}_layer", layer, mutates_args=())
    fwd_op.register_fake(layer_fake)
    bwd_op = torch.library.custom_op(f"fusedrnn::{cell}_layer_backward", layer_backward, mutates_args=())
    bwd_op.register_fake(layer_backward_fake)

    def setup_context(ctx, inputs, output):
        xp, h0, c0, w_hh, b_hh, reverse, save = inputs
        y, _, _, saved, cs = output
        ctx.save = save
        ctx.reverse = reverse
        ctx.has_bias = b_hh is not None
        ctx.has_c0 = c0 is not None
        ctx.save_for_backward(h0, w_hh, y, saved, cs)

    def backward(ctx, dy, dh_n, dc_n, _dsaved, _dcs):
        if not ctx.save:
            raise RuntimeError(f"fusedrnn::{cell}_layer ran with save=False, which keeps nothing for the "
                               f"backward; run it with save=True to differentiate it")
        h0, w_hh, y, saved, cs = ctx.saved_tensors
        dy = torch.zeros_like(y) if dy is None else dy
        dh_n = torch.zeros_like(h0) if dh_n is None else dh_n
        if is_lstm:
            dc_n = torch.zeros_like(h0) if dc_n is None else dc_n
        else:
            dc_n = None
        dxp, dh0, dc0, dw_hh, db_hh = bwd_op(dy, dh_n, dc_n, h0, w_hh, y, saved, cs, ctx.reverse, ctx.has_bias)
        return (dxp, dh0, dc0 if ctx.has_c0 else None, dw_hh, db_hh if ctx.has_bias else None, None, None)

    fwd_op.register_autograd(backward, setup_context=setup_context)
    LAYER_OPS[cell] = fwd_op
    return fwd_op


lstm_layer = _define("lstm")
gru_layer = _define("gru")
rnn_tanh_layer = _define("rnn_tanh")
rnn_relu_layer = _define("rnn_relu")
