"""Launchers of the kernels: allocate, walk the sequence, build each launch's arguments, launch.

Legend: T time, B batch, N packed rows, I input size, H hidden, P width of h (proj_size, else H), G gates,
NS saved activations per hidden unit. All tensors belong to ONE layer and ONE direction. A sequence is dense
(``[T, B, .]``, any strides with a unit last stride) or packed (``[N, .]``, rows of step t at offsets[t], as in
a PackedSequence). Loops index "steps" in processing order; ``Schedule.time(step)`` is the timestep.

Nothing here decides: the kernel, its cooperative plan and grid, input fusion, the configurations and the dot
settings all come from ``fusedrnn.dispatch``. Nothing here starts a kernel itself: every launch is
``fusedrnn.calls.launch(name, grid, **arguments)``, by the kernels' parameter names, and each kernel family's
arguments are built in one place: ``_step_fwd`` / ``_step_bwd`` (one timestep: the sequence launchers' loops and
the Cell API) and ``_persistent_fwd`` / ``_persistent_bwd`` (a whole sequence, launched by ``_persistent``:
batch-tiled, or cooperative, resident or streamed, with the batch-tiled fallback).
"""

from __future__ import annotations

import functools
import inspect
import warnings

import torch
import triton

from fusedrnn import dispatch
from fusedrnn.calls import launch, launch_counts  # noqa: F401 - launch_counts: read by tests and tools here
from fusedrnn.cells import CELLS
from fusedrnn.dispatch import acc_dtype
from fusedrnn.schedule import Schedule, sources  # noqa: F401 - Schedule: patched by tests here


def _on_tensors_device(fn):
    """Run a launcher on the device of its first tensor argument: Triton launches on the *current* CUDA device and
    that device's current stream, so without the guard a tensor on cuda:1 would be handed to a kernel on cuda:0.
    Inside the guard the stream is the tensors' device's current stream, as for torch's own ops."""
    name = list(inspect.signature(fn).parameters)[1]  # the tensor after ``cell``, by position or by keyword

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        device = (args[1] if len(args) > 1 else kwargs[name]).device
        if device.type != "cuda":
            return fn(*args, **kwargs)
        with torch.cuda.device(device):
            return fn(*args, **kwargs)
    return guarded


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


