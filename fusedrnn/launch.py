"""Launchers of the step kernels: allocate, build the grid, walk the sequence, launch.

Legend: T time, B batch, H hidden, K width of h (= H), G gates, NS saved activations per hidden unit.
All tensors here are time-major and belong to ONE layer and ONE direction. The time loops index
"steps" in processing order; ``step -> t`` is the identity forward and ``T - 1 - step`` in reverse.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import triton

from fusedrnn.autotune import default_step_config
from fusedrnn.kernels import CELL_GRU, CELL_LSTM, CELL_RNN_RELU, CELL_RNN_TANH, _step_bwd_kernel, _step_fwd_kernel

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
        precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    elif dtype == torch.float64:
        precision = "ieee"
    else:
        precision = "tf32"  # ignored for fp16/bf16 operands; the compiler's default
    return {"UPCAST_DOT": False, "DOT_PRECISION": precision}


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _time(step: int, T: int, reverse: bool) -> int:
    return T - 1 - step if reverse else step


def recurrence_fwd(cell: str, xp: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None, w_hh: torch.Tensor,
                   b_hh: torch.Tensor | None, reverse: bool, save: bool):
    """Run one layer and direction over the whole sequence.

    Args:
        xp:   [T, B, G*H] input pre-activations ``x @ W_ih^T + b_ih``.
        h0:   [B, H] initial hidden state; c0: [B, H] initial cell state (LSTM only, else None).
        w_hh: [G*H, H]; b_hh: [G*H] or None.
        reverse: walk the sequence from t = T-1 down to 0.
        save: keep what the backward needs.

    Returns (y [T, B, H], h_n [B, H], c_n [B, H] or [0], saved [T, B, NS*H] or [0], cs [T+1, B, H] or [0]).
    ``saved`` and ``cs`` (the cell states by step, cs[0] = c0) are in the accumulator dtype and indexed by step.
    """
    spec = CELLS[cell]
    T, B, _ = xp.shape
    H, K = w_hh.shape[0] // spec.gates, w_hh.shape[1]
    dtype, device, acc = xp.dtype, xp.device, acc_dtype(xp.dtype)
    is_lstm = spec.code == CELLS["lstm"].code

    def empty():  # distinct placeholders: custom-op outputs may not alias each other
        return torch.empty(0, dtype=acc, device=device)

    xp = _last_dim_contiguous(xp)
    h0 = h0.contiguous()
    y = torch.empty((T, B, H), dtype=dtype, device=device)
    if is_lstm:
        cs = torch.empty((T + 1 if save else 2, B, H), dtype=acc, device=device)
        cs[0].copy_(c0)
    else:
        cs = empty()
    saved = torch.empty((T, B, spec.saved * H), dtype=acc, device=device) if save else empty()

    if B > 0:
        cfg = default_step_config(device.type, H, K, B, dtype.itemsize)
        grid = (triton.cdiv(B, cfg.BLOCK_B), triton.cdiv(H, cfg.BLOCK_H))
        for step in range(T):
            t = _time(step, T, reverse)
            h_prev = h0 if step == 0 else y[_time(step - 1, T, reverse)]
            if is_lstm:
                c_prev, c_out = (cs[step], cs[step + 1]) if save else (cs[step % 2], cs[(step + 1) % 2])
            else:
                c_prev = c_out = cs
            _step_fwd_kernel[grid](
                xp[t], xp.stride(1),
                h_prev, h_prev.stride(0),
                c_prev,
                w_hh, w_hh.stride(0), w_hh.stride(1),
                b_hh if b_hh is not None else w_hh,
                y[t], y.stride(1),
                c_out,
                saved[step] if save else saved,
                B, H, K,
                CELL=spec.code, G=spec.gates, NS=spec.saved, HAS_BIAS=b_hh is not None, SAVE=save,
                BLOCK_B=cfg.BLOCK_B, BLOCK_H=cfg.BLOCK_H, BLOCK_K=cfg.BLOCK_K,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                **_dot_settings(dtype, device),
            )
            launch_counts["step_fwd"] += 1

    h_n = y[_time(T - 1, T, reverse)].clone()
    c_n = cs[T if save else T % 2].to(dtype, copy=True) if is_lstm else torch.empty(0, dtype=dtype, device=device)
    return y, h_n, c_n, saved, cs if save else empty()


def recurrence_bwd(cell: str, dy: torch.Tensor, dh_n: torch.Tensor, dc_n: torch.Tensor | None, h0: torch.Tensor,
                   w_hh: torch.Tensor, y: torch.Tensor, saved: torch.Tensor, cs: torch.Tensor, reverse: bool,
                   has_bias: bool):
    """Backward through time of ``recurrence_fwd`` (called with ``save=True``).

    Args:
        dy: [T, B, H] gradient of y; dh_n, dc_n: [B, H] gradients of h_n, c_n (dc_n None unless LSTM).
        h0, w_hh, y, saved, cs: as given to / returned by the forward.

    Returns (dxp [T, B, G*H], dh0 [B, H], dc0 [B, H] or [0], dw_hh [G*H, H], db_hh [G*H] or [0]).
    The per-step kernel produces the gate gradients; dW_hh and db_hh are then GEMMs/reductions over all
    steps at once (no atomics, deterministic).
    """
    spec = CELLS[cell]
    T, B, H = y.shape
    K = w_hh.shape[1]
    GH = spec.gates * H
    dtype, device, acc = y.dtype, y.device, acc_dtype(y.dtype)
    is_lstm = spec.code == CELLS["lstm"].code
    split_dx = spec.code == CELLS["gru"].code

    dy = _last_dim_contiguous(dy)
    h0 = h0.contiguous()
    dhp = torch.empty((T, B, GH), dtype=dtype, device=device)
    dxp = torch.empty((T, B, GH), dtype=dtype, device=device) if split_dx else dhp
    carry_h = dh_n.to(acc, copy=True).contiguous()
    carry_c = dc_n.to(acc, copy=True).contiguous() if is_lstm else torch.empty(0, dtype=acc, device=device)

    if B > 0:
        cfg = default_step_config(device.type, H, GH, B, dtype.itemsize)
        grid = (triton.cdiv(B, cfg.BLOCK_B), triton.cdiv(H, cfg.BLOCK_H))
        for step in reversed(range(T)):
            t = _time(step, T, reverse)
            has_next = step < T - 1
            h_prev = h0 if step == 0 else y[_time(step - 1, T, reverse)]
            _step_bwd_kernel[grid](
                dhp[_time(step + 1, T, reverse)] if has_next else dhp[t], dhp.stride(1),
                w_hh, w_hh.stride(0), w_hh.stride(1),
                dy[t], dy.stride(1),
                carry_h, carry_c,
                saved[step],
                cs[step] if is_lstm else carry_c, cs[step + 1] if is_lstm else carry_c,
                h_prev, h_prev.stride(0),
                dhp[t], dhp.stride(1),
                dxp[t], dxp.stride(1),
                B, H, K,
                CELL=spec.code, G=spec.gates, NS=spec.saved, HAS_NEXT=has_next, SPLIT_DX=split_dx,
                BLOCK_B=cfg.BLOCK_B, BLOCK_H=cfg.BLOCK_H, BLOCK_K=cfg.BLOCK_K,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                **_dot_settings(dtype, device),
            )
            launch_counts["step_bwd"] += 1

    first = _time(0, T, reverse)
    dh0 = (carry_h + (dhp[first] @ w_hh).to(acc)).to(dtype)
    dc0 = carry_c.to(dtype) if is_lstm else torch.empty(0, dtype=dtype, device=device)
    # dW_hh = sum_t dHp_t^T h_{t-1}: the step that starts from h0 is added to one GEMM over the others.
    if reverse:
        rest_g, rest_h = dhp[:-1], y[1:]
    else:
        rest_g, rest_h = dhp[1:], y[:-1]
    dw_hh = torch.addmm(dhp[first].t() @ h0, rest_g.reshape(-1, GH).t(), rest_h.reshape(-1, K))
    db_hh = dhp.sum(dim=(0, 1)) if has_bias else torch.empty(0, dtype=dtype, device=device)
    return dxp, dh0, dc0, dw_hh, db_hh
