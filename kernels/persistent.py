"""Persistent kernels: a layer's whole sequence (one direction) in ONE launch.

Legend as in ``step.py``: B batch (rows of the first processed step; packed batches shrink or, in reverse, grow),
H hidden, K width of h (= H: the persistent kernels have no projection), I input size, G gates, NS saved
activations per hidden unit, T steps. A sequence is dense (``[T, B, w]`` with a time stride and a row stride) or
packed (``PACKED``: ``[N, w]`` rows, step t's ``sizes[t]`` rows starting at row ``offsets[t]``, time stride 0).
``step`` counts in processing order; ``t`` is the timestep (``REVERSE``: t = T-1-step). Buffers indexed by
step rather than time: the cell states ``cs`` (``[T+1, B, H]``, cs[s+1] after step s, with SAVE; else two
slots used in turn). Everything else is indexed by time, as in the stepwise launcher, so a persistent forward
and a stepwise backward (or the reverse) interoperate.

Every step is computed by the tile code of the step kernels (``tile.py``, through ``_fwd_step`` / ``_bwd_step``
here, which place the step's rows and walk the program's hidden units); the three variants differ only in which
hidden units a program owns, where W_hh, c and the carries come from, and how a step ends.

Batch-tiled (``_tiled_fwd_kernel``, ``_tiled_bwd_kernel``), grid ``(1, cdiv(B, BLOCK_B))``
    A program owns BLOCK_B batch rows and the full hidden width and walks all T steps. Per step it computes
    the hidden units in chunks of BLOCK_H; h_t is written to the output (the next step's h_{t-1}), c and the
    backward's carries to per-row scratch that only this program touches. Between steps a ``tl.debug_barrier()``
    (a CTA barrier) makes the step's writes visible to all of the program's threads. No program ever waits for
    another, so this runs under the interpreter too. W_hh is read through L2 every step (one copy shared by all
    programs); h and c of the program's rows stay in its L1/L2 working set (BLOCK_B x H elements).

Cooperative (``_coop_fwd_kernel``, ``_coop_bwd_kernel``), grid ``(n_h, cdiv(B, BLOCK_B))``: n_h programs per batch
tile share its hidden units, exchange h_t (forward) and dHp_t (backward) through memory and meet at the grid
barrier of their batch tile after every step; what other programs wrote is read with ``.cg`` loads (L2: never a
stale L1 line). The constexpr ``RESIDENT`` picks the variant:

  streamed (``RESIDENT=False``)
    Program i walks the hidden chunks i, i + n_h, ... of BLOCK_H units (``autotune.spaces.coop_grid`` makes them
    even), re-reading their W_hh rows every step in BLOCK_K blocks (a program's rows are the same at every step,
    so ``.ca`` loads keep them in its SM's L1 where they fit, else L2); c and the carries live in memory, as in the
    batch-tiled kernel. For layers whose resident grid or W_hh slice would not fit the GPU (B=64 at H=1536).

  resident (``RESIDENT=True``)
    Program i owns the slice of BLOCK_H hidden units i*BLOCK_H... (all G gates; n_h = cdiv(H, BLOCK_H)) for
    BLOCK_B rows and loads its slice of W_hh ONCE, before the time loop (``tile._held_fwd`` / ``_held_bwd``): in
    the forward W_hh^T with the G gates side by side, ``[KP, GP * BLOCK_H]`` (GP = G rounded up to a power of two),
    so that one dot per K block computes every gate of the slice; in the backward W_hh's columns ``[HP, BLOCK_H]``
    per gate. KP and HP, the widths held of the step's reductions (K and H), are the next power of two up to
    ``tile.held_rows(BLOCK_B)`` (256 rows for 16-row tiles, 128 for taller ones), at least 16 (on NVIDIA GPUs tl.dot
    needs K >= 16 for 16-bit operands; 8 for fp32, 4 for fp64; M and N may be anything), else the next multiple of
    it, held in blocks of that many rows (``autotune.spaces.held_width``: 768 is three blocks of 256 or six of
    128, 300 two of 256, none padded to a power of two); the masked tail adds zeros. The compiler keeps the held
    blocks in shared memory (and registers) for the whole sequence: no load of W_hh sits in the time loop
    (``bench/ptx.py``'s ``loop_reads`` checks the PTX). c (and the backward's carries) stay in registers. The
    streamed launch passes None for KP / HP (so that its compilations do not multiply with H); the resident one
    uses BLOCK_K only for the forward's fused input projection (inference), which streams W_ih in BLOCK_K blocks,
    the gates side by side as well.

Grid barrier (``_grid_barrier``): an atomic counter per batch tile, release/acquire at GPU scope. The launcher
plans no more programs than SMs and launches cooperatively (``launch_cooperative_grid``: the driver starts every
program at once or refuses the launch, and the launcher falls back), so the barrier never deadlocks. The plain
interpreter runs programs one after another, so a cooperative grid runs there only with one hidden program per
batch tile (each batch tile's single program passes its barrier at once); the tests' threaded mode (tests/_grid.py)
runs every program in a thread of its own, and so tests multi-program grids on the CPU.

Accumulation is fp32 (fp64 for fp64 tensors), like the step kernels; so are c and the saved activations.
"""