@_on_tensors_device
def recurrence_fwd(cell: str, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None, w_ih: torch.Tensor,
                   w_hh: torch.Tensor, b_ih: torch.Tensor | None, b_hh: torch.Tensor | None,
                   w_hr: torch.Tensor | None, batch_sizes: list[int] | None, reverse: bool, save: bool,
                   zero: torch.Tensor | None = None):
    """Run one layer and direction over the whole sequence.

    Args:
        x: [T, B, I] inputs (dense), or [N, I] packed rows with ``batch_sizes`` (length T).
        h0: [B, P]; c0: [B, H] (LSTM only, else None).
        w_ih [G*H, I], w_hh [G*H, P], b_ih / b_hh [G*H] or None; w_hr [P, H] (LSTM projection) or None.
        reverse: walk the sequence from its end. save: keep what the backward needs.
        zero: resets, [T, B] (packed [N]) uint8 in x's layout, or None: where 1, the state entering that step is zero
            (h and c; this direction's: ``Schedule.entering``), as if a new sequence started there.

    Returns (y, h_n [B, P], c_n [B, H] | [0], saved, cs, hr):
        y      [T, B, P] or [N, P];
        saved  [T, B, NS*H] / [N, NS*H] activations by timestep (accumulator dtype), with ``save``;
        cs     [T+1, B, H] cell states by step, cs[s+1] after step s (accumulator dtype), LSTM with ``save``;
        hr     h before the projection, like y but [., H], with a projection and ``save``.
    The input projection is one GEMM over all steps, unless the plan fuses it into the kernel (single steps, and
    persistent kernels without ``save``).
    """
    spec = CELLS[cell]
    T = len(batch_sizes) if batch_sizes is not None else x.shape[0]
    B = h0.shape[0]
    H = w_hh.shape[0] // spec.gates
    P = w_hh.shape[1]
    dtype, device, acc = x.dtype, x.device, acc_dtype(x.dtype)
    sched = Schedule(T, B, batch_sizes, reverse)

    def empty():  # distinct placeholders: custom-op outputs may not alias each other
        return torch.empty(0, dtype=acc, device=device)

    plan = dispatch.plan_layer(cell, dtype, device, T, B, H, w_hr is not None, save)
    x = _unit_last_stride(x)
    xp = x if plan.fuse_input else torch.nn.functional.linear(x, w_ih, b_ih)
    h0 = h0.contiguous()
    c0 = c0.contiguous() if spec.has_c else None
    y = sched.alloc(P, dtype, device)
    hr = None
    if w_hr is not None:
        hr = sched.alloc(H, dtype, device) if save else torch.empty((2, B, H), dtype=dtype, device=device)
    cs = torch.empty((T + 1 if save else 2, B, H), dtype=acc, device=device) if spec.has_c else empty()
    saved = sched.alloc(spec.saved * H, acc, device) if save else empty()

    if B > 0 and H > 0 and plan.kernel != "step":
        _persistent_fwd(plan, spec, sched, xp, w_ih, b_ih, h0, c0, w_hh, b_hh, y, cs, saved, save, zero)
    elif B > 0 and H > 0:
        cfg = dispatch.config("step_fwd", cell, H, P, B, dtype, device, x.shape[-1] if plan.fuse_input else 0)
        for step in range(T):
            rows = sched.batch(step)
            h_src, h_init, split, two = sources(sched, step, sched.rows(y, step - 1) if step else h0, h0)
            if spec.has_c:
                c_prev, c_out = (cs[step], cs[step + 1]) if save else (cs[step % 2], cs[(step + 1) % 2])
                c_src, c_init, _, _ = sources(sched, step, c_prev, c0)
            else:
                c_src = c_init = c_out = cs
            h_out = sched.rows(y, step) if hr is None else (sched.rows(hr, step) if save else hr[step % 2][:rows])
            _step_fwd(cfg, spec, sched.rows(xp, step), w_ih, b_ih, h_src, h_init, c_src, c_init, w_hh, b_hh, h_out,
                      c_out, sched.rows(saved, step) if save else saved, cs if zero is None else sched.rows(zero, step),
                      B=rows, B_prev=split, I=x.shape[-1], save=save, fuse_input=plan.fuse_input, two_sources=two,
                      reset=zero is not None)
            if hr is not None:
                torch.mm(h_out, w_hr.t(), out=sched.rows(y, step))
    elif H == 0 and B > 0:
        y.zero_()  # an empty hidden state: outputs have no features, projections give zeros

    h_n = sched.per_sequence(y, "last").clone() if B > 0 else h0.new_empty((0, P))
    if spec.has_c:
        last = sched.last_step(device) + 1
        c_n = cs[last if save else last % 2, torch.arange(B, device=device)].to(dtype, copy=True)
        if H == 0 or B == 0:
            c_n = torch.zeros((B, H), dtype=dtype, device=device)
    else:
        c_n = torch.empty(0, dtype=dtype, device=device)
    return y, h_n, c_n, saved, cs if save else empty(), hr if (hr is not None and save) else empty().to(dtype)


