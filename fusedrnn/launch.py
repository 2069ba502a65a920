"""Launchers of the step kernels: allocate, build the grid, walk the sequence, launch.

Legend: T time, B batch, N packed rows, I input size, H hidden, P width of h (proj_size, else H), G gates,
NS saved activations per hidden unit. All tensors belong to ONE layer and ONE direction. A sequence is dense
(``[T, B, .]``, any strides with a unit last stride) or packed (``[N, .]``, rows of step t at offsets[t], as in
a PackedSequence). Loops index "steps" in processing order; ``Schedule.time(step)`` is the timestep.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections import Counter
from dataclasses import dataclass

import torch
import triton

from fusedrnn import dispatch, settings
from fusedrnn.autotune import step_config
from fusedrnn.autotune.spaces import coop_config, coop_grid, device_limits
from fusedrnn.kernels import (CELL_GRU, CELL_LSTM, CELL_RNN_RELU, CELL_RNN_TANH, _coop_bwd_kernel, _coop_fwd_kernel,
                              _step_bwd_kernel, _step_fwd_kernel, _tiled_bwd_kernel, _tiled_fwd_kernel)

#: Kernel launches by kernel name since the process started. Tests read it to prove that the Triton path
#: ran (a silent fallback to torch would leave it unchanged).
launch_counts: Counter = Counter()


@dataclass(frozen=True)
class CellSpec:
    name: str
    code: int  # CELL constexpr of the kernels
    gates: int  # G
    saved: int  # NS


CELLS = {
    "lstm": CellSpec("lstm", int(CELL_LSTM.value), 4, 4),
    "gru": CellSpec("gru", int(CELL_GRU.value), 3, 4),
    "rnn_tanh": CellSpec("rnn_tanh", int(CELL_RNN_TANH.value), 1, 1),
    "rnn_relu": CellSpec("rnn_relu", int(CELL_RNN_RELU.value), 1, 1),
}

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulator and cell-state dtype: fp64 for fp64 tensors, fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _dot_settings(dtype: torch.dtype, device: torch.device) -> dict:
    if device.type != "cuda":
        # Under the interpreter tl.dot on bf16 is wrong (triton issue 11584): feed it accumulator-dtype
        # operands there, and only there, so compiled kernels keep their fp16/bf16 tensor-core dots.
        return {"UPCAST_DOT": True, "DOT_PRECISION": "ieee"}
    if dtype == torch.float32:
        precision = "tf32" if settings.tf32() else "ieee"
    elif dtype == torch.float64:
        precision = "ieee"
    else:
        precision = "tf32"  # ignored for fp16/bf16 operands; the compiler's default
    return {"UPCAST_DOT": False, "DOT_PRECISION": precision}


def _config(kernel: str, cell: str, H: int, K: int, B: int, dtype: torch.dtype, device: torch.device, I: int = 0):
    """Launch configuration of a step kernel (K: width of its recurrent matmul; I: input width when the input
    projection is fused into it, else 0): tuned cache, shipped table or heuristic (fusedrnn.autotune)."""
    return step_config(kernel, cell, dtype, device, H, K, B, I)


# ---- which kernel runs a sequence ------------------------------------------------------------------------------

#: At and above this length the default is a persistent kernel: launches per layer and direction stop growing
#: with T (the batch-tiled kernel where the cooperative one cannot run).
PERSISTENT_MIN_T = 256
#: From this length on a GPU the cooperative kernel is the default wherever it can run.
COOP_MIN_T = 32
def coop_plan(cell: str, dtype: torch.dtype, device: torch.device, H: int, B: int, limits=None):
    """(StepConfig, None) if the cooperative kernel can run this layer with all programs resident at once, else
    (None, reason): ``autotune.spaces.coop_config`` for the device's limits (``limits`` overrides them, for
    tools that plan for a GPU they do not have). One program per SM is resident whenever it fits an SM at all
    and no other work holds SMs; the launch is cooperative, so where not all programs can start at once the
    driver refuses it and the launcher falls back: the grid barrier cannot deadlock. Under MPS with a
    thread percentage below 100 the number of usable SMs is unknown: refused."""
    if device.type == "cuda":
        mps = os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "").strip()
        if mps and mps != "100":
            return None, f"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={mps}: the SMs available to this process are unknown"
        limits = limits or device_limits(device)
    return coop_config(CELLS[cell].gates, dtype.itemsize, H, B, limits if device.type == "cuda" else None)


def choose_kernel(cell: str, dtype: torch.dtype, device: torch.device, T: int, B: int, H: int, proj: bool,
                  limits=None) -> str:
    """The kernel that runs a layer's sequence: "step", "tiled" or "cooperative" (``_choose``)."""
    return _choose(cell, dtype, device, T, B, H, proj, limits)[0]


