"""Custom ops: per cell kind, one recurrent layer and direction, and one cell step; forward and backward.

``fusedrnn::<cell>_layer`` (cell in lstm, gru, rnn_tanh, rnn_relu) runs a whole sequence, input projection
included; ``fusedrnn::<cell>_step`` runs one step of a Cell in one launch. Each has a ``_backward`` op. All are
``torch.library`` custom ops with fake (meta) implementations, so torch.compile treats them as opaque, and the
forward ops have autograd registered.

Layer op (T time, B batch, N packed rows, I input, H hidden, P = proj_size or H, G gates, NS saved per unit):
    (x [T, B, I] or packed [N, I], h0 [B, P], c0 [B, H] | None (LSTM only), w_ih [G*H, I], w_hh [G*H, P],
     b_ih [G*H] | None, b_hh [G*H] | None, w_hr [P, H] | None (LSTM projection),
     batch_sizes list[int] | None (packed x), reverse: bool, save: bool,
     zero [T, B] or packed [N] uint8 | None (resets: 1 where the state entering that step is zero; ``Schedule.entering``))
    -> (y [T, B, P] or [N, P], h_n [B, P], c_n [B, H] | [0], saved, cs, hr)
Step op:
    (x [B, I], h [B, H], c [B, H] | None, w_ih, w_hh, b_ih | None, b_hh | None, save: bool)
    -> (h' [B, H], c' [B, H] | [0], saved [B, NS*H] | [0])
``saved``, ``cs`` and ``hr`` are what the backward reads (empty unless ``save``).

Double backward: when the backward runs with grad mode on (``create_graph=True``), the gradients are
recomputed through the naive differentiable reference (fusedrnn.reference) from the op's own inputs, so
higher derivatives are exact; slower, and used only then.
"""

from typing import Optional

import torch
from torch import Tensor

from . import launch, reference
from .cells import CELLS
from .dispatch import acc_dtype

LAYER_OPS: dict = {}
STEP_OPS: dict = {}