import triton
import triton.language as tl

from .tile import (_bwd_dh, _bwd_epilogue, _bwd_tile, _dh_matmul, _fwd_epilogue, _fwd_recurrent, _fwd_tile,
                   _gate_biases, _held_bwd, _held_fwd, _input_gates, _kept, _load_tile, _program_tile, _store_tile)


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


# ---- one step of a sequence --------------------------------------------------------------------------------------


@triton.jit
def _fwd_step(
    step, p_x, s_xt, s_x, p_wih, s_wir, s_wic, p_bih, p_h0, s_h0, p_c0, s_c0, p_w, s_wr, s_wc, p_bhh,
    p_y, s_yt, s_y, p_cs, p_save, s_svt, p_sizes, p_offsets, p_z, s_zt, s_z, T, B, H, K, I, o_b, h_first, h_stride,
    w, b, c, c_init,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr, READS_H: tl.constexpr,
    HAS_BIAS: tl.constexpr, SAVE: tl.constexpr, FUSE_INPUT: tl.constexpr, PACKED: tl.constexpr,
    REVERSE: tl.constexpr, RESET: tl.constexpr, RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr, KP: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    CACHE: tl.constexpr,
):
    """Forward step ``step`` of this program's rows o_b: the hidden chunks h_first, h_first + h_stride, ... < H
    (memory state, W_hh streamed), or, RESIDENT, the one slice at h_first with the held ``w`` / ``b`` and c (c_{t-1}
    in registers; rows that did not run the previous step start from ``c_init``, rows flagged in ``p_z`` (RESET)
    from zeros, as their h_{t-1} does: ``_kept``). Returns c_t (RESIDENT; else
    ``c`` unchanged: callers pass a tile, as Triton 3.6 cannot return None from a jit function)."""
    ACC: tl.constexpr = p_save.dtype.element_ty
    t, rows, first = _rows_at(p_sizes, p_offsets, step, T, B, REVERSE, PACKED)
    t_prev, rows_prev, first_prev = _rows_at(p_sizes, p_offsets, step - 1, T, B, REVERSE, PACKED)
    cur = step
    nxt = step + 1
    if not SAVE:
        cur = step % 2
        nxt = (step + 1) % 2
    s_cs = B.to(tl.int64) * H
    p_h_prev = p_y + t_prev * s_yt + first_prev * s_y
    m_b = o_b < rows
    m_prev = _kept(p_z + t * s_zt + first * s_z, o_b, m_b, RESET)
    if RESIDENT:
        # The tile in its parts, each part's pointers computed where it starts, as for the backward (_bwd_step): the
        # epilogue's, computed before the matmul, were live across its dots (212 registers instead of 208, fp64).
        o_h = h_first + tl.arange(0, BLOCK_H)
        m_h = o_h < H
        m = m_b[:, None] & m_h[None, :]
        r = _fwd_recurrent(p_h_prev, s_y, p_h0, s_h0, p_w, s_wr, s_wc, p_bhh, rows_prev, H, K, o_b, o_h, m_prev, m_h,
                           w, b, ACC, G, HAS_BIAS, True, True, BLOCK_B, BLOCK_H, BLOCK_K, KP, UPCAST_DOT,
                           DOT_PRECISION, CACHE)
        x = _input_gates(p_x + t * s_xt + first * s_x, s_x, o_b, m_b, m, p_wih, s_wir, s_wic, p_bih, o_h, m_h,
                         h_first, H, I,
                         ACC, G, HAS_BIAS, FUSE_INPUT, True, BLOCK_B, BLOCK_H, BLOCK_K, UPCAST_DOT, DOT_PRECISION)
        c_prev = tl.where((o_b < rows_prev)[:, None], c, c_init)
        if RESET:
            c_prev = tl.where(m_prev[:, None], c_prev, 0.0)
        c = _fwd_epilogue(r, x, c_prev, p_h_prev, s_y, p_h0, s_h0, p_cs, H, p_c0, s_c0, p_y + t * s_yt + first * s_y,
                          s_y, p_cs + nxt * s_cs, p_save + t * s_svt + first * (NS * H), rows_prev, H, o_b, o_h,
                          m_prev, m_h, m, ACC, CELL, NS, HAS_C, READS_H, SAVE, True, True, BLOCK_B, BLOCK_H, CACHE)
    else:
        p_x_t = p_x + t * s_xt + first * s_x
        p_h_t = p_y + t * s_yt + first * s_y
        p_save_t = p_save + t * s_svt + first * (NS * H)
        for h_start in range(h_first, H, h_stride):
            o_h = h_start + tl.arange(0, BLOCK_H)
            m_h = o_h < H
            _fwd_tile(p_x_t, s_x, p_wih, s_wir, s_wic, p_bih, p_h_prev, s_y, p_h0, s_h0, p_cs + cur * s_cs, H, p_c0,
                      s_c0, p_w, s_wr, s_wc, p_bhh, p_h_t, s_y, p_cs + nxt * s_cs, p_save_t, rows_prev, H, K, I, o_b,
                      o_h, m_b, m_h, m_b[:, None] & m_h[None, :], m_prev, None, None, None, ACC, CELL, G, NS, HAS_C,
                      READS_H, HAS_BIAS, SAVE, FUSE_INPUT, True, False, BLOCK_B, BLOCK_H, BLOCK_K, None, UPCAST_DOT,
                      DOT_PRECISION, CACHE)
    return c