def _choose(cell, dtype, device, T, B, H, proj, limits=None):
    """(kernel, cooperative plan or None) of a layer's sequence.

    A forced choice (``fusedrnn.use_kernel``) wins; persistent kernels have no projection (an error when forced);
    a forced cooperative kernel that ``coop_plan`` refuses runs batch-tiled, with a warning.
    ``auto`` (provisional, to be tuned by the benchmarks on GPUs):
      - projections (proj_size) and single steps (T = 1): step;
      - GPU: cooperative when T >= COOP_MIN_T and ``coop_plan`` accepts the shape; else batch-tiled when
        T >= PERSISTENT_MIN_T; else step;
      - interpreter: batch-tiled when T >= PERSISTENT_MIN_T, else step.
    """
    forced = dispatch.get_kernel()
    if forced != "auto":
        if forced != "step" and proj:
            raise ValueError(f"fusedrnn: the {forced!r} kernel has no LSTM projection (proj_size > 0); use the "
                             f"'step' or 'auto' kernel for this layer")
        if forced != "cooperative":
            return forced, None
        plan, why = coop_plan(cell, dtype, device, H, B, limits)
        if plan is None:
            warnings.warn(f"fusedrnn: the cooperative kernel cannot run this layer ({why}); running the "
                          f"batch-tiled persistent kernel instead.", RuntimeWarning, stacklevel=4)
            return "tiled", None
        return "cooperative", plan
    if proj or T <= 1:
        return "step", None
    if device.type == "cuda" and T >= COOP_MIN_T:
        plan = coop_plan(cell, dtype, device, H, B, limits)[0]
        if plan is not None:
            return "cooperative", plan
    return ("tiled" if T >= PERSISTENT_MIN_T else "step"), None


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