@_on_tensors_device
def recurrence_bwd(cell: str, dy: torch.Tensor, dh_n: torch.Tensor, dc_n: torch.Tensor | None, x: torch.Tensor,
                   h0: torch.Tensor, c0: torch.Tensor | None, w_ih: torch.Tensor, w_hh: torch.Tensor,
                   w_hr: torch.Tensor | None, has_bias: bool, batch_sizes: list[int] | None, reverse: bool,
                   y: torch.Tensor, saved: torch.Tensor, cs: torch.Tensor, hr: torch.Tensor,
                   zero: torch.Tensor | None = None):
    """Backward through time of ``recurrence_fwd`` (run with ``save=True``); arguments as there, plus the
    gradients dy (like y), dh_n [B, P], dc_n [B, H] (LSTM, else None). With resets (``zero``) no gradient crosses
    a flagged step: not to earlier steps, not to h0 / c0, and dW_hh sees the zeroed h_{t-1}.

    Returns (dx, dh0, dc0 | [0], dw_ih, dw_hh, db_ih | [0], db_hh | [0], dw_hr | [0]). The per-step kernel
    produces the gate gradients; all weight, bias and input gradients are then GEMMs and reductions over all
    steps at once (no atomics, deterministic).
    """
    spec = CELLS[cell]
    T = len(batch_sizes) if batch_sizes is not None else x.shape[0]
    B = h0.shape[0]
    H = w_hh.shape[0] // spec.gates
    P = w_hh.shape[1]
    GH = spec.gates * H
    dtype, device, acc = y.dtype, y.device, acc_dtype(y.dtype)
    proj = w_hr is not None
    sched = Schedule(T, B, batch_sizes, reverse)

    def none():
        return torch.empty(0, dtype=dtype, device=device)

    dy = _unit_last_stride(dy)
    h0 = h0.contiguous()
    c0 = c0.contiguous() if spec.has_c else None
    dhp = sched.alloc(GH, dtype, device)
    dxp = sched.alloc(GH, dtype, device) if spec.split_dx else dhp
    carry_h = torch.zeros((B, H), dtype=acc, device=device) if proj else dh_n.to(acc, copy=True).contiguous()
    carry_c = dc_n.to(acc, copy=True).contiguous() if spec.has_c else torch.empty(0, dtype=acc, device=device)
    if proj:
        carry_p = dh_n.to(acc, copy=True)  # dL/dh_n through the projection, consumed at each row's last step
        dyp = sched.alloc(P, dtype, device)  # dL/d(projected h_t), for dW_hr
        w_hr_acc = w_hr.to(acc)

    plan = dispatch.plan_layer(cell, dtype, device, T, B, H, proj, True)
    if B > 0 and H > 0 and plan.kernel != "step":
        _persistent_bwd(plan, spec, sched, dy, w_hh, carry_h, carry_c, saved, cs, c0, y, h0, dhp, dxp, zero)
    elif B > 0 and H > 0:
        cfg = dispatch.config("step_bwd", cell, H, GH, B, dtype, device)
        for step in reversed(range(T)):
            rows, rows_next = sched.batch(step), sched.batch(step + 1)
            if proj:
                d = sched.rows(dy, step).to(acc) + carry_p[:rows]
                carry_p[:rows] = 0
                if rows_next:  # rows of the next step that continue a sequence of this one
                    n = min(rows, rows_next)
                    d[:n] += _kept(sched.rows(dhp, step + 1)[:n] @ w_hh, zero, sched, step + 1).to(acc)
                sched.rows(dyp, step).copy_(d)
                dy_t, has_next = d @ w_hr_acc, False
            else:
                dy_t, has_next = sched.rows(dy, step), rows_next > 0
            h_src, h_init, split, two = sources(sched, step, sched.rows(y, step - 1) if step else h0, h0)
            if spec.has_c:
                c_src, c_init, _, _ = sources(sched, step, cs[step], c0)
                c_t = cs[step + 1]
            else:
                c_src = c_init = c_t = carry_c
            z, z_next = (carry_h, carry_h) if zero is None else (sched.rows(zero, step), sched.rows(zero, step + 1)
                                                                 if has_next else zero)
            _step_bwd(cfg, spec, sched.rows(dhp, step + 1) if has_next else dhp, w_hh, dy_t, carry_h, carry_c,
                      sched.rows(saved, step), c_t, c_src, c_init, h_src, h_init, sched.rows(dhp, step),
                      sched.rows(dxp, step), z, z_next, B=rows, B_next=rows_next, B_prev=split, has_next=has_next,
                      two_sources=two, reset=zero is not None)
    elif B > 0:  # H == 0: no gates, no gradient through the recurrence
        dhp.zero_()
        dxp.zero_()
        if proj:
            dyp.zero_()

    # dh0 = pointwise carry + dHp of each sequence's first step @ W_hh; with a projection the carry was
    # consumed (zeroed) at each sequence's last step.
    carry = carry_p if proj else carry_h
    if B > 0:  # a sequence that starts afresh at its first step passes nothing to h0
        first_dh = _kept(sched.per_sequence(dhp, "first") @ w_hh, None if zero is None else
                         sched.per_sequence(zero, "first"))
    dh0 = (carry + first_dh.to(acc)).to(dtype) if B > 0 else carry.to(dtype)
    dc0 = carry_c.to(dtype) if spec.has_c else none()
    # dW_hh = sum over rows of dHp^T h_{t-1}.
    if sched.packed:
        dw_hh = sched.flat(dhp).t() @ _kept(sched.previous_rows(y, h0), zero)
    else:
        rest_g, rest_h = (dhp[:-1], y[1:]) if reverse else (dhp[1:], y[:-1])
        first = sched.time(0)
        if zero is not None:  # h_{t-1} as step t saw it: zero where it starts afresh
            rest_h = _kept(rest_h, zero[:-1] if reverse else zero[1:])
        dw_hh = torch.addmm(dhp[first].t() @ _kept(h0, None if zero is None else zero[first]),
                            rest_g.reshape(-1, GH).t(), rest_h.reshape(-1, P))
    flat_dxp = sched.flat(dxp)
    dx = dxp @ w_ih
    dw_ih = flat_dxp.t() @ sched.flat(x)
    db_ih = flat_dxp.sum(0) if has_bias else none()
    db_hh = sched.flat(dhp).sum(0) if has_bias else none()
    dw_hr = sched.flat(dyp).t() @ sched.flat(hr) if proj else none()
    return dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr


