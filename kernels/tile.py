"""The one tile path: one [BLOCK_B rows, BLOCK_H hidden units] tile of one step, forward and backward.

Every kernel computes its steps with these helpers: the step kernels (``step.py``: one tile per program), the
batch-tiled and the streamed cooperative persistent kernels (``persistent.py``: a program walks hidden chunks) and
the resident cooperative one (one hidden slice per program for the whole sequence). They differ in two things only,
both chosen by the constexpr ``RESIDENT`` of ``_fwd_tile`` / ``_bwd_tile``:

- where the W_hh block comes from: held (``RESIDENT``: the caller loaded it once, before its time loop, with
  ``_held_fwd`` / ``_held_bwd``, and passes it in as ``w``: the reduction width in blocks of ``held_rows`` rows, the
  forward's with the G gates side by side, one dot per block for every gate, ``_split_gates`` parting the result)
  or streamed (re-read from memory in BLOCK_K blocks at every step, one dot per gate);
- where c and the backward's carries live: registers (``RESIDENT``: passed in as values, the new ones returned)
  or memory (loaded and stored here, each program touching only its own tile).

Legend as in ``step.py``: B batch, H hidden, K width of h_{t-1}, G gates, NS saved activations per hidden unit;
``o_b`` / ``o_h`` a tile's rows (int64) and hidden units, ``m_b`` / ``m_h`` their masks, ``m`` the tile's.

Pieces, each written once:
  ``_load_rows`` / ``_load_tile`` / ``_load_gates`` / ``_store_gates``   row loads (two sources: packed and reversed
                                          sequences), tiles, and the G (or NS) gate tiles of a [., G*H] matrix;
  ``_gates_matmul`` (``_gates_block``)    forward: the G recurrent (or fused input) pre-activations, A @ W[g]^T;
  ``_dh_matmul`` (``_dh_block``)          backward: dh += dHp_{t+1} @ W_hh over all G*H gate rows;
  ``_fwd_epilogue`` / ``_bwd_epilogue``   the state at t-1, the cell's math (``cells.py``) and the stores;
  ``_fwd_tile`` / ``_bwd_tile``           a whole tile: the matmuls, then the epilogue; ``_fwd_recurrent`` (with
                                          ``_input_gates``) and ``_bwd_dh`` are their first halves, for the resident
                                          kernel, which computes the epilogue's pointers after them.

The gates travel as Triton tuples built with ``tl.static_range`` (G recurrent and input pre-activations, NS saved
values, G gradients): no code is written per gate, and none knows a cell by name. The tile branches on the cell's
traits only (``fusedrnn/cells.py``): HAS_C (a cell state c), READS_H (the pointwise update reads h_{t-1}),
SPLIT_DX (the input and recurrent gate gradients differ), G and NS; the math is ``cells.py``'s.

The order of the loads and the shape of the address expressions are kept as the kernels had them before they shared
this code: ptxas's register counts depend on them (sm_90a builds of ``bench.resources``): one gate's W (and bias)
block is read just before its dot (all G read first: 8 more registers and 4 KB more shared memory in a resident GRU
forward), W^T's offsets are ``(g*H + o_h) * s_wr + o_k * s_wc`` (other orders of the same sum: 3 to 18 more
registers in streamed GRU forwards).
"""

import triton
import triton.language as tl

from .cells import cell_bwd, cell_fwd