def _grads(outputs, inputs, grad_outputs):
    """torch.autograd.grad with create_graph, None for inputs that are None or unused."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and g is not None]
    wanted = [i for i in inputs if i is not None and i.requires_grad]
    got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=True,
                                   allow_unused=True)) if wanted else iter(())
    return tuple(next(got) if (i is not None and i.requires_grad) else None for i in inputs)


def _define_layer(cell: str):
    spec = CELLS[cell]
    is_lstm = spec.has_c

    def layer(x: Tensor, h0: Tensor, c0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
              b_hh: Optional[Tensor], w_hr: Optional[Tensor], batch_sizes: Optional[list[int]], reverse: bool,
              save: bool, zero: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        return launch.recurrence_fwd(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, save, zero)

    def layer_fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, save, zero=None):
        H, P = w_hh.shape[0] // spec.gates, w_hh.shape[1]
        B = h0.shape[0]
        acc = acc_dtype(x.dtype)
        lead = (x.shape[0],) if batch_sizes is not None else tuple(x.shape[:2])
        T = len(batch_sizes) if batch_sizes is not None else x.shape[0]
        return (x.new_empty((*lead, P)), x.new_empty((B, P)), x.new_empty((B, H) if is_lstm else (0,)),
                x.new_empty((*lead, spec.saved * H) if save else (0,), dtype=acc),
                x.new_empty((T + 1, B, H) if save and is_lstm else (0,), dtype=acc),
                x.new_empty((*lead, H) if save and w_hr is not None else (0,)))

    def layer_backward(dy: Tensor, dh_n: Tensor, dc_n: Optional[Tensor], x: Tensor, h0: Tensor, c0: Optional[Tensor],
                       w_ih: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], has_bias: bool,
                       batch_sizes: Optional[list[int]], reverse: bool, y: Tensor, saved: Tensor, cs: Tensor,
                       hr: Tensor, zero: Optional[Tensor] = None
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        return launch.recurrence_bwd(cell, dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, w_hr, has_bias, batch_sizes,
                                     reverse, y, saved, cs, hr, zero)

    def layer_backward_fake(dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, w_hr, has_bias, batch_sizes, reverse, y, saved,
                            cs, hr, zero=None):
        none = x.new_empty((0,))
        bias = x.new_empty((w_hh.shape[0],)) if has_bias else none
        return (x.new_empty(x.shape), h0.new_empty(h0.shape), x.new_empty(c0.shape) if is_lstm else none.clone(),
                w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), bias, bias.clone(),
                w_hr.new_empty(w_hr.shape) if w_hr is not None else none.clone())

    fwd_op = torch.library.custom_op(f"fusedrnn::{cell}_layer", layer, mutates_args=())
    fwd_op.register_fake(layer_fake)
    bwd_op = torch.library.custom_op(f"fusedrnn::{cell}_layer_backward", layer_backward, mutates_args=())
    bwd_op.register_fake(layer_backward_fake)

    def setup_context(ctx, inputs, output):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, save, zero = inputs
        y, _, _, saved, cs, hr = output
        ctx.save, ctx.reverse, ctx.batch_sizes = save, reverse, batch_sizes
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, saved, cs, hr, zero)

    def backward(ctx, dy, dh_n, dc_n, *_):
        if not ctx.save:
            raise RuntimeError(f"fusedrnn::{cell}_layer ran with save=False, which keeps nothing for the "
                               f"backward; run it with save=True to differentiate it")
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, saved, cs, hr, zero = ctx.saved_tensors
        dy = torch.zeros_like(y) if dy is None else dy
        dh_n = torch.zeros_like(h0) if dh_n is None else dh_n
        dc_n = (torch.zeros(cs.shape[1:], dtype=y.dtype, device=y.device) if dc_n is None else dc_n) if is_lstm \
            else None
        inputs = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        if torch.is_grad_enabled():  # create_graph=True: differentiable recomputation
            with torch.enable_grad():
                out = reference.recurrence(cell, *inputs, ctx.batch_sizes, ctx.reverse, zero)
            return (*_grads(out, inputs, (dy, dh_n, dc_n)), None, None, None, None)
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = bwd_op(
            dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, w_hr, b_ih is not None, ctx.batch_sizes, ctx.reverse,
            y, saved, cs, hr, zero)
        bias = b_ih is not None
        return (dx, dh0, dc0 if c0 is not None else None, dw_ih, dw_hh, db_ih if bias else None,
                db_hh if bias else None, dw_hr if w_hr is not None else None, None, None, None, None)

    fwd_op.register_autograd(backward, setup_context=setup_context)
    LAYER_OPS[cell] = fwd_op


def _define_step(cell: str):
    spec = CELLS[cell]
    is_lstm = spec.has_c

    def step(x: Tensor, h: Tensor, c: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
             b_hh: Optional[Tensor], save: bool) -> tuple[Tensor, Tensor, Tensor]:
        return launch.cell_fwd(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, save)

    def step_fake(x, h, c, w_ih, w_hh, b_ih, b_hh, save):
        B, H = h.shape
        acc = acc_dtype(x.dtype)
        return (h.new_empty((B, H)), h.new_empty((B, H) if is_lstm else (0,)),
                h.new_empty((B, spec.saved * H) if save else (0,), dtype=acc))

    def step_backward(dh_new: Tensor, dc_new: Optional[Tensor], x: Tensor, h: Tensor, c: Optional[Tensor],
                      w_ih: Tensor, w_hh: Tensor, has_bias: bool, c_new: Tensor,
                      saved: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        return launch.cell_bwd(cell, dh_new, dc_new, x, h, c, w_ih, w_hh, has_bias, c_new, saved)

    def step_backward_fake(dh_new, dc_new, x, h, c, w_ih, w_hh, has_bias, c_new, saved):
        none = x.new_empty((0,))
        bias = x.new_empty((w_hh.shape[0],)) if has_bias else none
        return (x.new_empty(x.shape), h.new_empty(h.shape), h.new_empty(h.shape) if is_lstm else none.clone(),
                w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), bias, bias.clone())

    fwd_op = torch.library.custom_op(f"fusedrnn::{cell}_step", step, mutates_args=())
    fwd_op.register_fake(step_fake)
    bwd_op = torch.library.custom_op(f"fusedrnn::{cell}_step_backward", step_backward, mutates_args=())
    bwd_op.register_fake(step_backward_fake)

    def setup_context(ctx, inputs, output):
        x, h, c, w_ih, w_hh, b_ih, b_hh, save = inputs
        _, c_new, saved = output
        ctx.save = save
        ctx.save_for_backward(x, h, c, w_ih, w_hh, b_ih, b_hh, c_new, saved)

    def backward(ctx, dh_new, dc_new, _dsaved):
        if not ctx.save:
            raise RuntimeError(f"fusedrnn::{cell}_step ran with save=False, which keeps nothing for the backward")
        x, h, c, w_ih, w_hh, b_ih, b_hh, c_new, saved = ctx.saved_tensors
        dh_new = torch.zeros_like(h) if dh_new is None else dh_new
        dc_new = (torch.zeros_like(h) if dc_new is None else dc_new) if is_lstm else None
        inputs = (x, h, c, w_ih, w_hh, b_ih, b_hh)
        if torch.is_grad_enabled():  # create_graph=True: differentiable recomputation
            with torch.enable_grad():
                out = reference.step(cell, *inputs)
            return (*_grads(out, inputs, (dh_new, dc_new)), None)
        dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh = bwd_op(dh_new, dc_new, x, h, c, w_ih, w_hh, b_ih is not None, c_new,
                                                        saved)
        bias = b_ih is not None
        return (dx, dh, dc if c is not None else None, dw_ih, dw_hh, db_ih if bias else None, db_hh if bias else None,
                None)

    fwd_op.register_autograd(backward, setup_context=setup_context)
    STEP_OPS[cell] = fwd_op


for _cell in CELLS:
    _define_layer(_cell)
    _define_step(_cell)
