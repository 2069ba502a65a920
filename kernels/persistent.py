"""Persistent kernels: a layer's whole sequence (one direction) in ONE launch.

Legend as in ``step.py``: B batch (rows of the first processed step; packed batches shrink or, in reverse, grow),
H hidden, K width of h (= H: the persistent kernels have no projection), I input size, G gates, NS saved
activations per hidden unit, T steps. A sequence is dense (``[T, B, w]`` with a time stride and a row stride) or
packed (``PACKED``: ``[N, w]`` rows, step t's ``sizes[t]`` rows starting at row ``offsets[t]``, time stride 0).
``step`` counts in processing order; ``t`` is the timestep (``REVERSE``: t = T-1-step). Buffers indexed by
step rather than time: the cell states ``cs`` (``[T+1, B, H]``, cs[s+1] after step s, with SAVE; else two
slots used in turn). Everything else is indexed by time, as in the stepwise launcher, so a persistent forward
and a stepwise backward (or the reverse) interoperate.

Batch-tiled (``_tiled_fwd_kernel``, ``_tiled_bwd_kernel``), grid ``(1, cdiv(B, BLOCK_B))``
    A program owns BLOCK_B batch rows and the full hidden width and walks all T steps. Per step it computes
    the hidden units in chunks of BLOCK_H with the very tile code of the step kernels (``_fwd_tile`` /
    ``_bwd_tile``); h_t is written to the output (the next step's h_{t-1}), c and the backward's carries to
    per-row scratch that only this program touches. Between steps a ``tl.debug_barrier()`` (a CTA barrier)
    makes the step's writes visible to all of the program's threads. No program ever waits for another, so
    this runs under the interpreter too. W_hh is read through L2 every step (one copy shared by all
    programs); h and c of the program's rows stay in its L1/L2 working set (BLOCK_B x H elements).

Cooperative, streamed (the same two kernels with ``COOP``), grid ``(n_h, cdiv(B, BLOCK_B))``
    The batch-tiled kernels spread over n_h programs per batch tile: program i walks the hidden chunks i,
    i + n_h, ... (``autotune.spaces.coop_grid`` makes them even), re-reading their W_hh rows every step (a
    program's rows are the same at every step, so they stay in its SM's L1 where they fit, else L2), and the
    step ends at the grid barrier of its batch tile instead of the CTA barrier; h_{t-1} (and, backward,
    dHp_{t+1}), which other programs wrote, is read with ``.cg`` loads. For layers whose W_hh slice would not
    fit a resident program's registers.

Cooperative, resident (``_coop_fwd_kernel``, ``_coop_bwd_kernel``), grid ``(cdiv(H, BLOCK_H), cdiv(B, BLOCK_B))``
    A program owns a slice of BLOCK_H hidden units (all G gates) for BLOCK_B rows and loads its slice of W_hh
    ONCE, before the time loop: ``[KP, BLOCK_H]`` per gate in the forward, W_hh's columns ``[HP, BLOCK_H]`` per
    gate in the backward, the compiler keeping them in registers for the whole sequence. KP and HP (the reduction
    widths of the step's dots) are the next power of two of K and H, at least 16: on NVIDIA GPUs tl.dot needs
    K >= 16 (16-bit operands; 8 for fp32, 4 for fp64), the interpreter any K; the masked tail adds zeros. c (and
    the backward's carries) stay in registers. After each step the programs of a batch tile meet at the grid
    barrier.

Grid barrier (``_grid_barrier``): an atomic counter per batch tile, release/acquire at GPU scope. The launcher
plans no more programs than SMs and launches cooperatively (``launch_cooperative_grid``: the driver starts every
program at once or refuses the launch, and the launcher falls back), so the barrier never deadlocks. The plain interpreter runs
programs one after another, so a cooperative grid runs there only with one hidden slice (each batch tile's single
program passes its barrier at once); the tests' threaded mode (tests/_grid.py) runs every program in a thread of
its own, and so tests multi-program grids on the CPU.

Accumulation is fp32 (fp64 for fp64 tensors), like the step kernels; so are c and the saved activations.
"""

import triton
import triton.language as tl

from .cells import CELL_GRU, CELL_LSTM, cell_bwd, cell_fwd
from .step import (_bwd_tile, _dot_acc, _fwd_tile, _gate_bias, _input_gates, _load_gate, _load_rows, _load_saved,
                   _store_gate, _store_gate_grads, _store_saved)