@triton.jit
def _bwd_step(
    i, p_dy, s_dyt, s_dy, p_w, s_wr, s_wc, p_dh, p_dc, p_save, s_svt, p_cs, p_c0, s_c0, p_y, s_yt, s_y,
    p_h0, s_h0, p_dhp, s_dht, s_dhp, p_dxp, s_dxt, s_dxp, p_sizes, p_offsets, p_z, s_zt, s_z, T, B, H, o_b, h_first,
    h_stride, w, carry_h, carry_c,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr, READS_H: tl.constexpr,
    SPLIT_DX: tl.constexpr, PACKED: tl.constexpr, REVERSE: tl.constexpr, RESET: tl.constexpr, RESIDENT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HP: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """Backward of the i-th step from the end (processing step T-1-i) for this program's rows o_b, over its hidden
    units as in ``_fwd_step``; RESIDENT: with the held ``w`` and the carries in registers. Rows flagged in ``p_z``
    (RESET) at step t pass no gradient to t-1, nor read dHp_t at t-1 (``_kept``). Returns the carries (RESIDENT; else
    the tiles given, unchanged, as in ``_fwd_step``)."""
    ACC: tl.constexpr = p_dh.dtype.element_ty
    step = T - 1 - i
    t, rows, first = _rows_at(p_sizes, p_offsets, step, T, B, REVERSE, PACKED)
    t_prev, rows_prev, first_prev = _rows_at(p_sizes, p_offsets, step - 1, T, B, REVERSE, PACKED)
    t_next, rows_next, first_next = _rows_at(p_sizes, p_offsets, step + 1, T, B, REVERSE, PACKED)
    s_cs = B.to(tl.int64) * H
    m_b = o_b < rows
    m_next = _kept(p_z + t_next * s_zt + first_next * s_z, o_b, o_b < rows_next, RESET)
    if RESIDENT:
        # The tile in its two halves, so that the epilogue's pointers are computed after the matmul (computed
        # before it, they were live across its dots: 78 registers instead of 64, rnn_tanh B=64 on sm_90a).
        o_h = h_first + tl.arange(0, BLOCK_H)
        m_h = o_h < H
        p_dhp_next = p_dhp + t_next * s_dht + first_next * s_dhp
        p_dy_t = p_dy + t * s_dyt + first * s_dy
        m_t = m_b[:, None] & m_h[None, :]
        if RESET:
            # dHp_{t+1} @ W_hh of every row that runs step t+1, zeroed after the dots for the rows that start afresh
            # there, instead of a flag-dependent mask on the dots' loads: under ptxas's 128-register heuristic for
            # this 8-warp kernel the masked loads spilled (sm_90a, H=64 and 128: Triton 3.6 GRU 8 B; Triton 3.9 LSTM
            # 48 B, GRU 32 B); this way both build them without a spill, bf16 B=16 (bench.resources --reset).
            part = _dh_matmul(tl.zeros((BLOCK_B, BLOCK_H), ACC), p_dhp_next, s_dhp, o_b, o_b < rows_next, p_w, s_wr,
                              s_wc, o_h, m_h, H, w, ACC, G, True, BLOCK_K, HP, UPCAST_DOT, DOT_PRECISION, CACHE)
            dh, carry_h = _bwd_dh(p_dhp_next, s_dhp, p_w, s_wr, s_wc, p_dy_t, s_dy, p_dh, m_next, H, o_b, o_h, m_h,
                                  m_t, w, carry_h, ACC, G, False, True, BLOCK_K, HP, UPCAST_DOT, DOT_PRECISION, CACHE)
            dh += tl.where(m_next[:, None], part, 0.0)
        else:
            dh, carry_h = _bwd_dh(p_dhp_next, s_dhp, p_w, s_wr, s_wc, p_dy_t, s_dy, p_dh, m_next, H, o_b, o_h, m_h,
                                  m_t, w, carry_h, ACC, G, True, True, BLOCK_K, HP, UPCAST_DOT, DOT_PRECISION, CACHE)
        carry_h, carry_c = _bwd_epilogue(
            dh, carry_h, carry_c, p_dh, p_dc, p_save + t * s_svt + first * (NS * H), p_cs + (step + 1) * s_cs,
            p_cs + step * s_cs, H, p_c0, s_c0, p_y + t_prev * s_yt + first_prev * s_y, s_y, p_h0, s_h0,
            p_dhp + t * s_dht + first * s_dhp, s_dhp, p_dxp + t * s_dxt + first * s_dxp, s_dxp, rows_prev, H, o_b, o_h,
            m_b, m_h, m_b[:, None] & m_h[None, :], _kept(p_z + t * s_zt + first * s_z, o_b, m_b, RESET), ACC, CELL,
            G, NS, HAS_C, READS_H, SPLIT_DX, True, True, RESET)
    else:
        p_dhp_next = p_dhp + t_next * s_dht + first_next * s_dhp
        p_dy_t = p_dy + t * s_dyt + first * s_dy
        p_save_t = p_save + t * s_svt + first * (NS * H)
        p_h_prev = p_y + t_prev * s_yt + first_prev * s_y
        p_dhp_t = p_dhp + t * s_dht + first * s_dhp
        p_dxp_t = p_dxp + t * s_dxt + first * s_dxp
        m_prev = _kept(p_z + t * s_zt + first * s_z, o_b, m_b, RESET)
        for h_start in range(h_first, H, h_stride):
            o_h = h_start + tl.arange(0, BLOCK_H)
            m_h = o_h < H
            _bwd_tile(p_dhp_next, s_dhp, p_w, s_wr, s_wc, p_dy_t, s_dy, p_dh, p_dc, p_save_t, p_cs + (step + 1) * s_cs,
                      p_cs + step * s_cs, H, p_c0, s_c0, p_h_prev, s_y, p_h0, s_h0, p_dhp_t, s_dhp, p_dxp_t, s_dxp,
                      rows_prev, H, o_b, o_h, m_b, m_h, m_b[:, None] & m_h[None, :], m_prev, m_next, None, None,
                      None, ACC, CELL, G, NS, HAS_C, READS_H, SPLIT_DX, True, True, False, RESET, BLOCK_K, None,
                      UPCAST_DOT, DOT_PRECISION, CACHE)
    return carry_h, carry_c


# ---- batch-tiled ----------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["T", "B"])
def _tiled_fwd_kernel(
    p_x, s_xt, s_x,          # [T, B, G*H] xp (input pre-activations) or [T, B, I] x (FUSE_INPUT); packed [N, .]
    p_wih, s_wir, s_wic,     # [G*H, I] W_ih (FUSE_INPUT)
    p_bih,                   # [G*H]    b_ih (FUSE_INPUT and HAS_BIAS)
    p_h0, s_h0,              # [B, K]   initial h
    p_c0, s_c0,              # [B, H]   initial c (HAS_C)
    p_w, s_wr, s_wc,         # [G*H, K] W_hh
    p_bhh,                   # [G*H]    b_hh (HAS_BIAS)
    p_y, s_yt, s_y,          # [T, B, K] outputs h_t (out); packed [N, K]
    p_cs,                    # [T+1 | 2, B, H] cell states by step (out, HAS_C), accumulator dtype, contiguous
    p_save, s_svt,           # [T, B, NS*H] saved activations (out, SAVE), accumulator dtype, contiguous rows;
                             #          an accumulator-dtype tensor in any case: it sets the accumulator dtype
    p_sizes, p_offsets,      # [T] int64 rows and first row of each timestep (PACKED)
    p_z, s_zt, s_z,          # [T, B] uint8 (packed [N]): 1 where a row starts afresh at t (RESET): state t-1 is 0
    T, B, H, K, I,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr, READS_H: tl.constexpr,
    SPLIT_DX: tl.constexpr,  # the cell's traits (fusedrnn/cells.py); SPLIT_DX is the backward's
    HAS_BIAS: tl.constexpr, SAVE: tl.constexpr, FUSE_INPUT: tl.constexpr, PACKED: tl.constexpr,
    REVERSE: tl.constexpr, RESET: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # The hidden chunks h_first, h_first + h_stride, ... as in the cooperative kernel: with one hidden program (grid
    # (1, n_b)) they are 0, BLOCK_H, ...; written as the constants 0 and BLOCK_H, ptxas spilled 8 more bytes (fp32
    # LSTM, Triton 3.9).
    o_b, h_first = _program_tile(1, BLOCK_B, BLOCK_H)
    h_stride = tl.num_programs(0) * BLOCK_H
    unused = tl.zeros((BLOCK_B, BLOCK_H), p_save.dtype.element_ty)  # the c _fwd_step hands back (it holds none)
    for step in range(T):
        _fwd_step(step, p_x, s_xt, s_x, p_wih, s_wir, s_wic, p_bih, p_h0, s_h0, p_c0, s_c0, p_w, s_wr, s_wc, p_bhh,
                  p_y, s_yt, s_y, p_cs, p_save, s_svt, p_sizes, p_offsets, p_z, s_zt, s_z, T, B, H, K, I, o_b, h_first,
                  h_stride, None, None, unused, None, CELL, G, NS, HAS_C, READS_H, HAS_BIAS, SAVE, FUSE_INPUT, PACKED,
                  REVERSE, RESET, False, BLOCK_B, BLOCK_H, BLOCK_K, None, UPCAST_DOT, DOT_PRECISION,
                  "")  # this program wrote h_{t-1}
        tl.debug_barrier()  # h_t and c_t of every chunk, before the next step reads them


@triton.jit(do_not_specialize=["T", "B"])
def _tiled_bwd_kernel(
    p_dy, s_dyt, s_dy,       # [T, B, H] dL/dh_t from the layer's output; packed [N, H]
    p_w, s_wr, s_wc,         # [G*H, K] W_hh
    p_dh, p_dc,              # [B, H]   carries dL/dh, dL/dc (pointwise parts), in: at the end of the sequence,
                             #          out: at its start; accumulator dtype, contiguous
    p_save, s_svt,           # [T, B, NS*H] saved activations (accumulator dtype, contiguous rows)
    p_cs,                    # [T+1, B, H] cell states by step (HAS_C), contiguous
    p_c0, s_c0,              # [B, H]   initial c (HAS_C)
    p_y, s_yt, s_y,          # [T, B, K] the forward's outputs (READS_H: h_{t-1})
    p_h0, s_h0,              # [B, K]   initial h (READS_H)
    p_dhp, s_dht, s_dhp,     # [T, B, G*H] dHp (out)
    p_dxp, s_dxt, s_dxp,     # [T, B, G*H] dXp (out, SPLIT_DX)
    p_sizes, p_offsets,      # [T] int64 (PACKED)
    p_z, s_zt, s_z,          # [T, B] uint8 resets, as in _tiled_fwd_kernel (RESET)
    T, B, H,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr, READS_H: tl.constexpr,
    SPLIT_DX: tl.constexpr, PACKED: tl.constexpr, REVERSE: tl.constexpr, RESET: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    o_b, h_first = _program_tile(1, BLOCK_B, BLOCK_H)  # the chunks as in _tiled_fwd_kernel
    h_stride = tl.num_programs(0) * BLOCK_H
    unused = tl.zeros((BLOCK_B, BLOCK_H), p_dh.dtype.element_ty)  # the carries _bwd_step hands back (in p_dh, p_dc)
    for i in range(T):
        _bwd_step(i, p_dy, s_dyt, s_dy, p_w, s_wr, s_wc, p_dh, p_dc, p_save, s_svt, p_cs, p_c0, s_c0, p_y, s_yt, s_y,
                  p_h0, s_h0, p_dhp, s_dht, s_dhp, p_dxp, s_dxt, s_dxp, p_sizes, p_offsets, p_z, s_zt, s_z, T, B, H,
                  o_b, h_first, h_stride, None, unused, unused, CELL, G, NS, HAS_C, READS_H, SPLIT_DX, PACKED, REVERSE,
                  RESET, False,
                  BLOCK_B, BLOCK_H, BLOCK_K, None, UPCAST_DOT, DOT_PRECISION, "")
        tl.debug_barrier()  # dHp_t of every chunk, before the previous step reads it


# ---- cooperative -----------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["T", "B"])
def _coop_fwd_kernel(
    p_x, s_xt, s_x, p_wih, s_wir, s_wic, p_bih, p_h0, s_h0, p_c0, s_c0, p_w, s_wr, s_wc, p_bhh,
    p_y, s_yt, s_y, p_cs, p_save, s_svt, p_sizes, p_offsets, p_z, s_zt, s_z,  # as in _tiled_fwd_kernel
    p_bar,                   # [cdiv(B, BLOCK_B)] int32 barrier counters, zero at launch
    T, B, H, K, I,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr, READS_H: tl.constexpr,
    SPLIT_DX: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE: tl.constexpr, FUSE_INPUT: tl.constexpr,
    PACKED: tl.constexpr, REVERSE: tl.constexpr, RESET: tl.constexpr,
    RESIDENT: tl.constexpr,  # True: one slice per program, W_hh held; False: streamed chunks (module docstring)
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    KP: tl.constexpr,        # RESIDENT: next_pow2(K) >= 16, the width of the held W_hh^T blocks (else None)
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_save.dtype.element_ty
    n_h = tl.num_programs(0)
    o_b, h_first = _program_tile(1, BLOCK_B, BLOCK_H)
    w = None
    b = None
    c_init = None
    if RESIDENT:
        # This program's slice of W_hh^T, [KP, BLOCK_H] per gate, and of b_hh: loaded once, kept on chip; so is
        # c_0 of its rows (c_{t-1} of the rows that start at a step).
        o_h = h_first + tl.arange(0, BLOCK_H)
        m_h = o_h < H
        w = _held_fwd(p_w, H, K, s_wr, s_wc, h_first, G, KP, BLOCK_B, BLOCK_H)
        if HAS_BIAS:
            b = _gate_biases(p_bhh, H, o_h, m_h, ACC, G)
        c_init = tl.zeros((BLOCK_B, BLOCK_H), ACC)
        if HAS_C:
            c_init = _load_tile(p_c0, o_b, s_c0, o_h, (o_b < B)[:, None] & m_h[None, :], ACC)
    c = tl.zeros((BLOCK_B, BLOCK_H), ACC)  # c_{t-1} (RESIDENT; the streamed variant keeps it in p_cs)
    for step in range(T):
        c = _fwd_step(step, p_x, s_xt, s_x, p_wih, s_wir, s_wic, p_bih, p_h0, s_h0, p_c0, s_c0, p_w, s_wr, s_wc,
                      p_bhh, p_y, s_yt, s_y, p_cs, p_save, s_svt, p_sizes, p_offsets, p_z, s_zt, s_z, T, B, H, K, I,
                      o_b, h_first, n_h * BLOCK_H, w, b, c, c_init, CELL, G, NS, HAS_C, READS_H, HAS_BIAS, SAVE,
                      FUSE_INPUT, PACKED, REVERSE, RESET, RESIDENT, BLOCK_B, BLOCK_H, BLOCK_K, KP, UPCAST_DOT,
                      DOT_PRECISION, ".cg")  # h_{t-1}, written by the other programs: from L2, never a stale L1 line
        _grid_barrier(p_bar + tl.program_id(1), (step + 1) * n_h)  # h_t of every program before step + 1 reads it


@triton.jit(do_not_specialize=["T", "B"])
def _coop_bwd_kernel(
    p_dy, s_dyt, s_dy, p_w, s_wr, s_wc, p_dh, p_dc, p_save, s_svt, p_cs, p_c0, s_c0, p_y, s_yt, s_y,
    p_h0, s_h0, p_dhp, s_dht, s_dhp, p_dxp, s_dxt, s_dxp, p_sizes, p_offsets, p_z, s_zt, s_z,  # as in _tiled_bwd
    p_bar,                   # [cdiv(B, BLOCK_B)] int32 barrier counters, zero at launch
    T, B, H,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr, READS_H: tl.constexpr,
    SPLIT_DX: tl.constexpr, PACKED: tl.constexpr, REVERSE: tl.constexpr, RESET: tl.constexpr,
    RESIDENT: tl.constexpr,  # as in _coop_fwd_kernel
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,   # the streamed variant's blocks of the G*H rows of its matmul
    HP: tl.constexpr,        # RESIDENT: next_pow2(H) >= 16, the height of the held W_hh column blocks (else None)
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_dh.dtype.element_ty
    n_h = tl.num_programs(0)
    o_b, h_first = _program_tile(1, BLOCK_B, BLOCK_H)
    w = None
    carry_h = tl.zeros((BLOCK_B, BLOCK_H), ACC)  # RESIDENT: the carries (the streamed variant's are in p_dh, p_dc)
    carry_c = tl.zeros((BLOCK_B, BLOCK_H), ACC)
    if RESIDENT:
        # This program's columns of W_hh, [HP, BLOCK_H] per gate: dh_{t-1}[:, slice] = sum_g dHp_g @ W_g[:, slice];
        # and its carries, kept in registers until the end.
        o_h = h_first + tl.arange(0, BLOCK_H)
        m_h = o_h < H
        m_all = (o_b < B)[:, None] & m_h[None, :]
        w = _held_bwd(p_w, H, s_wr, s_wc, o_h, m_h, G, HP, BLOCK_B)
        carry_h = _load_tile(p_dh, o_b, H, o_h, m_all, ACC)
        if HAS_C:
            carry_c = _load_tile(p_dc, o_b, H, o_h, m_all, ACC)
    for i in range(T):
        carry_h, carry_c = _bwd_step(
            i, p_dy, s_dyt, s_dy, p_w, s_wr, s_wc, p_dh, p_dc, p_save, s_svt, p_cs, p_c0, s_c0, p_y, s_yt, s_y,
            p_h0, s_h0, p_dhp, s_dht, s_dhp, p_dxp, s_dxt, s_dxp, p_sizes, p_offsets, p_z, s_zt, s_z, T, B, H, o_b,
            h_first, n_h * BLOCK_H, w, carry_h, carry_c, CELL, G, NS, HAS_C, READS_H, SPLIT_DX, PACKED, REVERSE, RESET,
            RESIDENT,
            BLOCK_B, BLOCK_H, BLOCK_K, HP, UPCAST_DOT, DOT_PRECISION, ".cg")  # dHp_{t+1}: as h_{t-1} forward
        _grid_barrier(p_bar + tl.program_id(1), (i + 1) * n_h)  # dHp_t of every program before step - 1 reads it
    if RESIDENT:
        _store_tile(p_dh, o_b, H, o_h, m_all, carry_h)
        if HAS_C:
            _store_tile(p_dc, o_b, H, o_h, m_all, carry_c)