def _capturing(device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


class Schedule:
    """Time layout of one direction: which rows run at each step, and where they lie.

    Dense (``batch_sizes`` None): T steps of B rows, tensors ``[T, B, w]``. Packed: ``batch_sizes[t]`` rows at
    step t (non-increasing, as in a PackedSequence), tensors ``[N, w]`` with the rows of step t at
    ``offsets[t]``. Row b of every step is sequence b. Reverse walks t = T-1 .. 0, so each packed sequence
    starts at its own last element.
    """

    def __init__(self, T: int, B: int, batch_sizes: list[int] | None, reverse: bool):
        self.T, self.B, self.reverse = T, B, reverse
        self.packed = batch_sizes is not None
        self.sizes = list(batch_sizes) if self.packed else [B] * T
        self.offsets = [0] * T
        for t in range(1, T):
            self.offsets[t] = self.offsets[t - 1] + self.sizes[t - 1]

    def time(self, step: int) -> int:
        return self.T - 1 - step if self.reverse else step

    def batch(self, step: int) -> int:
        """Rows that run at ``step`` (0 outside the sequence)."""
        return self.sizes[self.time(step)] if 0 <= step < self.T else 0

    def rows(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """[rows, w] view of the rows of ``x`` (dense [T, B, w] or packed [N, w]) at ``step``."""
        t = self.time(step)
        return x[self.offsets[t]:self.offsets[t] + self.sizes[t]] if self.packed else x[t]

    def alloc(self, width: int, dtype, device) -> torch.Tensor:
        shape = (self.offsets[-1] + self.sizes[-1], width) if self.packed else (self.T, self.B, width)
        return torch.empty(shape, dtype=dtype, device=device)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.packed else x.reshape(-1, x.shape[-1])

    def strides(self, x: torch.Tensor) -> tuple:
        """(time stride, row stride) of a sequence tensor as the persistent kernels address it: a dense step
        t starts at t * time stride, a packed one at offsets[t] * row stride (time stride 0)."""
        return (0, x.stride(0)) if self.packed else (x.stride(0), x.stride(1))

    def _table(self, values: list, device) -> torch.Tensor:
        """``values`` (the packed layout, host lists) as an int64 tensor on ``device``: the only host-to-device copy
        of a launch, made for packed input only. It cannot be captured in a CUDA graph (a graph would replay the
        copy from a host buffer freed after the call), so under capture it is refused with a clear error; dense
        input copies nothing from the host and never synchronizes, and captures."""
        if _capturing(device):
            raise RuntimeError("fusedrnn: packed input (a PackedSequence, or batch_sizes) cannot be captured in a "
                               "CUDA graph: its step layout is copied from the host at every call. Capture padded "
                               "(dense) input, or run packed input outside the graph.")
        return torch.tensor(values, dtype=torch.int64).to(device)

    def tables(self, device) -> tuple:
        """(sizes, offsets) as int64 device tensors for the persistent kernels (packed; else placeholders)."""
        if not self.packed:
            empty = torch.empty(1, dtype=torch.int64, device=device)
            return empty, empty
        both = self._table([self.sizes, self.offsets], device)
        return both[0], both[1]

    def _index(self, device):
        """Per sequence b: its last and first step (processing order); per row: the row holding h_{t-1}
        (an index into ``cat([flat(y), h0])``)."""
        sizes = self._table(self.sizes, device)
        lengths = (sizes[None, :] > torch.arange(self.B, device=device)[:, None]).sum(1)
        if self.reverse:
            last_step = torch.full_like(lengths, self.T - 1)
            first_step = self.T - lengths
        else:
            last_step, first_step = lengths - 1, torch.zeros_like(lengths)
        return last_step, first_step

    def per_sequence(self, x: torch.Tensor, which: str) -> torch.Tensor:
        """[B, w]: for every sequence, its row of ``x`` at its last (``which="last"``) or first step."""
        if not self.packed:
            return x[self.time(self.T - 1 if which == "last" else 0)]
        last_step, first_step = self._index(x.device)
        step = last_step if which == "last" else first_step
        t = self.T - 1 - step if self.reverse else step
        offsets = self._table(self.offsets, x.device)
        return x[offsets[t] + torch.arange(self.B, device=x.device)]

    def last_step(self, device) -> torch.Tensor:
        """[B] the step (processing order) at which each sequence ends."""
        if not self.packed:  # nothing of size T
            return torch.full((self.B, ), self.T - 1, dtype=torch.int64, device=device)
        return self._index(device)[0]

    def previous_rows(self, y: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """[N, P] (packed): h_{t-1} of every row, from the previous step's output or, for a sequence's first
        step, from h0."""
        device = y.device
        sizes = self._table(self.sizes, device)
        offsets = self._table(self.offsets, device)
        t = torch.repeat_interleave(torch.arange(self.T, device=device), sizes)
        b = torch.arange(t.numel(), device=device) - offsets[t]
        tp = t + 1 if self.reverse else t - 1
        valid = (tp >= 0) & (tp < self.T)
        valid &= b < sizes[tp.clamp(0, self.T - 1)]
        index = torch.where(valid, offsets[tp.clamp(0, self.T - 1)] + b, y.shape[0] + b)
        return torch.cat([y, h0])[index]


def _sources(sched: Schedule, step: int, buf: torch.Tensor, init: torch.Tensor):
    """(tensor holding rows < split, tensor holding rows >= split, split, two_sources) for the state that
    ``step`` reads: rows that ran the previous step read ``buf`` (their last output), others ``init``."""
    b_prev, b_now = sched.batch(step - 1), sched.batch(step)
    if b_prev == 0:
        return init, init, 0, False
    if b_prev >= b_now:
        return buf, buf, b_now, False
    return buf, init, b_prev, True


@_on_tensors_device
def recurrence_fwd(cell: str, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None, w_ih: torch.Tensor,
                   w_hh: torch.Tensor, b_ih: torch.Tensor | None, b_hh: torch.Tensor | None,
                   w_hr: torch.Tensor | None, batch_sizes: list[int] | None, reverse: bool, save: bool):
    """Run one layer and direction over the whole sequence.

    Args:
        x: [T, B, I] inputs (dense), or [N, I] packed rows with ``batch_sizes`` (length T).
        h0: [B, P]; c0: [B, H] (LSTM only, else None).
        w_ih [G*H, I], w_hh [G*H, P], b_ih / b_hh [G*H] or None; w_hr [P, H] (LSTM projection) or None.
        reverse: walk the sequence from its end. save: keep what the backward needs.

    Returns (y, h_n [B, P], c_n [B, H] | [0], saved, cs, hr):
        y      [T, B, P] or [N, P];
        saved  [T, B, NS*H] / [N, NS*H] activations by timestep (accumulator dtype), with ``save``;
        cs     [T+1, B, H] cell states by step, cs[s+1] after step s (accumulator dtype), LSTM with ``save``;
        hr     h before the projection, like y but [., H], with a projection and ``save``.
    The input projection is one GEMM over all steps; a single step fuses it into the kernel (one launch).
    """
    spec = CELLS[cell]
    T = len(batch_sizes) if batch_sizes is not None else x.shape[0]
    B = h0.shape[0]
    H = w_hh.shape[0] // spec.gates
    P = w_hh.shape[1]
    dtype, device, acc = x.dtype, x.device, acc_dtype(x.dtype)
    is_lstm = spec.code == CELLS["lstm"].code
    sched = Schedule(T, B, batch_sizes, reverse)

    def empty():  # distinct placeholders: custom-op outputs may not alias each other
        return torch.empty(0, dtype=acc, device=device)

    kernel, plan = _choose(cell, dtype, device, T, B, H, w_hr is not None) if B > 0 and H > 0 else ("step", None)
    # Single steps fuse the input projection (one launch); so do persistent kernels without grad, so that
    # inference allocates nothing of size T beyond its input and output (no [T, B, G*H] pre-activations).
    fuse_input = T == 1 or (kernel != "step" and not save)
    x = _unit_last_stride(x)
    xp = x if fuse_input else torch.nn.functional.linear(x, w_ih, b_ih)
    h0 = h0.contiguous()
    c0 = c0.contiguous() if is_lstm else None
    y = sched.alloc(P, dtype, device)
    hr = None
    if w_hr is not None:
        hr = sched.alloc(H, dtype, device) if save else torch.empty((2, B, H), dtype=dtype, device=device)
    cs = torch.empty((T + 1 if save else 2, B, H), dtype=acc, device=device) if is_lstm else empty()
    saved = sched.alloc(spec.saved * H, acc, device) if save else empty()

    if B > 0 and H > 0 and kernel != "step":
        _persistent_fwd(kernel, plan, spec, sched, xp, fuse_input, w_ih, b_ih, h0, c0, w_hh, b_hh, y, cs, saved,
                        save)
    elif B > 0 and H > 0:
        cfg = _config("step_fwd", cell, H, P, B, dtype, device, x.shape[-1] if fuse_input else 0)
        for step in range(T):
            rows = sched.batch(step)
            h_src, h_init, split, two = _sources(sched, step, sched.rows(y, step - 1) if step else h0, h0)
            if is_lstm:
                c_prev, c_out = (cs[step], cs[step + 1]) if save else (cs[step % 2], cs[(step + 1) % 2])
                c_src, c_init, _, _ = _sources(sched, step, c_prev, c0)
            else:
                c_src = c_init = c_out = cs
            x_t = sched.rows(xp, step)
            h_out = sched.rows(y, step) if hr is None else (sched.rows(hr, step) if save else hr[step % 2][:rows])
            _step_fwd_kernel[(triton.cdiv(rows, cfg.BLOCK_B), triton.cdiv(H, cfg.BLOCK_H))](
                x_t, x_t.stride(0),
                w_ih, w_ih.stride(0), w_ih.stride(1),
                b_ih if b_ih is not None else w_ih,
                h_src, h_src.stride(0), h_init, h_init.stride(0),
                c_src, c_src.stride(0) if is_lstm else 0, c_init, c_init.stride(0) if is_lstm else 0,
                w_hh, w_hh.stride(0), w_hh.stride(1),
                b_hh if b_hh is not None else w_hh,
                h_out, h_out.stride(0),
                c_out,
                sched.rows(saved, step) if save else saved,
                rows, split, H, P, x.shape[-1],
                CELL=spec.code, G=spec.gates, NS=spec.saved, HAS_BIAS=b_hh is not None, SAVE=save,
                FUSE_INPUT=fuse_input, TWO_SOURCES=two,
                **cfg.launch_options(), **_dot_settings(dtype, device),
            )
            launch_counts["step_fwd"] += 1
            if hr is not None:
                torch.mm(h_out, w_hr.t(), out=sched.rows(y, step))
    elif H == 0 and B > 0:
        y.zero_()  # an empty hidden state: outputs have no features, projections give zeros

    h_n = sched.per_sequence(y, "last").clone() if B > 0 else h0.new_empty((0, P))
    if is_lstm:
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
                   y: torch.Tensor, saved: torch.Tensor, cs: torch.Tensor, hr: torch.Tensor):
    """Backward through time of ``recurrence_fwd`` (run with ``save=True``); arguments as there, plus the
    gradients dy (like y), dh_n [B, P], dc_n [B, H] (LSTM, else None).

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
    is_lstm = spec.code == CELLS["lstm"].code
    split_dx = spec.code == CELLS["gru"].code
    proj = w_hr is not None
    sched = Schedule(T, B, batch_sizes, reverse)

    def none():
        return torch.empty(0, dtype=dtype, device=device)

    dy = _unit_last_stride(dy)
    h0 = h0.contiguous()
    c0 = c0.contiguous() if is_lstm else None
    dhp = sched.alloc(GH, dtype, device)
    dxp = sched.alloc(GH, dtype, device) if split_dx else dhp
    carry_h = torch.zeros((B, H), dtype=acc, device=device) if proj else dh_n.to(acc, copy=True).contiguous()
    carry_c = dc_n.to(acc, copy=True).contiguous() if is_lstm else torch.empty(0, dtype=acc, device=device)
    if proj:
        carry_p = dh_n.to(acc, copy=True)  # dL/dh_n through the projection, consumed at each row's last step
        dyp = sched.alloc(P, dtype, device)  # dL/d(projected h_t), for dW_hr
        w_hr_acc = w_hr.to(acc)

    kernel, plan = _choose(cell, dtype, device, T, B, H, proj) if B > 0 and H > 0 else ("step", None)
    if B > 0 and H > 0 and kernel != "step":
        _persistent_bwd(kernel, plan, spec, sched, dy, w_hh, carry_h, carry_c, saved, cs, c0, y, h0, dhp, dxp)
    elif B > 0 and H > 0:
        cfg = _config("step_bwd", cell, H, GH, B, dtype, device)
        for step in reversed(range(T)):
            rows, rows_next = sched.batch(step), sched.batch(step + 1)
            if proj:
                d = sched.rows(dy, step).to(acc) + carry_p[:rows]
                carry_p[:rows] = 0
                if rows_next:  # rows of the next step that continue a sequence of this one
                    n = min(rows, rows_next)
                    d[:n] += (sched.rows(dhp, step + 1)[:n] @ w_hh).to(acc)
                sched.rows(dyp, step).copy_(d)
                dy_t, has_next = d @ w_hr_acc, False
            else:
                dy_t, has_next = sched.rows(dy, step), rows_next > 0
            dhp_next = sched.rows(dhp, step + 1) if has_next else dhp
            h_src, h_init, split, two = _sources(sched, step, sched.rows(y, step - 1) if step else h0, h0)
            if is_lstm:
                c_src, c_init, _, _ = _sources(sched, step, cs[step], c0)
                c_t = cs[step + 1]
            else:
                c_src = c_init = c_t = carry_c
            dhp_t, dxp_t = sched.rows(dhp, step), sched.rows(dxp, step)
            _step_bwd_kernel[(triton.cdiv(rows, cfg.BLOCK_B), triton.cdiv(H, cfg.BLOCK_H))](
                dhp_next, dhp_next.stride(0) if has_next else 0,
                w_hh, w_hh.stride(0), w_hh.stride(1),
                dy_t, dy_t.stride(0),
                carry_h, carry_c,
                sched.rows(saved, step),
                c_t, c_src, c_src.stride(0) if is_lstm else 0, c_init, c_init.stride(0) if is_lstm else 0,
                h_src, h_src.stride(0), h_init, h_init.stride(0),
                dhp_t, dhp_t.stride(0),
                dxp_t, dxp_t.stride(0),
                rows, rows_next, split, H, P,
                CELL=spec.code, G=spec.gates, NS=spec.saved, HAS_NEXT=has_next, SPLIT_DX=split_dx,
                TWO_SOURCES=two, **cfg.launch_options(), **_dot_settings(dtype, device),
            )
            launch_counts["step_bwd"] += 1
    elif B > 0:  # H == 0: no gates, no gradient through the recurrence
        dhp.zero_()
        dxp.zero_()
        if proj:
            dyp.zero_()

    # dh0 = pointwise carry + dHp of each sequence's first step @ W_hh; with a projection the carry was
    # consumed (zeroed) at each sequence's last step.
    carry = carry_p if proj else carry_h
    dh0 = (carry + (sched.per_sequence(dhp, "first") @ w_hh).to(acc)).to(dtype) if B > 0 else carry.to(dtype)
    dc0 = carry_c.to(dtype) if is_lstm else none()
    # dW_hh = sum over rows of dHp^T h_{t-1}.
    if sched.packed:
        dw_hh = sched.flat(dhp).t() @ sched.previous_rows(y, h0)
    else:
        rest_g, rest_h = (dhp[:-1], y[1:]) if reverse else (dhp[1:], y[:-1])
        first = sched.time(0)
        dw_hh = torch.addmm(dhp[first].t() @ h0, rest_g.reshape(-1, GH).t(), rest_h.reshape(-1, P))
    flat_dxp = sched.flat(dxp)
    dx = dxp @ w_ih
    dw_ih = flat_dxp.t() @ sched.flat(x)
    db_ih = flat_dxp.sum(0) if has_bias else none()
    db_hh = sched.flat(dhp).sum(0) if has_bias else none()
    dw_hr = sched.flat(dyp).t() @ sched.flat(hr) if proj else none()
    return dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr


def _launch_persistent(kernel, plan, fns, names, tiled_config, B, H, device, args, n_sizes, coop_kwargs, consts):
    """One launch of a persistent kernel: cooperative (``plan``: resident ``fns[1]`` or streamed ``fns[0]`` on a
    cooperative grid, with fresh barrier counters) when chosen and it fits the GPU, else batch-tiled (``fns[0]``
    with the StepConfig ``tiled_config()`` returns, looked up only when it runs). ``args``: the kernel's arguments
    up to the barrier counters, which go before the last ``n_sizes`` of them. A cooperative launch that cannot be
    resident falls back, with a warning: a program that does not fit an SM (OutOfResources, raised before the
    launch), or a grid the driver will not start all at once (the cooperative launch attribute: "too many blocks
    in cooperative launch"; nothing ran)."""
    tiled_fn, coop_fn = fns
    if kernel == "cooperative":
        sms = device_limits(device).sms if device.type == "cuda" else 1
        grid = coop_grid(plan, H, B, sms)
        bar = torch.zeros(grid[1], dtype=torch.int32, device=device)
        streamed = plan.variant == "streamed"
        try:
            (tiled_fn if streamed else coop_fn)[grid](
                *args[:-n_sizes], bar, *args[-n_sizes:], **plan.launch_options(),
                **(dict(COOP=True) if streamed else coop_kwargs), **consts)
            launch_counts[names[2] if streamed else names[1]] += 1
            return
        except (triton.runtime.errors.OutOfResources, RuntimeError) as e:
            if not isinstance(e, triton.runtime.errors.OutOfResources) and "cooperative launch" not in str(e):
                raise
            warnings.warn(f"fusedrnn: the cooperative kernel does not fit this GPU ({e}); running the batch-tiled "
                          f"persistent kernel instead.", RuntimeWarning, stacklevel=4)
    unused_bar = args[-n_sizes - 1]  # any tensor: the batch-tiled kernel has no barrier
    tiled_cfg = tiled_config()
    tiled_fn[(1, triton.cdiv(B, tiled_cfg.BLOCK_B))](
        *args[:-n_sizes], unused_bar, *args[-n_sizes:], **tiled_cfg.launch_options(), COOP=False, **consts)
    launch_counts[names[0]] += 1


def _persistent_fwd(kernel, plan, spec, sched, xp, fuse_input, w_ih, b_ih, h0, c0, w_hh, b_hh, y, cs, saved, save):
    """The forward of ``recurrence_fwd`` in one launch: batch-tiled or cooperative (``kernels/persistent.py``);
    ``xp`` is the input ([T, B, I], FUSE_INPUT) or its projection ([T, B, G*H])."""
    T, B = sched.T, sched.B
    H, P, I = w_hh.shape[0] // spec.gates, w_hh.shape[1], w_ih.shape[1]
    dtype, device = y.dtype, y.device
    is_lstm = spec.code == CELLS["lstm"].code
    sizes, offsets = sched.tables(device)
    s_svt = sched.strides(saved)[0] if save else 0
    args = (xp, *sched.strides(xp), w_ih, w_ih.stride(0), w_ih.stride(1), b_ih if b_ih is not None else w_ih,
            h0, h0.stride(0), c0 if is_lstm else cs, c0.stride(0) if is_lstm else 0,
            w_hh, w_hh.stride(0), w_hh.stride(1), b_hh if b_hh is not None else w_hh,
            y, *sched.strides(y), cs, saved, s_svt, sizes, offsets, T, B, H, P, I)
    consts = dict(CELL=spec.code, G=spec.gates, NS=spec.saved, HAS_BIAS=b_hh is not None, SAVE=save,
                  FUSE_INPUT=fuse_input, PACKED=sched.packed, REVERSE=sched.reverse, **_dot_settings(dtype, device))
    _launch_persistent(kernel, plan, (_tiled_fwd_kernel, _coop_fwd_kernel), ("tiled_fwd", "coop_fwd", "streamed_fwd"),
                       lambda: _config("tiled_fwd", spec.name, H, P, B, dtype, device, I if fuse_input else 0),
                       B, H, device, args, 5, dict(KP=triton.next_power_of_2(max(P, 16))), consts)


def _persistent_bwd(kernel, plan, spec, sched, dy, w_hh, carry_h, carry_c, saved, cs, c0, y, h0, dhp, dxp):
    """The per-step part of ``recurrence_bwd`` in one launch (gate gradients dHp/dXp; the carries are updated
    in place to the start of the sequence): batch-tiled or cooperative."""
    T, B = sched.T, sched.B
    H, P = w_hh.shape[0] // spec.gates, w_hh.shape[1]
    dtype, device = y.dtype, y.device
    is_lstm = spec.code == CELLS["lstm"].code
    split_dx = spec.code == CELLS["gru"].code
    sizes, offsets = sched.tables(device)
    args = (dy, *sched.strides(dy), w_hh, w_hh.stride(0), w_hh.stride(1), carry_h, carry_c,
            saved, sched.strides(saved)[0], cs, c0 if is_lstm else carry_c, c0.stride(0) if is_lstm else 0,
            y, *sched.strides(y), h0, h0.stride(0), dhp, *sched.strides(dhp), dxp, *sched.strides(dxp),
            sizes, offsets, T, B, H, P)
    consts = dict(CELL=spec.code, G=spec.gates, NS=spec.saved, SPLIT_DX=split_dx, PACKED=sched.packed,
                  REVERSE=sched.reverse, **_dot_settings(dtype, device))
    _launch_persistent(kernel, plan, (_tiled_bwd_kernel, _coop_bwd_kernel), ("tiled_bwd", "coop_bwd", "streamed_bwd"),
                       lambda: _config("tiled_bwd", spec.name, H, spec.gates * H, B, dtype, device),
                       B, H, device, args, 4, dict(HP=triton.next_power_of_2(max(H, 16))), consts)


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
    is_lstm = spec.code == CELLS["lstm"].code
    x, h = _unit_last_stride(x), h.contiguous()
    c = c.contiguous() if is_lstm else None
    h_new = torch.empty((B, H), dtype=dtype, device=device)
    c_new = torch.empty((B, H) if is_lstm else (0,), dtype=dtype, device=device)
    saved = torch.empty((B, spec.saved * H) if save else (0,), dtype=acc, device=device)
    if B > 0 and H > 0:
        cfg = _config("step_fwd", cell, H, H, B, dtype, device, x.shape[-1])
        _step_fwd_kernel[(triton.cdiv(B, cfg.BLOCK_B), triton.cdiv(H, cfg.BLOCK_H))](
            x, x.stride(0), w_ih, w_ih.stride(0), w_ih.stride(1), b_ih if b_ih is not None else w_ih,
            h, h.stride(0), h, h.stride(0),
            c if is_lstm else c_new, H, c if is_lstm else c_new, H,
            w_hh, w_hh.stride(0), w_hh.stride(1), b_hh if b_hh is not None else w_hh,
            h_new, H, c_new, saved,
            B, B, H, H, x.shape[-1],
            CELL=spec.code, G=spec.gates, NS=spec.saved, HAS_BIAS=b_hh is not None, SAVE=save,
            FUSE_INPUT=True, TWO_SOURCES=False,
            **cfg.launch_options(), **_dot_settings(dtype, device),
        )
        launch_counts["step_fwd"] += 1
    elif B > 0 and is_lstm:
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
    is_lstm = spec.code == CELLS["lstm"].code
    split_dx = spec.code == CELLS["gru"].code
    h = h.contiguous()
    c = c.contiguous() if is_lstm else None
    dh_new = _unit_last_stride(dh_new)
    carry_h = torch.zeros((B, H), dtype=acc, device=device)
    carry_c = dc_new.to(acc, copy=True).contiguous() if is_lstm else torch.empty(0, dtype=acc, device=device)
    dhp = torch.empty((B, GH), dtype=dtype, device=device)
    dxp = torch.empty((B, GH), dtype=dtype, device=device) if split_dx else dhp
    if B > 0 and H > 0:
        cfg = _config("step_bwd", cell, H, GH, B, dtype, device)
        _step_bwd_kernel[(triton.cdiv(B, cfg.BLOCK_B), triton.cdiv(H, cfg.BLOCK_H))](
            dhp, 0, w_hh, w_hh.stride(0), w_hh.stride(1), dh_new, dh_new.stride(0), carry_h, carry_c, saved,
            c_new if is_lstm else carry_c, c if is_lstm else carry_c, H, c if is_lstm else carry_c, H,
            h, H, h, H, dhp, GH, dxp, GH,
            B, 0, B, H, H,
            CELL=spec.code, G=spec.gates, NS=spec.saved, HAS_NEXT=False, SPLIT_DX=split_dx, TWO_SOURCES=False,
            **cfg.launch_options(), **_dot_settings(dtype, device),
        )
        launch_counts["step_bwd"] += 1
    else:
        dhp.zero_()
        dxp.zero_()

    def none():  # distinct placeholders: custom-op outputs may not alias each other
        return torch.empty(0, dtype=dtype, device=device)

    dh = (carry_h + (dhp @ w_hh).to(acc)).to(dtype)
    dc = carry_c.to(dtype) if is_lstm else none()
    return (dxp @ w_ih, dh, dc, dxp.t() @ x, dhp.t() @ h, dxp.sum(0) if has_bias else none(),
            dhp.sum(0) if has_bias else none())