# ---- the arguments of each kernel family ------------------------------------------------------------------------


def _kept(rows: torch.Tensor, zero: torch.Tensor | None, sched=None, step: int | None = None) -> torch.Tensor:
    """``rows`` ([..., w]) with the rows flagged in ``zero`` (the same leading shape; or, with ``sched`` and ``step``,
    that step's rows of ``zero``, cut to as many rows) set to zero: what a reset leaves of a state. No resets: as is."""
    if zero is None:
        return rows
    if sched is not None:
        zero = sched.rows(zero, step)[:rows.shape[0]]
    return rows.masked_fill(zero.bool()[..., None], 0)


def _or(tensor, placeholder):
    """``tensor``, or for an absent one (a bias) any tensor of the kernel's pointer type: the kernel never reads it."""
    return tensor if tensor is not None else placeholder


def _rows_stride(t: torch.Tensor, used: bool) -> int:
    """Row stride of a [rows, .] state tensor the kernel reads (``used``), else 0 (a placeholder, never read)."""
    return t.stride(0) if used else 0


def _step_fwd(cfg, spec, x, w_ih, b_ih, h_prev, h0, c_prev, c0, w_hh, b_hh, h, c, save_t, z, *, B: int, B_prev: int,
              I: int, save: bool, fuse_input: bool, two_sources: bool, reset: bool):  # noqa: E741
    """One launch of ``_step_fwd_kernel`` (``kernels/step.py``, whose parameters these are) with the configuration
    ``cfg``: x [B, G*H] pre-activations or [B, I] inputs (``fuse_input``); h_prev / c_prev the state rows < B_prev
    and h0 / c0 the others (``two_sources``); outputs h, c [B, H] and, with ``save``, save_t [B, NS*H]; z the step's
    reset flags [B] (``reset``; else any tensor)."""
    H = w_hh.shape[0] // spec.gates
    launch("step_fwd", (triton.cdiv(B, cfg.BLOCK_B), triton.cdiv(H, cfg.BLOCK_H)),
           p_x=x, s_x=x.stride(0), p_wih=w_ih, s_wir=w_ih.stride(0), s_wic=w_ih.stride(1), p_bih=_or(b_ih, w_ih),
           p_h_prev=h_prev, s_hp=h_prev.stride(0), p_h0=h0, s_h0=h0.stride(0),
           p_c_prev=c_prev, s_cp=_rows_stride(c_prev, spec.has_c), p_c0=c0, s_c0=_rows_stride(c0, spec.has_c),
           p_w=w_hh, s_wr=w_hh.stride(0), s_wc=w_hh.stride(1), p_bhh=_or(b_hh, w_hh), p_h=h, s_h=h.stride(0), p_c=c,
           p_save=save_t, p_z=z, B=B, B_prev=B_prev, H=H, K=w_hh.shape[1], I=I, HAS_BIAS=b_hh is not None,
           SAVE=save, FUSE_INPUT=fuse_input, TWO_SOURCES=two_sources, RESET=reset, **spec.traits(),
           **cfg.launch_options(), **dispatch.dot_settings(w_hh.dtype, w_hh.device))


