"""One timestep of a recurrent layer: fused forward and backward kernels.

Legend: B batch (rows active at this step), H hidden, K width of h_{t-1} (H, or proj_size), I input size,
G gates of the cell (LSTM 4, GRU 3, RNN 1), NS saved activations per hidden unit (LSTM 4, GRU 4, RNN 1).

Grid of both kernels: (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)). A program owns a batch tile and a slice of
hidden units and computes ALL gates of that slice, so the cell's pointwise update stays in registers.

Forward, step t:    x_k = xp_t[k]   or, with FUSE_INPUT (single steps), x_t @ W_ih[k]^T + b_ih[k]
                    r_k = h_{t-1} @ W_hh[k*H:(k+1)*H]^T + b_hh[k]     (k < G, one pass over K for all gates)
                    h_t, c_t, saved = cell_fwd(x, r, h_{t-1}, c_{t-1})
Backward, step t:   dh  = dy_t + carry_h + dHp_{t+1} @ W_hh          (matmul over all G*H gate rows)
                    dXp_t, dHp_t, carry_h, carry_c = cell_bwd(dh, carry_c, saved, ...)
where dHp is the gradient of the recurrent pre-activations (it differs from dXp only in GRU's n gate) and
the carries hold the pointwise parts of dL/dh_{t-1}, dL/dc_{t-1}. A program reads and rewrites only its own
tile of the carries, so they are updated in place.

Batches may shrink from step to step (packed sequences) and, in reverse, sequences start at their own last
element: rows < B_prev of h_{t-1}/c_{t-1} come from the previous step, rows >= B_prev from the initial state
(TWO_SOURCES; with a single source the launcher passes whichever holds every row). In the backward, rows
>= B_next of dHp_{t+1} do not exist and contribute nothing.

Accumulation is fp32 (fp64 for fp64 tensors); h is stored in the tensor dtype, c and the saved activations
in the accumulator dtype.
"""

import triton
import triton.language as tl