@triton.jit
def _rows_at(p_sizes, p_offsets, step, T, B, REVERSE: tl.constexpr, PACKED: tl.constexpr):
    """(t, rows, first) of processing step ``step``: its timestep, how many rows run (0 outside [0, T)) and,
    packed, the index of its first row (0 when dense: the time stride places dense steps)."""
    t = (step + T * 0).to(tl.int64)  # a tensor (the interpreter's loop counters are Python ints), int64
    if REVERSE:
        t = T - 1 - t
    inside = (step >= 0) & (step < T)
    if PACKED:
        rows = tl.load(p_sizes + t, mask=inside, other=0)
        first = tl.load(p_offsets + t, mask=inside, other=0)
    else:
        rows = tl.where(inside, B, 0)
        first = t * 0
    return t, rows, first


@triton.jit
def _grid_barrier(p_bar, target):
    """Wait until ``target`` arrivals at the counter ``p_bar`` (this program's included).

    Every thread's global writes before the barrier are visible to every program after it: a CTA barrier
    orders the program's threads, the release add publishes, the acquire loads observe the others."""
    tl.debug_barrier()
    tl.atomic_add(p_bar, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(p_bar, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(p_bar, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _step_barrier(p_bar, target, COOP: tl.constexpr):
    """End of a step of the batch-tiled/streamed kernels: the grid barrier of this program's batch tile (COOP), or
    a CTA barrier (each program alone owns its rows)."""
    if COOP:
        _grid_barrier(p_bar + tl.program_id(1), target)
    else:
        tl.debug_barrier()


@triton.constexpr_function
def _shared_cache(coop):
    """Cache modifier of loads of what other programs of the launch wrote: ".cg" (L2, never a stale L1 line)."""
    return ".cg" if coop else ""


# ---- batch-tiled ----------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["T", "B"])
def _tiled_fwd_kernel(
    p_x, s_xt, s_x,          # [T, B, G*H] xp (input pre-activations) or [T, B, I] x (FUSE_INPUT); packed [N, .]
    p_wih, s_wir, s_wic,     # [G*H, I] W_ih (FUSE_INPUT)
    p_bih,                   # [G*H]    b_ih (FUSE_INPUT and HAS_BIAS)
    p_h0, s_h0,              # [B, K]   initial h
    p_c0, s_c0,              # [B, H]   initial c (LSTM)
    p_w, s_wr, s_wc,         # [G*H, K] W_hh
    p_bhh,                   # [G*H]    b_hh (HAS_BIAS)
    p_y, s_yt, s_y,          # [T, B, K] outputs h_t (out); packed [N, K]
    p_cs,                    # [T+1 | 2, B, H] cell states by step (out, LSTM), accumulator dtype, contiguous
    p_save, s_svt,           # [T, B, NS*H] saved activations (out, SAVE), accumulator dtype, contiguous rows;
                             #          an accumulator-dtype tensor in any case: it sets the accumulator dtype
    p_sizes, p_offsets,      # [T] int64 rows and first row of each timestep (PACKED)
    p_bar,                   # [cdiv(B, BLOCK_B)] int32 barrier counters, zero at launch (COOP)
    T, B, H, K, I,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE: tl.constexpr,
    FUSE_INPUT: tl.constexpr, PACKED: tl.constexpr, REVERSE: tl.constexpr, COOP: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_save.dtype.element_ty
    CACHE: tl.constexpr = _shared_cache(COOP)
    o_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    n_h = tl.num_programs(0)
    s_cs = B.to(tl.int64) * H
    for step in range(T):
        t, rows, first = _rows_at(p_sizes, p_offsets, step, T, B, REVERSE, PACKED)
        t_prev, rows_prev, first_prev = _rows_at(p_sizes, p_offsets, step - 1, T, B, REVERSE, PACKED)
        cur = step
        nxt = step + 1
        if not SAVE:
            cur = step % 2
            nxt = (step + 1) % 2
        p_x_t = p_x + t * s_xt + first * s_x
        p_h_prev = p_y + t_prev * s_yt + first_prev * s_y
        p_h_t = p_y + t * s_yt + first * s_y
        p_save_t = p_save + t * s_svt + first * (NS * H)
        m_b = o_b < rows
        for h_start in range(tl.program_id(0) * BLOCK_H, H, n_h * BLOCK_H):
            o_h = h_start + tl.arange(0, BLOCK_H)
            m_h = o_h < H
            _fwd_tile(p_x_t, s_x, p_wih, s_wir, s_wic, p_bih, p_h_prev, s_y, p_h0, s_h0,
                      p_cs + cur * s_cs, H, p_c0, s_c0, p_w, s_wr, s_wc, p_bhh, p_h_t, s_y, p_cs + nxt * s_cs,
                      p_save_t, rows_prev, H, K, I, o_b, o_h, m_b, m_h, m_b[:, None] & m_h[None, :],
                      ACC, CELL, G, NS, HAS_BIAS, SAVE, FUSE_INPUT, True, BLOCK_B, BLOCK_H, BLOCK_K,
                      UPCAST_DOT, DOT_PRECISION, CACHE)
        _step_barrier(p_bar, (step + 1) * n_h, COOP)  # h_t and c_t of every chunk, before the next step reads them


@triton.jit(do_not_specialize=["T", "B"])
def _tiled_bwd_kernel(
    p_dy, s_dyt, s_dy,       # [T, B, H] dL/dh_t from the layer's output; packed [N, H]
    p_w, s_wr, s_wc,         # [G*H, K] W_hh
    p_dh, p_dc,              # [B, H]   carries dL/dh, dL/dc (pointwise parts), in: at the end of the sequence,
                             #          out: at its start; accumulator dtype, contiguous
    p_save, s_svt,           # [T, B, NS*H] saved activations (accumulator dtype, contiguous rows)
    p_cs,                    # [T+1, B, H] cell states by step (LSTM), contiguous
    p_c0, s_c0,              # [B, H]   initial c (LSTM)
    p_y, s_yt, s_y,          # [T, B, K] the forward's outputs (GRU reads h_{t-1})
    p_h0, s_h0,              # [B, K]   initial h (GRU)
    p_dhp, s_dht, s_dhp,     # [T, B, G*H] dHp (out)
    p_dxp, s_dxt, s_dxp,     # [T, B, G*H] dXp (out, SPLIT_DX)
    p_sizes, p_offsets,      # [T] int64 (PACKED)
    p_bar,                   # [cdiv(B, BLOCK_B)] int32 barrier counters, zero at launch (COOP)
    T, B, H, K,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, SPLIT_DX: tl.constexpr, PACKED: tl.constexpr,
    REVERSE: tl.constexpr, COOP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_dh.dtype.element_ty
    CACHE: tl.constexpr = _shared_cache(COOP)
    o_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    n_h = tl.num_programs(0)
    s_cs = B.to(tl.int64) * H
    for i in range(T):
        step = T - 1 - i
        t, rows, first = _rows_at(p_sizes, p_offsets, step, T, B, REVERSE, PACKED)
        t_prev, rows_prev, first_prev = _rows_at(p_sizes, p_offsets, step - 1, T, B, REVERSE, PACKED)
        t_next, rows_next, first_next = _rows_at(p_sizes, p_offsets, step + 1, T, B, REVERSE, PACKED)
        m_b = o_b < rows
        p_dhp_t = p_dhp + t * s_dht + first * s_dhp
        for h_start in range(tl.program_id(0) * BLOCK_H, H, n_h * BLOCK_H):
            o_h = h_start + tl.arange(0, BLOCK_H)
            m_h = o_h < H
            _bwd_tile(p_dhp + t_next * s_dht + first_next * s_dhp, s_dhp, p_w, s_wr, s_wc,
                      p_dy + t * s_dyt + first * s_dy, s_dy, p_dh, p_dc, p_save + t * s_svt + first * (NS * H),
                      p_cs + (step + 1) * s_cs, p_cs + step * s_cs, H, p_c0, s_c0,
                      p_y + t_prev * s_yt + first_prev * s_y, s_y, p_h0, s_h0,
                      p_dhp_t, s_dhp, p_dxp + t * s_dxt + first * s_dxp, s_dxp,
                      rows_next, rows_prev, H, K, o_b, o_h, m_b, m_h, m_b[:, None] & m_h[None, :],
                      ACC, CELL, G, NS, True, SPLIT_DX, True, BLOCK_B, BLOCK_H, BLOCK_K, UPCAST_DOT,
                      DOT_PRECISION, CACHE)
        _step_barrier(p_bar, (i + 1) * n_h, COOP)  # dHp_t of every chunk, before the previous step reads it


# ---- cooperative -----------------------------------------------------------------------------------------------


@triton.jit
def _w_slice(p, s_r, s_c, o_r, m_r, o_c, m_c):
    """A block of W_hh kept for the whole sequence: ``[o_r, o_c]`` at p + o_r * s_r + o_c * s_c. The forward
    holds W^T slices (its caller swaps the strides), the backward column slices of W_hh."""
    return tl.load(p + o_r[:, None] * s_r + o_c[None, :] * s_c, mask=m_r[:, None] & m_c[None, :], other=0.0)


@triton.jit
def _bias(p_b, gate, H, o_h, m_h, ACC: tl.constexpr, HAS_BIAS: tl.constexpr):
    """b[gate*H + o_h] as a [1, BLOCK_H] row (zeros without HAS_BIAS)."""
    if HAS_BIAS:
        return _gate_bias(p_b, gate, H, o_h, m_h, ACC)
    return tl.zeros((1, o_h.shape[0]), ACC)


@triton.jit
def _coop_tile(H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """A cooperative program's hidden units (slice program_id(0)) and batch rows (tile program_id(1), int64)."""
    o_h = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    o_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    return o_h, o_h < H, o_b


@triton.jit(do_not_specialize=["T", "B"])
def _coop_fwd_kernel(
    p_x, s_xt, s_x, p_wih, s_wir, s_wic, p_bih, p_h0, s_h0, p_c0, s_c0, p_w, s_wr, s_wc, p_bhh,
    p_y, s_yt, s_y, p_cs, p_save, s_svt, p_sizes, p_offsets,  # as in _tiled_fwd_kernel
    p_bar,                   # [cdiv(B, BLOCK_B)] int32 barrier counters, zero at launch
    T, B, H, K, I,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE: tl.constexpr,
    FUSE_INPUT: tl.constexpr, PACKED: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, KP: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_save.dtype.element_ty
    n_h = tl.num_programs(0)
    o_h, m_h, o_b = _coop_tile(H, BLOCK_B, BLOCK_H)
    o_k = tl.arange(0, KP)
    m_k = o_k < K
    s_cs = B.to(tl.int64) * H

    # This program's slice of W_hh^T, [KP, BLOCK_H] per gate, and of b_hh: loaded once, kept on chip.
    w0 = _w_slice(p_w + 0 * H * s_wr, s_wc, s_wr, o_k, m_k, o_h, m_h)
    b0 = _bias(p_bhh, 0, H, o_h, m_h, ACC, HAS_BIAS)
    w1 = w0
    w2 = w0
    w3 = w0
    b1 = b0
    b2 = b0
    b3 = b0
    if G > 1:
        w1 = _w_slice(p_w + 1 * H * s_wr, s_wc, s_wr, o_k, m_k, o_h, m_h)
        b1 = _bias(p_bhh, 1, H, o_h, m_h, ACC, HAS_BIAS)
    if G > 2:
        w2 = _w_slice(p_w + 2 * H * s_wr, s_wc, s_wr, o_k, m_k, o_h, m_h)
        b2 = _bias(p_bhh, 2, H, o_h, m_h, ACC, HAS_BIAS)
    if G > 3:
        w3 = _w_slice(p_w + 3 * H * s_wr, s_wc, s_wr, o_k, m_k, o_h, m_h)
        b3 = _bias(p_bhh, 3, H, o_h, m_h, ACC, HAS_BIAS)

    c = tl.zeros((BLOCK_B, BLOCK_H), ACC)
    c_init = tl.zeros((BLOCK_B, BLOCK_H), ACC)
    if CELL == CELL_LSTM:
        c_init = tl.load(p_c0 + o_b[:, None] * s_c0 + o_h[None, :], mask=(o_b < B)[:, None] & m_h[None, :],
                         other=0.0).to(ACC)
    for step in range(T):
        t, rows, first = _rows_at(p_sizes, p_offsets, step, T, B, REVERSE, PACKED)
        t_prev, rows_prev, first_prev = _rows_at(p_sizes, p_offsets, step - 1, T, B, REVERSE, PACKED)
        m_b = o_b < rows
        m = m_b[:, None] & m_h[None, :]
        p_h_prev = p_y + t_prev * s_yt + first_prev * s_y
        h_full = _load_rows(p_h_prev, s_y, p_h0, s_h0, rows_prev, o_b, m_b, o_k, m_k, True, ".cg")

        r0 = _dot_acc(h_full, w0, None, ACC, UPCAST_DOT, DOT_PRECISION) + b0
        r1 = tl.zeros_like(r0)
        r2 = tl.zeros_like(r0)
        r3 = tl.zeros_like(r0)
        if G > 1:
            r1 = _dot_acc(h_full, w1, None, ACC, UPCAST_DOT, DOT_PRECISION) + b1
        if G > 2:
            r2 = _dot_acc(h_full, w2, None, ACC, UPCAST_DOT, DOT_PRECISION) + b2
        if G > 3:
            r3 = _dot_acc(h_full, w3, None, ACC, UPCAST_DOT, DOT_PRECISION) + b3
        x0, x1, x2, x3 = _input_gates(p_x + t * s_xt + first * s_x, s_x, o_b, m_b, m, p_wih, s_wir, s_wic, p_bih,
                                      o_h, m_h, H, I, ACC, HAS_BIAS, FUSE_INPUT, G, BLOCK_B, BLOCK_H, BLOCK_K,
                                      UPCAST_DOT, DOT_PRECISION)
        h_prev = tl.zeros_like(r0)
        if CELL == CELL_GRU:
            h_prev = _load_rows(p_h_prev, s_y, p_h0, s_h0, rows_prev, o_b, m_b, o_h, m_h, True, ".cg").to(ACC)
        c_prev = tl.where((o_b < rows_prev)[:, None], c, c_init)

        h, c, s0, s1, s2, s3 = cell_fwd(CELL, x0, x1, x2, x3, r0, r1, r2, r3, h_prev, c_prev)

        _store_gate(p_y + t * s_yt + first * s_y, o_b, s_y, o_h, m, 0, H, h)
        if CELL == CELL_LSTM:
            slot = step + 1
            if not SAVE:
                slot = (step + 1) % 2
            _store_gate(p_cs + slot * s_cs, o_b, H, o_h, m, 0, H, c)
        if SAVE:
            _store_saved(p_save + t * s_svt + first * (NS * H), o_b, o_h, m, H, s0, s1, s2, s3, NS)
        _grid_barrier(p_bar + tl.program_id(1), (step + 1) * n_h)


@triton.jit(do_not_specialize=["T", "B"])
def _coop_bwd_kernel(
    p_dy, s_dyt, s_dy, p_w, s_wr, s_wc, p_dh, p_dc, p_save, s_svt, p_cs, p_c0, s_c0, p_y, s_yt, s_y,
    p_h0, s_h0, p_dhp, s_dht, s_dhp, p_dxp, s_dxt, s_dxp, p_sizes, p_offsets,  # as in _tiled_bwd_kernel
    p_bar,                   # [cdiv(B, BLOCK_B)] int32 barrier counters, zero at launch
    T, B, H, K,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, SPLIT_DX: tl.constexpr, PACKED: tl.constexpr,
    REVERSE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,   # unused: the backward's matmul reduces its whole slice at once (HP)
    HP: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_dh.dtype.element_ty
    n_h = tl.num_programs(0)
    o_h, m_h, o_b = _coop_tile(H, BLOCK_B, BLOCK_H)
    m_all = (o_b < B)[:, None] & m_h[None, :]
    o_r = tl.arange(0, HP)
    m_r = o_r < H
    s_cs = B.to(tl.int64) * H

    # This program's columns of W_hh, [HP, BLOCK_H] per gate: dh_{t-1}[:, slice] = sum_g dHp_g @ W_g[:, slice].
    v0 = _w_slice(p_w + 0 * H * s_wr, s_wr, s_wc, o_r, m_r, o_h, m_h)
    v1 = v0
    v2 = v0
    v3 = v0
    if G > 1:
        v1 = _w_slice(p_w + 1 * H * s_wr, s_wr, s_wc, o_r, m_r, o_h, m_h)
    if G > 2:
        v2 = _w_slice(p_w + 2 * H * s_wr, s_wr, s_wc, o_r, m_r, o_h, m_h)
    if G > 3:
        v3 = _w_slice(p_w + 3 * H * s_wr, s_wr, s_wc, o_r, m_r, o_h, m_h)

    carry_h = tl.load(p_dh + o_b[:, None] * H + o_h[None, :], mask=m_all, other=0.0)
    carry_c = tl.zeros_like(carry_h)
    if CELL == CELL_LSTM:
        carry_c = tl.load(p_dc + o_b[:, None] * H + o_h[None, :], mask=m_all, other=0.0)
    for i in range(T):
        step = T - 1 - i
        t, rows, first = _rows_at(p_sizes, p_offsets, step, T, B, REVERSE, PACKED)
        t_prev, rows_prev, first_prev = _rows_at(p_sizes, p_offsets, step - 1, T, B, REVERSE, PACKED)
        t_next, rows_next, first_next = _rows_at(p_sizes, p_offsets, step + 1, T, B, REVERSE, PACKED)
        m_b = o_b < rows
        m = m_b[:, None] & m_h[None, :]

        dh = carry_h + _load_gate(p_dy + t * s_dyt + first * s_dy, o_b, s_dy, o_h, m, 0, H, ACC)
        p_next = p_dhp + t_next * s_dht + first_next * s_dhp
        m_next = o_b < rows_next
        g0 = _load_rows(p_next, s_dhp, p_next, s_dhp, 0, o_b, m_next, o_r, m_r, False, ".cg")
        dh = _dot_acc(g0, v0, dh, ACC, UPCAST_DOT, DOT_PRECISION)
        if G > 1:
            g1 = _load_rows(p_next + H, s_dhp, p_next, s_dhp, 0, o_b, m_next, o_r, m_r, False, ".cg")
            dh = _dot_acc(g1, v1, dh, ACC, UPCAST_DOT, DOT_PRECISION)
        if G > 2:
            g2 = _load_rows(p_next + 2 * H, s_dhp, p_next, s_dhp, 0, o_b, m_next, o_r, m_r, False, ".cg")
            dh = _dot_acc(g2, v2, dh, ACC, UPCAST_DOT, DOT_PRECISION)
        if G > 3:
            g3 = _load_rows(p_next + 3 * H, s_dhp, p_next, s_dhp, 0, o_b, m_next, o_r, m_r, False, ".cg")
            dh = _dot_acc(g3, v3, dh, ACC, UPCAST_DOT, DOT_PRECISION)

        s0, s1, s2, s3 = _load_saved(p_save + t * s_svt + first * (NS * H), o_b, o_h, m, H, NS, ACC)
        c = tl.zeros_like(dh)
        c_prev = tl.zeros_like(dh)
        h_prev = tl.zeros_like(dh)
        if CELL == CELL_LSTM:
            c = _load_gate(p_cs + (step + 1) * s_cs, o_b, H, o_h, m, 0, H, ACC)
            c_prev = _load_rows(p_cs + step * s_cs, H, p_c0, s_c0, rows_prev, o_b, m_b, o_h, m_h, True, "").to(ACC)
        if CELL == CELL_GRU:
            h_prev = _load_rows(p_y + t_prev * s_yt + first_prev * s_y, s_y, p_h0, s_h0, rows_prev, o_b, m_b, o_h,
                                m_h, True, "").to(ACC)

        d0, d1, d2, d3, dr2, dh_prev, dc_prev = cell_bwd(CELL, dh, carry_c, s0, s1, s2, s3, h_prev, c_prev, c)

        _store_gate_grads(p_dhp + t * s_dht + first * s_dhp, s_dhp, p_dxp + t * s_dxt + first * s_dxp, s_dxp, o_b,
                          o_h, m, H, d0, d1, d2, d3, dr2, G, SPLIT_DX)
        carry_h = tl.where(m_b[:, None], dh_prev, carry_h)
        if CELL == CELL_LSTM:
            carry_c = tl.where(m_b[:, None], dc_prev, carry_c)
        _grid_barrier(p_bar + tl.program_id(1), (i + 1) * n_h)

    tl.store(p_dh + o_b[:, None] * H + o_h[None, :], carry_h, mask=m_all)
    if CELL == CELL_LSTM:
        tl.store(p_dc + o_b[:, None] * H + o_h[None, :], carry_c, mask=m_all)