def _step_bwd(cfg, spec, dhp_next, w_hh, dy, carry_h, carry_c, save_t, c, c_prev, c0, h_prev, h0, dhp, dxp, z, z_next,
              *, B: int, B_next: int, B_prev: int, has_next: bool, two_sources: bool, reset: bool):
    """One launch of ``_step_bwd_kernel`` (``kernels/step.py``) with the configuration ``cfg``: dhp_next the next
    step's dHp [B_next, G*H] (``has_next``), dy [B, H], the carries [B, H] (updated in place), the step's saved
    activations, c_t, its state at t-1 as in ``_step_fwd``; outputs dhp (and, SPLIT_DX cells, dxp) [B, G*H]; z and
    z_next the reset flags of this step and the next (``reset``)."""
    H = w_hh.shape[0] // spec.gates
    launch("step_bwd", (triton.cdiv(B, cfg.BLOCK_B), triton.cdiv(H, cfg.BLOCK_H)),
           p_dhp_next=dhp_next, s_dn=dhp_next.stride(0) if has_next else 0,
           p_w=w_hh, s_wr=w_hh.stride(0), s_wc=w_hh.stride(1), p_dy=dy, s_dy=dy.stride(0),
           p_dh=carry_h, p_dc=carry_c, p_save=save_t, p_c=c,
           p_c_prev=c_prev, s_cp=_rows_stride(c_prev, spec.has_c), p_c0=c0, s_c0=_rows_stride(c0, spec.has_c),
           p_h_prev=h_prev, s_hp=h_prev.stride(0), p_h0=h0, s_h0=h0.stride(0),
           p_dhp=dhp, s_dhp=dhp.stride(0), p_dxp=dxp, s_dxp=dxp.stride(0), p_z=z, p_z_next=z_next, B=B, B_next=B_next,
           B_prev=B_prev, H=H, HAS_NEXT=has_next, TWO_SOURCES=two_sources, RESET=reset, **spec.traits(),
           **cfg.launch_options(),
           **dispatch.dot_settings(w_hh.dtype, w_hh.device))


def _persistent_fwd(plan, spec, sched, xp, w_ih, b_ih, h0, c0, w_hh, b_hh, y, cs, saved, save, zero):
    """The forward of ``recurrence_fwd`` in one launch (``kernels/persistent.py``, whose parameters these are);
    ``xp`` is the input ([T, B, I], fused into the kernel) or its projection ([T, B, G*H])."""
    H, P, I = w_hh.shape[0] // spec.gates, w_hh.shape[1], w_ih.shape[1]  # noqa: E741
    sizes, offsets = sched.tables(y.device)
    s_xt, s_x = sched.strides(xp)
    s_yt, s_y = sched.strides(y)
    args = dict(p_x=xp, s_xt=s_xt, s_x=s_x, p_wih=w_ih, s_wir=w_ih.stride(0), s_wic=w_ih.stride(1),
                p_bih=_or(b_ih, w_ih), p_h0=h0, s_h0=h0.stride(0), p_c0=_or(c0, cs),
                s_c0=_rows_stride(c0, spec.has_c), p_w=w_hh, s_wr=w_hh.stride(0), s_wc=w_hh.stride(1),
                p_bhh=_or(b_hh, w_hh), p_y=y, s_yt=s_yt, s_y=s_y, p_cs=cs, p_save=saved,
                s_svt=sched.strides(saved)[0] if save else 0, p_sizes=sizes, p_offsets=offsets,
                **_resets(sched, zero, y), T=sched.T, B=sched.B, H=H, K=P, I=I, HAS_BIAS=b_hh is not None, SAVE=save,
                FUSE_INPUT=plan.fuse_input, PACKED=sched.packed, REVERSE=sched.reverse, **spec.traits(),
                **dispatch.dot_settings(y.dtype, y.device))
    _persistent("fwd", plan, args, "KP", P, lambda: dispatch.config(
        "tiled_fwd", spec.name, H, P, sched.B, y.dtype, y.device, I if plan.fuse_input else 0))