@triton.jit
def _program_tile(B_AXIS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """(o_b, h_first): this program's batch rows, tile program_id(B_AXIS) (int64: B*T*G*H may pass 2**31), and its
    first hidden unit, slice program_id(1 - B_AXIS). The step kernels have their batch tiles on the grid's first
    axis (up to 2**31 - 1 programs; the second allows 65535), the persistent kernels on the second."""
    o_b = (tl.program_id(B_AXIS) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    return o_b, tl.program_id(1 - B_AXIS) * BLOCK_H


@triton.jit
def _load_rows(p, s, p2, s2, split, o_m, m_m, o_c, m_c, TWO_SOURCES: tl.constexpr, CACHE: tl.constexpr):
    """Tile [rows o_m, columns o_c] of a row-major matrix (unit column stride) whose rows < split lie at p
    (row stride s) and, with TWO_SOURCES, rows >= split at p2 (row stride s2). CACHE: the loads' cache
    modifier (".cg" skips the L1 for data that other programs of the same launch wrote)."""
    if TWO_SOURCES:
        m_1 = m_m & (o_m < split)
        m_2 = m_m & (o_m >= split)
        b = tl.load(p + o_m[:, None] * s + o_c[None, :], mask=m_1[:, None] & m_c[None, :], other=0.0,
                    cache_modifier=CACHE)
        b += tl.load(p2 + o_m[:, None] * s2 + o_c[None, :], mask=m_2[:, None] & m_c[None, :], other=0.0)
    else:
        b = tl.load(p + o_m[:, None] * s + o_c[None, :], mask=m_m[:, None] & m_c[None, :], other=0.0,
                    cache_modifier=CACHE)
    return b


@triton.jit
def _dot_acc(a, b, acc, ACC: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """acc + a @ b, accumulated in ACC. UPCAST_DOT feeds accumulator-dtype operands to tl.dot (needed under the
    interpreter, where bf16 dots are wrong); DOT_PRECISION is "ieee" or "tf32" for fp32 operands."""
    if UPCAST_DOT:
        a = a.to(ACC)
        b = b.to(ACC)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)


@triton.jit
def _zeros(N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """N zero [BLOCK_M, BLOCK_N] accumulators, as a tuple."""
    out = ()
    for _ in tl.static_range(N):
        out = out + (tl.zeros((BLOCK_M, BLOCK_N), ACC), )
    return out


@triton.jit
def _kept(p_z, o_b, m_b, RESET: tl.constexpr):
    """The rows of ``m_b`` whose state at t-1 flows into step t: all of them, or, with RESET, those whose flag at
    ``p_z`` (this step's rows: a uint8 per row, 1 where the row starts afresh) is 0. The state of the others reads
    as zeros, for h and c, so that nothing before the reset reaches step t, nor any gradient the other way."""
    if RESET:
        m_b = m_b & (tl.load(p_z + o_b, mask=m_b, other=0) == 0)
    return m_b


@triton.jit
def _load_tile(p, o_rows, s_row, o_h, m, ACC: tl.constexpr):
    """Tile [o_rows, o_h] of a row-major matrix (row stride s_row), in ACC."""
    return tl.load(p + o_rows[:, None] * s_row + o_h[None, :], mask=m, other=0.0).to(ACC)


@triton.jit
def _store_tile(p, o_rows, s_row, o_h, m, value):
    tl.store(p + o_rows[:, None] * s_row + o_h[None, :], value.to(p.dtype.element_ty), mask=m)


@triton.jit
def _load_gates(p, o_rows, s_row, o_h, m, H, N: tl.constexpr, ACC: tl.constexpr):
    """The N-tuple of the [o_rows, o_h] tiles of gates 0..N-1 of a [., N*H] matrix (row stride s_row; gate k's
    columns k*H + o_h), in ACC: a step's input pre-activations (N = G) or saved activations (N = NS)."""
    out = ()
    for k in tl.static_range(N):
        out = out + (tl.load(p + o_rows[:, None] * s_row + k * H + o_h[None, :], mask=m, other=0.0).to(ACC), )
    return out


@triton.jit
def _store_gates(p, o_rows, s_row, o_h, m, H, values, N: tl.constexpr):
    """Store the N-tuple ``values`` as gates 0..N-1 of a [., N*H] matrix (the layout of ``_load_gates``)."""
    for k in tl.static_range(N):
        tl.store(p + o_rows[:, None] * s_row + k * H + o_h[None, :], values[k].to(p.dtype.element_ty), mask=m)


@triton.jit
def _wt_block(p_w, gate, H, s_wr, s_wc, o_k, m_k, o_h, m_h, CACHE: tl.constexpr):
    """[o_k, o_h] block of W[gate]^T (rows gate*H + o_h of a [G*H, K] W, columns o_k): the forward's operand.
    CACHE ".ca" where the same program reads the block again at every step (streamed W): it may then stay in the
    SM's L1, where the pipelined loads would otherwise be cp.async.cg, which bypasses it."""
    return tl.load(p_w + (gate * H + o_h[None, :]) * s_wr + o_k[:, None] * s_wc, mask=m_k[:, None] & m_h[None, :],
                   other=0.0, cache_modifier=CACHE)


@triton.jit
def _w_block(p_w, s_wr, s_wc, o_r, m_r, o_h, m_h, CACHE: tl.constexpr):
    """[o_r, o_h] block of W (rows o_r, columns o_h): the backward's operand (CACHE as in ``_wt_block``)."""
    return tl.load(p_w + o_r[:, None] * s_wr + o_h[None, :] * s_wc, mask=m_r[:, None] & m_h[None, :], other=0.0,
                   cache_modifier=CACHE)


@triton.jit
def _fused_wt_block(p_w, H, s_wr, s_wc, h_first, o_k, m_k, G: tl.constexpr, BLOCK_H: tl.constexpr,
                    CACHE: tl.constexpr):
    """[o_k, GP * BLOCK_H] block of W^T with the G gates of the hidden slice h_first... side by side (column
    g * BLOCK_H + u: W row g * H + h_first + u; GP = next_pow2(G), GRU's padding gate zeros), so that one dot
    computes every gate of the slice (``_split_gates`` parts the result)."""
    o_j = tl.arange(0, _pow2_gates(G) * BLOCK_H)
    gate = o_j // BLOCK_H
    unit = h_first + o_j % BLOCK_H
    return tl.load(p_w + (gate * H + unit)[None, :] * s_wr + o_k[:, None] * s_wc,
                   mask=m_k[:, None] & ((gate < G) & (unit < H))[None, :], other=0.0, cache_modifier=CACHE)


@triton.jit
def _held_fwd(p_w, H, K, s_wr, s_wc, h_first, G: tl.constexpr, KP: tl.constexpr, BLOCK_B: tl.constexpr,
              BLOCK_H: tl.constexpr):
    """The W_hh^T slice a resident forward of BLOCK_B-row tiles holds for the whole sequence (loaded once): a tuple
    of K blocks of ``_held_block(KP, BLOCK_B)`` rows, each a ``_fused_wt_block``."""
    KB: tl.constexpr = _held_block(KP, BLOCK_B)
    out = ()
    for kb in tl.static_range(KP // KB):
        o_k = kb * KB + tl.arange(0, KB)
        out = out + (_fused_wt_block(p_w, H, s_wr, s_wc, h_first, o_k, o_k < K, G, BLOCK_H, ""), )
    return out


@triton.jit
def _held_bwd(p_w, H, s_wr, s_wc, o_h, m_h, G: tl.constexpr, HP: tl.constexpr, BLOCK_B: tl.constexpr):
    """The W_hh columns a resident backward of BLOCK_B-row tiles holds: per gate, a tuple of row blocks
    [RB, BLOCK_H] of ``_held_block(HP, BLOCK_B)`` rows (rows g*H + o_r, o_r < H)."""
    RB: tl.constexpr = _held_block(HP, BLOCK_B)
    out = ()
    for g in tl.static_range(G):
        blocks = ()
        for rb in tl.static_range(HP // RB):
            o_r = rb * RB + tl.arange(0, RB)
            blocks = blocks + (_w_block(p_w + g * H * s_wr, s_wr, s_wc, o_r, o_r < H, o_h, m_h, ""), )
        out = out + (blocks, )
    return out


@triton.constexpr_function
def held_rows(block_b):
    """The most rows of a held block for batch tiles of ``block_b`` rows: 256 up to 16 rows, 128 for taller tiles.

    Each is the one whose builds keep the held slice in shared memory without spills for its tiles (sm_90a,
    ``python -m bench.resources --dispatch``, bf16/fp16, every cell at H 256..1536, Triton 3.6 and 3.9): the 32-row
    tiles (B=64 at H=768 and 1024) spilled with 256-row blocks (LSTM's forward at H=768: 136 B, Triton 3.6) and with
    64-row ones (GRU's forward and RNN's backward under Triton 3.9's 80-register heuristic: 8-32 B); the 16-row
    tiles spilled with 64-row blocks (RNN's forward at H=1024 under Triton 3.6's 64-register heuristic, 24 B; LSTM's
    and GRU's at 3.9's 128, 8-24 B) and with 128-row ones. (Lifting the heuristics with ``maxnreg`` does not help:
    ptxas then fills the 255 registers with the held blocks and spills.) A constexpr function: the kernels and the
    launcher (``autotune.spaces.held_width``) apply the same rule."""
    return 256 if block_b <= 16 else 128


@triton.constexpr_function
def _held_block(width, block_b):
    """The rows of one held block of a reduction ``width`` wide, for batch tiles of ``block_b`` rows: all of it up
    to ``held_rows(block_b)`` (a power of two), else that many (the launcher makes ``width`` a multiple:
    ``autotune.spaces.held_width``)."""
    rows = held_rows(block_b)
    return width if width <= rows else rows


@triton.constexpr_function
def _pow2_gates(gates):
    """G rounded up to a power of two (tensor shapes must be): GRU's 3 gates travel as 4."""
    return triton.next_power_of_2(gates)


@triton.jit
def _split_gates(acc, G: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """The G-tuple of [BLOCK_B, BLOCK_H] gate tiles of a [BLOCK_B, GP * BLOCK_H] fused-gate result (gate g's
    columns g * BLOCK_H ...; ``_held_fwd``'s layout)."""
    if G == 1:
        return (acc, )
    elif G == 2:
        lo, hi = tl.split(tl.permute(tl.reshape(acc, (BLOCK_B, 2, BLOCK_H)), (0, 2, 1)))
        return lo, hi
    else:
        # [B, a, b, H] with gate 2a + b; split takes the last axis: b first, then a.
        even, odd = tl.split(tl.permute(tl.reshape(acc, (BLOCK_B, 2, 2, BLOCK_H)), (0, 3, 1, 2)))
        g0, g2 = tl.split(even)
        g1, g3 = tl.split(odd)
        if G == 3:
            return g0, g1, g2
        else:
            return g0, g1, g2, g3


@triton.jit
def _gate_biases(p_b, H, o_h, m_h, ACC: tl.constexpr, G: tl.constexpr):
    """The G-tuple of b[g*H + o_h] as [1, BLOCK_H] rows (what a resident program holds)."""
    out = ()
    for g in tl.static_range(G):
        out = out + (_gate_bias(p_b, g, H, o_h, m_h, ACC), )
    return out


@triton.jit
def _gate_bias(p_b, gate, H, o_h, m_h, ACC: tl.constexpr):
    return tl.load(p_b + gate * H + o_h, mask=m_h, other=0.0).to(ACC)[None, :]


@triton.jit
def _add_biases(r, b, p_b, H, o_h, m_h, ACC: tl.constexpr, G: tl.constexpr, HELD: tl.constexpr):
    """r[g] + b[g*H + o_h] for the G gates: the held rows ``b`` (HELD, ``_gate_biases``) or each read here just
    before its add (one row live at a time)."""
    out = ()
    for g in tl.static_range(G):
        if HELD:
            b_g = b[g]
        else:
            b_g = _gate_bias(p_b, g, H, o_h, m_h, ACC)
        out = out + (r[g] + b_g, )
    return out


# ---- the recurrent matmuls -------------------------------------------------------------------------------------


@triton.jit
def _gates_block(r, p_a, s_a, p_a2, s_a2, split, o_b, m_b, o_k, m_k, w, p_w, s_wr, s_wc, o_h, m_h, H,
                 ACC: tl.constexpr, G: tl.constexpr, TWO_SOURCES: tl.constexpr, HELD: tl.constexpr,
                 UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr):
    """r[g] + A[o_b, o_k] @ W[g]^T[o_k, o_h] for the G gates: the block of A (``_load_rows``) is loaded once for all
    of them. The W block is the held w[g] (HELD) or read here, just before its dot, so that one gate's block is
    live at a time (loading all G first kept them all in shared memory and registers at once)."""
    a = _load_rows(p_a, s_a, p_a2, s_a2, split, o_b, m_b, o_k, m_k, TWO_SOURCES, CACHE)
    out = ()
    for g in tl.static_range(G):
        if HELD:
            w_g = w[g]
        else:
            w_g = _wt_block(p_w, g, H, s_wr, s_wc, o_k, m_k, o_h, m_h, ".ca")
        out = out + (_dot_acc(a, w_g, r[g], ACC, UPCAST_DOT, DOT_PRECISION), )
    return out


@triton.jit
def _gates_matmul(p_a, s_a, p_a2, s_a2, split, o_b, m_b, p_w, s_wr, s_wc, o_h, m_h, H, K, w,
                  ACC: tl.constexpr, G: tl.constexpr, TWO_SOURCES: tl.constexpr, HELD: tl.constexpr,
                  BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, KP: tl.constexpr,
                  UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr):
    """The G-tuple r[g] = A @ W[g*H + o_h]^T ([BLOCK_B, BLOCK_H] each) for rows o_b of A ([., K], as in
    ``_load_rows``; CACHE its loads' modifier): h_{t-1} with W = W_hh ([G*H, K]), or x_t with W = W_ih.

    HELD: ``w`` is the G-tuple of W[g]^T blocks [KP, BLOCK_H] (KP >= K, masked; ``_held_fwd``) the caller keeps for
    the whole sequence, and the reduction is one block. Else W is streamed: K in BLOCK_K blocks, each block of A
    loaded once for all gates and the G blocks of W re-read (".ca": the same program reads them at every step)."""
    r = _zeros(G, BLOCK_B, BLOCK_H, ACC)
    if HELD:
        KB: tl.constexpr = w[0].shape[0]  # the rows of a held block (``_held_fwd``)
        acc = tl.zeros((BLOCK_B, _pow2_gates(G) * BLOCK_H), ACC)
        for kb in tl.static_range(KP // KB):
            o_k = kb * KB + tl.arange(0, KB)
            a = _load_rows(p_a, s_a, p_a2, s_a2, split, o_b, m_b, o_k, o_k < K, TWO_SOURCES, CACHE)
            acc = _dot_acc(a, w[kb], acc, ACC, UPCAST_DOT, DOT_PRECISION)
        r = _split_gates(acc, G, BLOCK_B, BLOCK_H)
    else:
        for k0 in range(0, K, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            r = _gates_block(r, p_a, s_a, p_a2, s_a2, split, o_b, m_b, o_k, o_k < K, None, p_w, s_wr, s_wc, o_h, m_h,
                             H, ACC, G, TWO_SOURCES, False, UPCAST_DOT, DOT_PRECISION, CACHE)
    return r


@triton.jit
def _dh_block(dh, p_g, s_g, o_b, m_next, o_k, m_k, w, p_w, s_wr, s_wc, o_h, m_h, ACC: tl.constexpr,
              HELD: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr):
    """dh + dHp_{t+1}[o_b, o_k] @ W_hh[o_k, o_h] (rows o_b of dHp_{t+1} at p_g, row stride s_g; rows not in m_next
    add 0); the W block is the held ``w`` (HELD) or read here (".ca")."""
    g = _load_rows(p_g, s_g, p_g, s_g, 0, o_b, m_next, o_k, m_k, False, CACHE)
    if not HELD:
        w = _w_block(p_w, s_wr, s_wc, o_k, m_k, o_h, m_h, ".ca")
    return _dot_acc(g, w, dh, ACC, UPCAST_DOT, DOT_PRECISION)


@triton.jit
def _dh_matmul(dh, p_next, s_dn, o_b, m_next, p_w, s_wr, s_wc, o_h, m_h, H, w, ACC: tl.constexpr, G: tl.constexpr,
               HELD: tl.constexpr, BLOCK_K: tl.constexpr, HP: tl.constexpr, UPCAST_DOT: tl.constexpr,
               DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr):
    """dh + dHp_{t+1} @ W_hh[:, o_h], the backward's recurrent matmul over all G*H gate rows (dHp_{t+1}: [., G*H] at
    p_next, row stride s_dn; CACHE the modifier of its loads), accumulated into dh.

    HELD: ``w`` is the G-tuple of W_hh's column blocks [HP, BLOCK_H] (rows g*H + o_r, o_r < H <= HP; ``_held_bwd``)
    the caller keeps for the whole sequence: one block per gate. Else W_hh is streamed: the G*H rows in BLOCK_K
    blocks (crossing gate boundaries: dHp's columns and W_hh's rows are both gate-major), re-read with ".ca".

    The dots accumulate into dh itself, as the resident kernel always did (the step and batch-tiled kernels summed
    into zeros and added dh after): one accumulator live in the loop instead of two. In the sm_90a builds of
    ``bench.resources`` that saves up to 16 registers in most step and streamed backwards and removes their spills
    in some (Triton 3.6: fp32 RNN, fp64 LSTM), at the price of 16-20 registers in Triton 3.9's fp64 16-row step
    backward (GRU; LSTM there trades them for its 12 bytes of spills)."""
    if HELD:
        RB: tl.constexpr = w[0][0].shape[0]  # the rows of a held block (``_held_bwd``)
        for g in tl.static_range(G):
            for rb in tl.static_range(HP // RB):
                o_r = rb * RB + tl.arange(0, RB)
                dh = _dh_block(dh, p_next + g * H, s_dn, o_b, m_next, o_r, o_r < H, w[g][rb], p_w, s_wr, s_wc, o_h,
                               m_h, ACC, True, UPCAST_DOT, DOT_PRECISION, CACHE)
    else:
        for k0 in range(0, G * H, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            dh = _dh_block(dh, p_next, s_dn, o_b, m_next, o_k, o_k < G * H, None, p_w, s_wr, s_wc, o_h, m_h, ACC,
                           False, UPCAST_DOT, DOT_PRECISION, CACHE)
    return dh


# ---- one tile of a step -----------------------------------------------------------------------------------------


@triton.jit
def _input_gates(p_x, s_x, o_b, m_b, m, p_wih, s_wir, s_wic, p_bih, o_h, m_h, h_first, H, I,
                 ACC: tl.constexpr, G: tl.constexpr, HAS_BIAS: tl.constexpr, FUSE_INPUT: tl.constexpr,
                 FUSED_GATES: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                 UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """The G-tuple of input pre-activations: loaded from xp_t ([., G*H]) or, with FUSE_INPUT, computed as
    x_t @ W_ih[g]^T + b_ih[g] (x_t: [., I]; W_ih streamed in BLOCK_K blocks: with FUSED_GATES, the resident
    kernel's, one dot per block over the G gates of the slice at h_first side by side, ``_fused_wt_block``; else a
    dot per gate)."""
    if FUSE_INPUT and FUSED_GATES:
        acc = tl.zeros((BLOCK_B, _pow2_gates(G) * BLOCK_H), ACC)
        for k0 in range(0, I, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            a = _load_rows(p_x, s_x, p_x, s_x, 0, o_b, m_b, o_k, o_k < I, False, "")
            acc = _dot_acc(a, _fused_wt_block(p_wih, H, s_wir, s_wic, h_first, o_k, o_k < I, G, BLOCK_H, ".ca"), acc,
                           ACC, UPCAST_DOT, DOT_PRECISION)
        x = _split_gates(acc, G, BLOCK_B, BLOCK_H)
        if HAS_BIAS:
            x = _add_biases(x, None, p_bih, H, o_h, m_h, ACC, G, False)
    elif FUSE_INPUT:
        x = _gates_matmul(p_x, s_x, p_x, s_x, 0, o_b, m_b, p_wih, s_wir, s_wic, o_h, m_h, H, I, None, ACC, G, False,
                          False, BLOCK_B, BLOCK_H, BLOCK_K, None, UPCAST_DOT, DOT_PRECISION, "")
        if HAS_BIAS:
            x = _add_biases(x, None, p_bih, H, o_h, m_h, ACC, G, False)
    else:
        x = _load_gates(p_x, o_b, s_x, o_h, m, H, G, ACC)
    return x


@triton.jit
def _fwd_recurrent(p_h_prev, s_hp, p_h0, s_h0, p_w, s_wr, s_wc, p_bhh, B_prev, H, K, o_b, o_h, m_b, m_h, w, b,
                   ACC: tl.constexpr, G: tl.constexpr, HAS_BIAS: tl.constexpr, TWO_SOURCES: tl.constexpr,
                   RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                   KP: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr):
    """The G-tuple of a forward tile's recurrent pre-activations h_{t-1} @ W_hh[g]^T + b_hh[g] (W_hh and b_hh held,
    ``w`` / ``b``, RESIDENT, or read here): the forward's first part, as ``_bwd_dh`` is the backward's."""
    r = _gates_matmul(p_h_prev, s_hp, p_h0, s_h0, B_prev, o_b, m_b, p_w, s_wr, s_wc, o_h, m_h, H, K, w, ACC, G,
                      TWO_SOURCES, RESIDENT, BLOCK_B, BLOCK_H, BLOCK_K, KP, UPCAST_DOT, DOT_PRECISION, CACHE)
    if HAS_BIAS:
        r = _add_biases(r, b, p_bhh, H, o_h, m_h, ACC, G, RESIDENT)
    return r


@triton.jit
def _fwd_epilogue(
    r, x, c_prev, p_h_prev, s_hp, p_h0, s_h0, p_c_prev, s_cp, p_c0, s_c0, p_h, s_h, p_c, p_save, B_prev, H,
    o_b, o_h, m_b, m_h, m,
    ACC: tl.constexpr, CELL: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr, READS_H: tl.constexpr,
    SAVE: tl.constexpr, TWO_SOURCES: tl.constexpr, RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr, CACHE: tl.constexpr,
):
    """The rest of a forward tile, given its G-tuples of recurrent (``r``, with b_hh) and input (``x``)
    pre-activations: the state at t-1 (h_{t-1}: READS_H; c_{t-1}: HAS_C, given (RESIDENT) or loaded, rows < B_prev
    at p_c_prev and the others at p_c0, as h_{t-1}; rows outside ``m_b`` read as zeros), the cell, and the stores
    (masked by ``m``) of h_t, c_t (HAS_C) and the saved activations (SAVE). Returns c_t."""
    h_prev = tl.zeros((BLOCK_B, BLOCK_H), ACC)
    if READS_H:
        h_prev = _load_rows(p_h_prev, s_hp, p_h0, s_h0, B_prev, o_b, m_b, o_h, m_h, TWO_SOURCES, CACHE).to(ACC)
    if not RESIDENT:
        c_prev = tl.zeros((BLOCK_B, BLOCK_H), ACC)
        if HAS_C:
            c_prev = _load_rows(p_c_prev, s_cp, p_c0, s_c0, B_prev, o_b, m_b, o_h, m_h, TWO_SOURCES, "").to(ACC)

    h, c, saved = cell_fwd(CELL, x, r, h_prev, c_prev)

    _store_tile(p_h, o_b, s_h, o_h, m, h)
    if HAS_C:
        _store_tile(p_c, o_b, H, o_h, m, c)
    if SAVE:
        _store_gates(p_save, o_b, NS * H, o_h, m, H, saved, NS)
    return c


@triton.jit
def _fwd_tile(
    p_x, s_x, p_wih, s_wir, s_wic, p_bih, p_h_prev, s_hp, p_h0, s_h0, p_c_prev, s_cp, p_c0, s_c0,
    p_w, s_wr, s_wc, p_bhh, p_h, s_h, p_c, p_save, B_prev, H, K, I, o_b, o_h, m_b, m_h, m, m_prev, w, b, c_prev,
    ACC: tl.constexpr, CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr,
    READS_H: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE: tl.constexpr, FUSE_INPUT: tl.constexpr,
    TWO_SOURCES: tl.constexpr, RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr, KP: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    CACHE: tl.constexpr,
):
    """The forward of one [rows o_b, hidden units o_h] tile of one step (arguments: ``_step_fwd_kernel``; CACHE:
    the modifier of the loads of h_{t-1}, ".cg" where other programs of the same launch wrote it): the recurrent
    and input gates, then ``_fwd_epilogue``. Returns c_t. ``m_prev``: the rows whose state at t-1 is read (``_kept``:
    ``m_b``, or without the rows that start afresh at this step, whose h_{t-1} and c_{t-1} read as zeros).

    RESIDENT: ``w`` and ``b`` are the G-tuples of the held W_hh^T blocks ([KP, BLOCK_H]) and b_hh rows (HAS_BIAS;
    else None), and ``c_prev`` is c_{t-1} (the caller keeps c in registers). Else they are None: W_hh and b_hh are
    read here and c_{t-1} is loaded."""
    r = _fwd_recurrent(p_h_prev, s_hp, p_h0, s_h0, p_w, s_wr, s_wc, p_bhh, B_prev, H, K, o_b, o_h, m_prev, m_h, w,
                       b, ACC, G, HAS_BIAS, TWO_SOURCES, RESIDENT, BLOCK_B, BLOCK_H, BLOCK_K, KP, UPCAST_DOT,
                       DOT_PRECISION, CACHE)
    x = _input_gates(p_x, s_x, o_b, m_b, m, p_wih, s_wir, s_wic, p_bih, o_h, m_h, 0, H, I, ACC, G, HAS_BIAS,
                     FUSE_INPUT, False,
                     BLOCK_B, BLOCK_H, BLOCK_K, UPCAST_DOT, DOT_PRECISION)
    return _fwd_epilogue(r, x, c_prev, p_h_prev, s_hp, p_h0, s_h0, p_c_prev, s_cp, p_c0, s_c0, p_h, s_h, p_c, p_save,
                         B_prev, H, o_b, o_h, m_prev, m_h, m, ACC, CELL, NS, HAS_C, READS_H, SAVE, TWO_SOURCES,
                         RESIDENT, BLOCK_B, BLOCK_H, CACHE)


@triton.jit
def _bwd_dh(p_dhp_next, s_dn, p_w, s_wr, s_wc, p_dy, s_dy, p_dh, m_next, H, o_b, o_h, m_h, m, w, carry_h,
            ACC: tl.constexpr, G: tl.constexpr, HAS_NEXT: tl.constexpr, RESIDENT: tl.constexpr,
            BLOCK_K: tl.constexpr, HP: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
            CACHE: tl.constexpr):
    """(dh, carry_h) of a backward tile: dh = dL/dh_t = carry_h + dy_t + dHp_{t+1} @ W_hh (HAS_NEXT; the rows of
    dHp_{t+1} in ``m_next``: those that run the next step and, with resets, do not start afresh there), with the
    carry given (RESIDENT) or loaded from p_dh, and the W_hh block held (``w``, RESIDENT) or streamed."""
    if not RESIDENT:
        carry_h = _load_tile(p_dh, o_b, H, o_h, m, ACC)
    dh = carry_h + _load_tile(p_dy, o_b, s_dy, o_h, m, ACC)
    if HAS_NEXT:
        dh = _dh_matmul(dh, p_dhp_next, s_dn, o_b, m_next, p_w, s_wr, s_wc, o_h, m_h, H, w, ACC, G, RESIDENT,
                        BLOCK_K, HP, UPCAST_DOT, DOT_PRECISION, CACHE)
    return dh, carry_h


@triton.jit
def _bwd_epilogue(
    dh, carry_h, carry_c, p_dh, p_dc, p_save, p_c, p_c_prev, s_cp, p_c0, s_c0, p_h_prev, s_hp, p_h0, s_h0,
    p_dhp, s_dhp, p_dxp, s_dxp, B_prev, H, o_b, o_h, m_b, m_h, m, m_prev,
    ACC: tl.constexpr, CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr,
    READS_H: tl.constexpr, SPLIT_DX: tl.constexpr, TWO_SOURCES: tl.constexpr, RESIDENT: tl.constexpr,
    RESET: tl.constexpr,
):
    """The rest of a backward tile, given dh (``_bwd_dh``): the saved activations and the state at t-1 and t
    (c: HAS_C, h_{t-1}: READS_H), the cell's gradients, the stores of dHp_t and dXp_t (SPLIT_DX) and the carries of
    step t-1 (dL/dh_{t-1}, dL/dc_{t-1}: their pointwise parts; zeros for dc without HAS_C), which it returns.
    RESIDENT: the carries of step t are given (rows outside m_b keep theirs); else dc is loaded from p_dc, and both
    carries are stored back to p_dh / p_dc (this tile's part only, in place). ``m_prev`` (``_kept``): the rows whose
    state at t-1 flowed into step t; with RESET the others read it as zeros and pass no gradient back to t-1."""
    saved = _load_gates(p_save, o_b, NS * H, o_h, m, H, NS, ACC)
    if not RESIDENT:
        carry_c = tl.zeros_like(dh)
        if HAS_C:
            carry_c = _load_tile(p_dc, o_b, H, o_h, m, ACC)
    c = tl.zeros_like(dh)
    c_prev = tl.zeros_like(dh)
    h_prev = tl.zeros_like(dh)
    if HAS_C:
        c = _load_tile(p_c, o_b, H, o_h, m, ACC)
        c_prev = _load_rows(p_c_prev, s_cp, p_c0, s_c0, B_prev, o_b, m_prev, o_h, m_h, TWO_SOURCES, "").to(ACC)
    if READS_H:
        h_prev = _load_rows(p_h_prev, s_hp, p_h0, s_h0, B_prev, o_b, m_prev, o_h, m_h, TWO_SOURCES, "").to(ACC)

    dx, dr, dh_prev, dc_prev = cell_bwd(CELL, dh, carry_c, saved, h_prev, c_prev, c)
    if RESET:
        dh_prev = tl.where(m_prev[:, None], dh_prev, 0.0)
        dc_prev = tl.where(m_prev[:, None], dc_prev, 0.0)

    _store_gates(p_dhp, o_b, s_dhp, o_h, m, H, dr, G)
    if SPLIT_DX:
        _store_gates(p_dxp, o_b, s_dxp, o_h, m, H, dx, G)
    if RESIDENT:
        carry_h = tl.where(m_b[:, None], dh_prev, carry_h)
        if HAS_C:
            carry_c = tl.where(m_b[:, None], dc_prev, carry_c)
    else:
        _store_tile(p_dh, o_b, H, o_h, m, dh_prev)
        carry_h = dh_prev
        if HAS_C:
            _store_tile(p_dc, o_b, H, o_h, m, dc_prev)
            carry_c = dc_prev
    return carry_h, carry_c


@triton.jit
def _bwd_tile(
    p_dhp_next, s_dn, p_w, s_wr, s_wc, p_dy, s_dy, p_dh, p_dc, p_save, p_c, p_c_prev, s_cp, p_c0, s_c0,
    p_h_prev, s_hp, p_h0, s_h0, p_dhp, s_dhp, p_dxp, s_dxp, B_prev, H, o_b, o_h, m_b, m_h, m, m_prev, m_next, w,
    carry_h, carry_c,
    ACC: tl.constexpr, CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr,
    READS_H: tl.constexpr, SPLIT_DX: tl.constexpr, HAS_NEXT: tl.constexpr, TWO_SOURCES: tl.constexpr,
    RESIDENT: tl.constexpr, RESET: tl.constexpr, BLOCK_K: tl.constexpr, HP: tl.constexpr, UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """The backward of one [rows o_b, hidden units o_h] tile of one step (arguments: ``_step_bwd_kernel``; CACHE:
    the modifier of the loads of dHp_{t+1}, ".cg" where other programs of the same launch wrote it):
    ``_bwd_dh`` then ``_bwd_epilogue``. Returns the carries of step t-1. ``m_prev`` / ``m_next``: the rows whose
    state at t-1 flows into step t, and the rows of dHp_{t+1} to read (``_kept``; RESET: there are resets).

    RESIDENT: ``w`` is the G-tuple of held W_hh column blocks ([HP, BLOCK_H]), carry_h / carry_c the carries of
    step t (the caller keeps them in registers). Else they are None: W_hh is read here, and the carries are loaded
    from and stored back to p_dh / p_dc."""
    dh, carry_h = _bwd_dh(p_dhp_next, s_dn, p_w, s_wr, s_wc, p_dy, s_dy, p_dh, m_next, H, o_b, o_h, m_h, m, w,
                          carry_h, ACC, G, HAS_NEXT, RESIDENT, BLOCK_K, HP, UPCAST_DOT, DOT_PRECISION, CACHE)
    return _bwd_epilogue(dh, carry_h, carry_c, p_dh, p_dc, p_save, p_c, p_c_prev, s_cp, p_c0, s_c0, p_h_prev, s_hp,
                         p_h0, s_h0, p_dhp, s_dhp, p_dxp, s_dxp, B_prev, H, o_b, o_h, m_b, m_h, m, m_prev, ACC, CELL,
                         G, NS, HAS_C, READS_H, SPLIT_DX, TWO_SOURCES, RESIDENT, RESET)