from .cells import CELL_GRU, CELL_LSTM, cell_bwd, cell_fwd


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
def _matmul_tile(p_a, s_a, p_a2, s_a2, split, o_m, m_m, p_b, s_bk, s_bn, o_n, m_n, K,
                 ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 TWO_SOURCES: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
                 CACHE: tl.constexpr):
    """acc[m, n] = sum_k A[m, k] * B[k, n] for rows o_m of A (see _load_rows; CACHE: its loads' modifier) and
    columns o_n of B.

    The backward's recurrent matmul (B = W_hh). UPCAST_DOT feeds
    accumulator-dtype operands to tl.dot (needed under the interpreter, where bf16 dots are wrong);
    DOT_PRECISION is "ieee" or "tf32" for fp32 operands.
    """
    acc = tl.zeros((BLOCK_M, BLOCK_N), ACC)
    for k0 in range(0, K, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < K
        b_a = _load_rows(p_a, s_a, p_a2, s_a2, split, o_m, m_m, o_k, m_k, TWO_SOURCES, CACHE)
        b_b = tl.load(p_b + o_k[:, None] * s_bk + o_n[None, :] * s_bn, mask=m_k[:, None] & m_n[None, :],
                      other=0.0, cache_modifier=".ca")  # W_hh: as in _w_gate_block
        acc = _dot_acc(b_a, b_b, acc, ACC, UPCAST_DOT, DOT_PRECISION)
    return acc


@triton.jit
def _dot_acc(a, b, acc, ACC: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """acc + a @ b (acc None: a @ b), accumulated in ACC (UPCAST_DOT: on ACC operands)."""
    if UPCAST_DOT:
        a = a.to(ACC)
        b = b.to(ACC)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)


@triton.jit
def _tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's batch rows (int64: B*T*G*H may pass 2**31) and hidden units, with their masks."""
    o_b = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    o_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m_b = o_b < B
    m_h = o_h < H
    return o_b, o_h, m_b, m_h, m_b[:, None] & m_h[None, :]


@triton.jit
def _load_gate(p, o_rows, s_row, o_h, m, gate, H, ACC: tl.constexpr):
    return tl.load(p + o_rows[:, None] * s_row + gate * H + o_h[None, :], mask=m, other=0.0).to(ACC)


@triton.jit
def _store_gate(p, o_rows, s_row, o_h, m, gate, H, value):
    tl.store(p + o_rows[:, None] * s_row + gate * H + o_h[None, :], value.to(p.dtype.element_ty), mask=m)


@triton.jit
def _load_saved(p_save, o_b, o_h, m, H, NS: tl.constexpr, ACC: tl.constexpr):
    """The NS activations the forward saved for a tile (rows o_b of [., NS*H]); unused slots are zeros."""
    s0 = _load_gate(p_save, o_b, NS * H, o_h, m, 0, H, ACC)
    s1 = tl.zeros_like(s0)
    s2 = tl.zeros_like(s0)
    s3 = tl.zeros_like(s0)
    if NS > 1:
        s1 = _load_gate(p_save, o_b, NS * H, o_h, m, 1, H, ACC)
        s2 = _load_gate(p_save, o_b, NS * H, o_h, m, 2, H, ACC)
        s3 = _load_gate(p_save, o_b, NS * H, o_h, m, 3, H, ACC)
    return s0, s1, s2, s3


@triton.jit
def _store_saved(p_save, o_b, o_h, m, H, s0, s1, s2, s3, NS: tl.constexpr):
    _store_gate(p_save, o_b, NS * H, o_h, m, 0, H, s0)
    if NS > 1:
        _store_gate(p_save, o_b, NS * H, o_h, m, 1, H, s1)
        _store_gate(p_save, o_b, NS * H, o_h, m, 2, H, s2)
        _store_gate(p_save, o_b, NS * H, o_h, m, 3, H, s3)


@triton.jit
def _store_gate_grads(p_dhp, s_dhp, p_dxp, s_dxp, o_b, o_h, m, H, d0, d1, d2, d3, dr2, G: tl.constexpr,
                      SPLIT_DX: tl.constexpr):
    """Store a tile's gate gradients: dHp (recurrent pre-activations; GRU's n gate gets dr2) and, SPLIT_DX,
    dXp (input pre-activations, GRU only; otherwise dXp = dHp)."""
    _store_gate(p_dhp, o_b, s_dhp, o_h, m, 0, H, d0)
    if G > 1:
        _store_gate(p_dhp, o_b, s_dhp, o_h, m, 1, H, d1)
    if G > 2:
        _store_gate(p_dhp, o_b, s_dhp, o_h, m, 2, H, dr2)
    if G > 3:
        _store_gate(p_dhp, o_b, s_dhp, o_h, m, 3, H, d3)
    if SPLIT_DX:
        _store_gate(p_dxp, o_b, s_dxp, o_h, m, 0, H, d0)
        _store_gate(p_dxp, o_b, s_dxp, o_h, m, 1, H, d1)
        _store_gate(p_dxp, o_b, s_dxp, o_h, m, 2, H, d2)


@triton.jit
def _input_gates(p_x, s_x, o_b, m_b, m, p_wih, s_wir, s_wic, p_bih, o_h, m_h, H, I,
                 ACC: tl.constexpr, HAS_BIAS: tl.constexpr, FUSE_INPUT: tl.constexpr, G: tl.constexpr,
                 BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                 UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Input pre-activations of the G gates (unused slots are zeros): loaded from xp_t or, with FUSE_INPUT,
    computed as x_t @ W_ih[g]^T + b_ih[g]."""
    if FUSE_INPUT:
        x0, x1, x2, x3 = _gates_matmul(p_x, s_x, p_x, s_x, 0, o_b, m_b, p_wih, s_wir, s_wic, o_h, m_h, H, I, ACC,
                                       False, G, BLOCK_B, BLOCK_H, BLOCK_K, UPCAST_DOT, DOT_PRECISION, "")
        x0, x1, x2, x3 = _add_biases(p_bih, H, o_h, m_h, x0, x1, x2, x3, ACC, HAS_BIAS, G)
    else:
        x0 = _load_gate(p_x, o_b, s_x, o_h, m, 0, H, ACC)
        x1 = tl.zeros_like(x0)
        x2 = tl.zeros_like(x0)
        x3 = tl.zeros_like(x0)
        if G > 1:
            x1 = _load_gate(p_x, o_b, s_x, o_h, m, 1, H, ACC)
        if G > 2:
            x2 = _load_gate(p_x, o_b, s_x, o_h, m, 2, H, ACC)
        if G > 3:
            x3 = _load_gate(p_x, o_b, s_x, o_h, m, 3, H, ACC)
    return x0, x1, x2, x3


@triton.jit
def _w_gate_block(p_w, gate, H, s_wr, s_wc, o_k, m_k, o_h, m_h):
    """[o_k, o_h] block of W[gate]^T (rows gate*H + o_h of W, columns o_k). ".ca": weight blocks are read again
    at every step by the same program (persistent kernels), so they may stay in the SM's L1; the pipelined
    loads would otherwise be cp.async.cg, which bypasses it."""
    return tl.load(p_w + (gate * H + o_h[None, :]) * s_wr + o_k[:, None] * s_wc, mask=m_k[:, None] & m_h[None, :],
                   other=0.0, cache_modifier=".ca")


@triton.jit
def _gates_matmul(p_a, s_a, p_a2, s_a2, split, o_b, m_b, p_w, s_wr, s_wc, o_h, m_h, H, K,
                  ACC: tl.constexpr, TWO_SOURCES: tl.constexpr, G: tl.constexpr, BLOCK_B: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST_DOT: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr):
    """r_g = A @ W[g*H + o_h]^T for the G gates in one pass over K: each block of A (rows o_b as in _load_rows,
    CACHE its loads' modifier) is loaded once for all gates. A is h_{t-1} with W = W_hh, or x_t with W = W_ih.
    Unused slots are zeros."""
    r0 = tl.zeros((BLOCK_B, BLOCK_H), ACC)
    r1 = tl.zeros((BLOCK_B, BLOCK_H), ACC)
    r2 = tl.zeros((BLOCK_B, BLOCK_H), ACC)
    r3 = tl.zeros((BLOCK_B, BLOCK_H), ACC)
    for k0 in range(0, K, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < K
        a = _load_rows(p_a, s_a, p_a2, s_a2, split, o_b, m_b, o_k, m_k, TWO_SOURCES, CACHE)
        r0 = _dot_acc(a, _w_gate_block(p_w, 0, H, s_wr, s_wc, o_k, m_k, o_h, m_h), r0, ACC, UPCAST_DOT,
                      DOT_PRECISION)
        if G > 1:
            r1 = _dot_acc(a, _w_gate_block(p_w, 1, H, s_wr, s_wc, o_k, m_k, o_h, m_h), r1, ACC, UPCAST_DOT,
                          DOT_PRECISION)
        if G > 2:
            r2 = _dot_acc(a, _w_gate_block(p_w, 2, H, s_wr, s_wc, o_k, m_k, o_h, m_h), r2, ACC, UPCAST_DOT,
                          DOT_PRECISION)
        if G > 3:
            r3 = _dot_acc(a, _w_gate_block(p_w, 3, H, s_wr, s_wc, o_k, m_k, o_h, m_h), r3, ACC, UPCAST_DOT,
                          DOT_PRECISION)
    return r0, r1, r2, r3


@triton.jit
def _gate_bias(p_b, gate, H, o_h, m_h, ACC: tl.constexpr):
    """b[gate*H + o_h] as a [1, BLOCK_H] row."""
    return tl.load(p_b + gate * H + o_h, mask=m_h, other=0.0).to(ACC)[None, :]


@triton.jit
def _add_biases(p_b, H, o_h, m_h, r0, r1, r2, r3, ACC: tl.constexpr, HAS_BIAS: tl.constexpr, G: tl.constexpr):
    """r_g + b[g*H + o_h] for the G gates (HAS_BIAS; else r unchanged)."""
    if HAS_BIAS:
        r0 += _gate_bias(p_b, 0, H, o_h, m_h, ACC)
        if G > 1:
            r1 += _gate_bias(p_b, 1, H, o_h, m_h, ACC)
        if G > 2:
            r2 += _gate_bias(p_b, 2, H, o_h, m_h, ACC)
        if G > 3:
            r3 += _gate_bias(p_b, 3, H, o_h, m_h, ACC)
    return r0, r1, r2, r3


@triton.jit
def _fwd_tile(
    p_x, s_x, p_wih, s_wir, s_wic, p_bih, p_h_prev, s_hp, p_h0, s_h0, p_c_prev, s_cp, p_c0, s_c0,
    p_w, s_wr, s_wc, p_bhh, p_h, s_h, p_c, p_save, B_prev, H, K, I, o_b, o_h, m_b, m_h, m,
    ACC: tl.constexpr, CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_BIAS: tl.constexpr,
    SAVE: tl.constexpr, FUSE_INPUT: tl.constexpr, TWO_SOURCES: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """The forward of one [rows o_b, hidden units o_h] tile of one step (arguments: ``_step_fwd_kernel``; CACHE:
    the modifier of the loads of h_{t-1}, ".cg" where other programs of the same launch wrote it)."""
    r0, r1, r2, r3 = _gates_matmul(p_h_prev, s_hp, p_h0, s_h0, B_prev, o_b, m_b, p_w, s_wr, s_wc, o_h, m_h, H, K,
                                   ACC, TWO_SOURCES, G, BLOCK_B, BLOCK_H, BLOCK_K, UPCAST_DOT, DOT_PRECISION, CACHE)
    r0, r1, r2, r3 = _add_biases(p_bhh, H, o_h, m_h, r0, r1, r2, r3, ACC, HAS_BIAS, G)
    x0, x1, x2, x3 = _input_gates(p_x, s_x, o_b, m_b, m, p_wih, s_wir, s_wic, p_bih, o_h, m_h, H, I, ACC, HAS_BIAS,
                                  FUSE_INPUT, G, BLOCK_B, BLOCK_H, BLOCK_K, UPCAST_DOT, DOT_PRECISION)

    h_prev = tl.zeros_like(r0)
    c_prev = tl.zeros_like(r0)
    if CELL == CELL_GRU:
        h_prev = _load_rows(p_h_prev, s_hp, p_h0, s_h0, B_prev, o_b, m_b, o_h, m_h, TWO_SOURCES, CACHE).to(ACC)
    if CELL == CELL_LSTM:
        c_prev = _load_rows(p_c_prev, s_cp, p_c0, s_c0, B_prev, o_b, m_b, o_h, m_h, TWO_SOURCES, "").to(ACC)

    h, c, s0, s1, s2, s3 = cell_fwd(CELL, x0, x1, x2, x3, r0, r1, r2, r3, h_prev, c_prev)

    _store_gate(p_h, o_b, s_h, o_h, m, 0, H, h)
    if CELL == CELL_LSTM:
        _store_gate(p_c, o_b, H, o_h, m, 0, H, c)
    if SAVE:
        _store_saved(p_save, o_b, o_h, m, H, s0, s1, s2, s3, NS)


@triton.jit(do_not_specialize=["B", "B_prev"])
def _step_fwd_kernel(
    p_x, s_x,                # [B, G*H] input pre-activations xp_t, or [B, I] inputs x_t (FUSE_INPUT)
    p_wih, s_wir, s_wic,     # [G*H, I] W_ih (FUSE_INPUT)
    p_bih,                   # [G*H]    b_ih (FUSE_INPUT and HAS_BIAS)
    p_h_prev, s_hp,          # [B_prev, K] h_{t-1} of the rows that ran the previous step
    p_h0, s_h0,              # [B, K]   initial h, read for rows >= B_prev (TWO_SOURCES)
    p_c_prev, s_cp,          # [B_prev, H] c_{t-1} (LSTM)
    p_c0, s_c0,              # [B, H]   initial c, read for rows >= B_prev (LSTM, TWO_SOURCES)
    p_w, s_wr, s_wc,         # [G*H, K] W_hh
    p_bhh,                   # [G*H]    b_hh (HAS_BIAS)
    p_h, s_h,                # [B, H]   h_t (out; before the projection, if any)
    p_c,                     # [B, H]   c_t (out, LSTM), contiguous
    p_save,                  # [B, NS*H] saved activations (out, SAVE), accumulator dtype, contiguous; an
                             #          accumulator-dtype tensor in any case: it sets the accumulator dtype
    B, B_prev, H, K, I,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE: tl.constexpr,
    FUSE_INPUT: tl.constexpr, TWO_SOURCES: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_save.dtype.element_ty  # fp32, or fp64 for fp64 tensors
    o_b, o_h, m_b, m_h, m = _tile(B, H, BLOCK_B, BLOCK_H)
    _fwd_tile(p_x, s_x, p_wih, s_wir, s_wic, p_bih, p_h_prev, s_hp, p_h0, s_h0, p_c_prev, s_cp, p_c0, s_c0,
              p_w, s_wr, s_wc, p_bhh, p_h, s_h, p_c, p_save, B_prev, H, K, I, o_b, o_h, m_b, m_h, m,
              ACC, CELL, G, NS, HAS_BIAS, SAVE, FUSE_INPUT, TWO_SOURCES, BLOCK_B, BLOCK_H, BLOCK_K,
              UPCAST_DOT, DOT_PRECISION, "")


@triton.jit
def _bwd_tile(
    p_dhp_next, s_dn, p_w, s_wr, s_wc, p_dy, s_dy, p_dh, p_dc, p_save, p_c, p_c_prev, s_cp, p_c0, s_c0,
    p_h_prev, s_hp, p_h0, s_h0, p_dhp, s_dhp, p_dxp, s_dxp, B_next, B_prev, H, K, o_b, o_h, m_b, m_h, m,
    ACC: tl.constexpr, CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_NEXT: tl.constexpr,
    SPLIT_DX: tl.constexpr, TWO_SOURCES: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, CACHE: tl.constexpr,
):
    """The backward of one [rows o_b, hidden units o_h] tile of one step (arguments: ``_step_bwd_kernel``; CACHE:
    the modifier of the loads of dHp_{t+1}, ".cg" where other programs of the same launch wrote it)."""
    dh = _load_gate(p_dh, o_b, H, o_h, m, 0, H, ACC) + _load_gate(p_dy, o_b, s_dy, o_h, m, 0, H, ACC)
    if HAS_NEXT:
        dh += _matmul_tile(p_dhp_next, s_dn, p_dhp_next, s_dn, 0, o_b, o_b < B_next, p_w, s_wr, s_wc, o_h, m_h,
                           G * H, ACC, BLOCK_B, BLOCK_H, BLOCK_K, False, UPCAST_DOT, DOT_PRECISION, CACHE)

    s0, s1, s2, s3 = _load_saved(p_save, o_b, o_h, m, H, NS, ACC)
    dc = tl.zeros_like(dh)
    c_prev = tl.zeros_like(dh)
    c = tl.zeros_like(dh)
    h_prev = tl.zeros_like(dh)
    if CELL == CELL_LSTM:
        dc = _load_gate(p_dc, o_b, H, o_h, m, 0, H, ACC)
        c = _load_gate(p_c, o_b, H, o_h, m, 0, H, ACC)
        c_prev = _load_rows(p_c_prev, s_cp, p_c0, s_c0, B_prev, o_b, m_b, o_h, m_h, TWO_SOURCES, "").to(ACC)
    if CELL == CELL_GRU:
        h_prev = _load_rows(p_h_prev, s_hp, p_h0, s_h0, B_prev, o_b, m_b, o_h, m_h, TWO_SOURCES, "").to(ACC)

    d0, d1, d2, d3, dr2, dh_prev, dc_prev = cell_bwd(CELL, dh, dc, s0, s1, s2, s3, h_prev, c_prev, c)

    _store_gate_grads(p_dhp, s_dhp, p_dxp, s_dxp, o_b, o_h, m, H, d0, d1, d2, d3, dr2, G, SPLIT_DX)
    _store_gate(p_dh, o_b, H, o_h, m, 0, H, dh_prev)
    if CELL == CELL_LSTM:
        _store_gate(p_dc, o_b, H, o_h, m, 0, H, dc_prev)


@triton.jit(do_not_specialize=["B", "B_next", "B_prev"])
def _step_bwd_kernel(
    p_dhp_next, s_dn,        # [B_next, G*H] dHp_{t+1}, gradient of the next step's recurrent pre-activations
    p_w, s_wr, s_wc,         # [G*H, K] W_hh
    p_dy, s_dy,              # [B, H]   dL/dh_t from the layer's output (and, with a projection, through it)
    p_dh, p_dc,              # [B, H]   carries dL/dh_t, dL/dc_t (pointwise parts), updated in place to t-1;
                             #          accumulator dtype, contiguous
    p_save,                  # [B, NS*H] activations saved by the forward of step t
    p_c, p_c_prev, s_cp,     # [B, H]   c_t (contiguous) and c_{t-1} of rows < B_prev (LSTM)
    p_c0, s_c0,              # [B, H]   initial c, for rows >= B_prev (LSTM, TWO_SOURCES)
    p_h_prev, s_hp,          # [B_prev, K] h_{t-1} (GRU)
    p_h0, s_h0,              # [B, K]   initial h, for rows >= B_prev (GRU, TWO_SOURCES)
    p_dhp, s_dhp,            # [B, G*H] dHp_t (out)
    p_dxp, s_dxp,            # [B, G*H] dXp_t (out, SPLIT_DX: GRU only; otherwise dXp_t = dHp_t)
    B, B_next, B_prev, H, K,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_NEXT: tl.constexpr, SPLIT_DX: tl.constexpr,
    TWO_SOURCES: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_dh.dtype.element_ty  # fp32, or fp64 for fp64 tensors
    o_b, o_h, m_b, m_h, m = _tile(B, H, BLOCK_B, BLOCK_H)
    _bwd_tile(p_dhp_next, s_dn, p_w, s_wr, s_wc, p_dy, s_dy, p_dh, p_dc, p_save, p_c, p_c_prev, s_cp, p_c0, s_c0,
              p_h_prev, s_hp, p_h0, s_h0, p_dhp, s_dhp, p_dxp, s_dxp, B_next, B_prev, H, K, o_b, o_h, m_b, m_h, m,
              ACC, CELL, G, NS, HAS_NEXT, SPLIT_DX, TWO_SOURCES, BLOCK_B, BLOCK_H, BLOCK_K, UPCAST_DOT,
              DOT_PRECISION, "")