def _persistent_bwd(plan, spec, sched, dy, w_hh, carry_h, carry_c, saved, cs, c0, y, h0, dhp, dxp, zero):
    """The per-step part of ``recurrence_bwd`` in one launch (gate gradients dHp/dXp; the carries are updated
    in place to the start of the sequence)."""
    H = w_hh.shape[0] // spec.gates
    sizes, offsets = sched.tables(y.device)
    (s_dyt, s_dy), (s_yt, s_y) = sched.strides(dy), sched.strides(y)
    (s_dht, s_dhp), (s_dxt, s_dxp) = sched.strides(dhp), sched.strides(dxp)
    args = dict(p_dy=dy, s_dyt=s_dyt, s_dy=s_dy, p_w=w_hh, s_wr=w_hh.stride(0), s_wc=w_hh.stride(1), p_dh=carry_h,
                p_dc=carry_c, p_save=saved, s_svt=sched.strides(saved)[0], p_cs=cs, p_c0=_or(c0, carry_c),
                s_c0=_rows_stride(c0, spec.has_c), p_y=y, s_yt=s_yt, s_y=s_y, p_h0=h0, s_h0=h0.stride(0),
                p_dhp=dhp, s_dht=s_dht, s_dhp=s_dhp, p_dxp=dxp, s_dxt=s_dxt, s_dxp=s_dxp, p_sizes=sizes,
                p_offsets=offsets, **_resets(sched, zero, y), T=sched.T, B=sched.B, H=H, PACKED=sched.packed,
                REVERSE=sched.reverse,
                **spec.traits(), **dispatch.dot_settings(y.dtype, y.device))
    _persistent("bwd", plan, args, "HP", H, lambda: dispatch.config(
        "tiled_bwd", spec.name, H, spec.gates * H, sched.B, y.dtype, y.device))


def _resets(sched, zero, placeholder) -> dict:
    """The persistent kernels' reset arguments: the flags ``zero`` ([T, B] or packed [N]) addressed like a sequence
    tensor, or none (a placeholder, never read)."""
    if zero is None:
        return dict(p_z=placeholder, s_zt=0, s_z=0, RESET=False)
    s_zt, s_z = sched.strides(zero[..., None])
    return dict(p_z=zero, s_zt=s_zt, s_z=s_z, RESET=True)


def _persistent(direction: str, plan, args: dict, width_name: str, width: int, tiled_config) -> None:
    """One launch of a persistent kernel (``direction`` "fwd" or "bwd"; ``args``: its arguments but the barrier
    counters, RESIDENT, the reduction width and the configuration's).

    Cooperative (``plan.coop``: variant "resident" or "streamed" of ``_coop_*_kernel``, with fresh barrier counters,
    on ``dispatch.coop_launch_grid``) when planned, else batch-tiled (with the KernelConfig ``tiled_config()``
    returns, looked up only when it runs). The resident variant's reduction width ``width_name`` (KP forward, HP
    backward) is ``dispatch.held_width(width, BLOCK_B)`` (blocks of ``held_rows`` rows); the streamed one
    reduces in BLOCK_K blocks and gets None (one compilation for every H). A cooperative launch the GPU refuses
    (``dispatch.cooperative_refused``) falls back to the batch-tiled kernel, with a warning."""
    B, H, device = args["B"], args["H"], args["p_y"].device
    if plan.kernel == "cooperative":
        coop = plan.coop
        resident = coop.variant == "resident"
        grid = dispatch.coop_launch_grid(coop, device, H, B)
        bar = torch.zeros(grid[1], dtype=torch.int32, device=device)  # one counter per batch tile
        reduction = dispatch.held_width(width, coop.BLOCK_B) if resident else None
        try:
            launch(f"{coop.variant}_{direction}", grid, **args, p_bar=bar, RESIDENT=resident,
                   **{width_name: reduction}, **coop.launch_options())
            return
        except Exception as e:  # noqa: BLE001 - only a refusal falls back (cooperative_refused); the rest raises
            if not dispatch.cooperative_refused(e):
                raise
            warnings.warn(f"fusedrnn: the cooperative kernel does not fit this GPU ({e}); running the batch-tiled "
                          f"persistent kernel instead.", RuntimeWarning, stacklevel=4)
    cfg = tiled_config()
    launch(f"tiled_{direction}", (1, triton.cdiv(B, cfg.BLOCK_B)), **args, **cfg.launch_options())


@_on_tensors_device
def cell_fwd(cell: str, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, w_ih: torch.Tensor,
             w_hh: torch.Tensor, b_ih: torch.Tensor | None, b_hh: torch.Tensor | None, save: bool):
    """One step of a cell in ONE launch: the input projection is fused into the step kernel.

    Args: x [B, I], h [B, H], c [B, H] (LSTM, else None), weights as in ``recurrence_fwd``.
    Returns (h' [B, H], c' [B, H] | [0], saved [B, NS*H] | [0]); c' is stored in the tensor dtype.
    """
    spec = CELLS[cell]
    B, H = h.shape
    dtype, device, acc = x.dtype, x.device, acc_dtype(x.dtype)
    x, h = _unit_last_stride(x), h.contiguous()
    c = c.contiguous() if spec.has_c else None
    h_new = torch.empty((B, H), dtype=dtype, device=device)
    c_new = torch.empty((B, H) if spec.has_c else (0,), dtype=dtype, device=device)
    saved = torch.empty((B, spec.saved * H) if save else (0,), dtype=acc, device=device)
    if B > 0 and H > 0:
        cfg = dispatch.config("step_fwd", cell, H, H, B, dtype, device, x.shape[-1])
        c_prev = c if spec.has_c else c_new
        _step_fwd(cfg, spec, x, w_ih, b_ih, h, h, c_prev, c_prev, w_hh, b_hh, h_new, c_new, saved, saved, B=B,
                  B_prev=B, I=x.shape[-1], save=save, fuse_input=True, two_sources=False, reset=False)
    elif B > 0 and spec.has_c:
        c_new.zero_()
    if H == 0 and B > 0:
        h_new.zero_()
    return h_new, c_new, saved


@_on_tensors_device
def cell_bwd(cell: str, dh_new: torch.Tensor, dc_new: torch.Tensor | None, x: torch.Tensor, h: torch.Tensor,
             c: torch.Tensor | None, w_ih: torch.Tensor, w_hh: torch.Tensor, has_bias: bool, c_new: torch.Tensor,
             saved: torch.Tensor):
    """Backward of ``cell_fwd`` (run with ``save=True``). Returns (dx, dh, dc | [0], dw_ih, dw_hh,
    db_ih | [0], db_hh | [0]): one step kernel for the gate gradients, then GEMMs."""
    spec = CELLS[cell]
    B, H = h.shape
    GH = spec.gates * H
    dtype, device, acc = x.dtype, x.device, acc_dtype(x.dtype)
    h = h.contiguous()
    c = c.contiguous() if spec.has_c else None
    dh_new = _unit_last_stride(dh_new)
    carry_h = torch.zeros((B, H), dtype=acc, device=device)
    carry_c = dc_new.to(acc, copy=True).contiguous() if spec.has_c else torch.empty(0, dtype=acc, device=device)
    dhp = torch.empty((B, GH), dtype=dtype, device=device)
    dxp = torch.empty((B, GH), dtype=dtype, device=device) if spec.split_dx else dhp
    if B > 0 and H > 0:
        cfg = dispatch.config("step_bwd", cell, H, GH, B, dtype, device)
        c_prev = c if spec.has_c else carry_c
        _step_bwd(cfg, spec, dhp, w_hh, dh_new, carry_h, carry_c, saved, c_new if spec.has_c else carry_c, c_prev,
                  c_prev, h, h, dhp, dxp, dhp, dhp, B=B, B_next=0, B_prev=B, has_next=False, two_sources=False,
                  reset=False)
    else:
        dhp.zero_()
        dxp.zero_()

    def none():  # distinct placeholders: custom-op outputs may not alias each other
        return torch.empty(0, dtype=dtype, device=device)

    dh = (carry_h + (dhp @ w_hh).to(acc)).to(dtype)
    dc = carry_c.to(dtype) if spec.has_c else none()
    return (dxp @ w_ih, dh, dc, dxp.t() @ x, dhp.t() @ h, dxp.sum(0) if has_bias else none(),
            dhp.sum(0) if has_bias else none())
