"""One timestep of a recurrent layer: fused forward and backward kernels.

Legend: B batch (rows active at this step), H hidden, K width of h_{t-1} (H, or proj_size), I input size,
G gates of the cell (LSTM 4, GRU 3, RNN 1), NS saved activations per hidden unit (LSTM 4, GRU 4, RNN 1).

Grid of both kernels: (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)). A program owns a batch tile and a slice of
hidden units and computes ALL gates of that slice, so the cell's pointwise update stays in registers. It is one
call of the tile code every kernel shares (``tile.py``: ``_fwd_tile`` / ``_bwd_tile``), with W_hh streamed in
BLOCK_K blocks and c and the carries in memory.

Forward, step t:    x_k = xp_t[k]   or, with FUSE_INPUT (single steps), x_t @ W_ih[k]^T + b_ih[k]
                    r_k = h_{t-1} @ W_hh[k*H:(k+1)*H]^T + b_hh[k]     (k < G, one pass over K for all gates)
                    h_t, c_t, saved = cell_fwd(x, r, h_{t-1}, c_{t-1})   (c: HAS_C; h_{t-1}: READS_H)
Backward, step t:   dh  = dy_t + carry_h + dHp_{t+1} @ W_hh          (matmul over all G*H gate rows)
                    dXp_t, dHp_t, carry_h, carry_c = cell_bwd(dh, carry_c, saved, ...)
where dHp is the gradient of the recurrent pre-activations (it differs from dXp for SPLIT_DX cells: GRU's n gate) and
the carries hold the pointwise parts of dL/dh_{t-1}, dL/dc_{t-1}. A program reads and rewrites only its own
tile of the carries, so they are updated in place.

Resets (RESET, ``p_z``): a row flagged at step t starts afresh there, as a new sequence from a zero state: its
h_{t-1} and c_{t-1} read as zeros (``tile._kept``), and in the backward it passes no gradient to step t-1 (its
carries out are zero, and step t-1 reads no dHp_t of it: ``p_z_next`` flags the next step's rows).

Batches may shrink from step to step (packed sequences) and, in reverse, sequences start at their own last
element: rows < B_prev of h_{t-1}/c_{t-1} come from the previous step, rows >= B_prev from the initial state
(TWO_SOURCES; with a single source the launcher passes whichever holds every row). In the backward, rows
>= B_next of dHp_{t+1} do not exist and contribute nothing.

Accumulation is fp32 (fp64 for fp64 tensors); h is stored in the tensor dtype, c and the saved activations
in the accumulator dtype.
"""

import triton
import triton.language as tl

from .tile import _bwd_tile, _fwd_tile, _kept, _program_tile


@triton.jit
def _tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's batch rows (tile program_id(0)) and hidden units (slice program_id(1)), with their masks."""
    o_b, h_first = _program_tile(0, BLOCK_B, BLOCK_H)
    o_h = h_first + tl.arange(0, BLOCK_H)
    m_b = o_b < B
    m_h = o_h < H
    return o_b, o_h, m_b, m_h, m_b[:, None] & m_h[None, :]


@triton.jit(do_not_specialize=["B", "B_prev"])
def _step_fwd_kernel(
    p_x, s_x,                # [B, G*H] input pre-activations xp_t, or [B, I] inputs x_t (FUSE_INPUT)
    p_wih, s_wir, s_wic,     # [G*H, I] W_ih (FUSE_INPUT)
    p_bih,                   # [G*H]    b_ih (FUSE_INPUT and HAS_BIAS)
    p_h_prev, s_hp,          # [B_prev, K] h_{t-1} of the rows that ran the previous step
    p_h0, s_h0,              # [B, K]   initial h, read for rows >= B_prev (TWO_SOURCES)
    p_c_prev, s_cp,          # [B_prev, H] c_{t-1} (HAS_C)
    p_c0, s_c0,              # [B, H]   initial c, read for rows >= B_prev (HAS_C, TWO_SOURCES)
    p_w, s_wr, s_wc,         # [G*H, K] W_hh
    p_bhh,                   # [G*H]    b_hh (HAS_BIAS)
    p_h, s_h,                # [B, H]   h_t (out; before the projection, if any)
    p_c,                     # [B, H]   c_t (out, HAS_C), contiguous
    p_save,                  # [B, NS*H] saved activations (out, SAVE), accumulator dtype, contiguous; an
                             #          accumulator-dtype tensor in any case: it sets the accumulator dtype
    p_z,                     # [B] uint8: 1 where the row starts afresh at this step (RESET): its state at t-1 is 0
    B, B_prev, H, K, I,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr, READS_H: tl.constexpr,
    SPLIT_DX: tl.constexpr,  # the cell's traits (fusedrnn/cells.py); SPLIT_DX is the backward's
    HAS_BIAS: tl.constexpr, SAVE: tl.constexpr, FUSE_INPUT: tl.constexpr, TWO_SOURCES: tl.constexpr,
    RESET: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_save.dtype.element_ty  # fp32, or fp64 for fp64 tensors
    o_b, o_h, m_b, m_h, m = _tile(B, H, BLOCK_B, BLOCK_H)
    _fwd_tile(p_x, s_x, p_wih, s_wir, s_wic, p_bih, p_h_prev, s_hp, p_h0, s_h0, p_c_prev, s_cp, p_c0, s_c0,
              p_w, s_wr, s_wc, p_bhh, p_h, s_h, p_c, p_save, B_prev, H, K, I, o_b, o_h, m_b, m_h, m,
              _kept(p_z, o_b, m_b, RESET), None, None, None,
              ACC, CELL, G, NS, HAS_C, READS_H, HAS_BIAS, SAVE, FUSE_INPUT, TWO_SOURCES, False, BLOCK_B, BLOCK_H,
              BLOCK_K, None, UPCAST_DOT, DOT_PRECISION, "")


@triton.jit(do_not_specialize=["B", "B_next", "B_prev"])
def _step_bwd_kernel(
    p_dhp_next, s_dn,        # [B_next, G*H] dHp_{t+1}, gradient of the next step's recurrent pre-activations
    p_w, s_wr, s_wc,         # [G*H, K] W_hh
    p_dy, s_dy,              # [B, H]   dL/dh_t from the layer's output (and, with a projection, through it)
    p_dh, p_dc,              # [B, H]   carries dL/dh_t, dL/dc_t (pointwise parts), updated in place to t-1;
                             #          accumulator dtype, contiguous
    p_save,                  # [B, NS*H] activations saved by the forward of step t
    p_c, p_c_prev, s_cp,     # [B, H]   c_t (contiguous) and c_{t-1} of rows < B_prev (HAS_C)
    p_c0, s_c0,              # [B, H]   initial c, for rows >= B_prev (HAS_C, TWO_SOURCES)
    p_h_prev, s_hp,          # [B_prev, K] h_{t-1} (READS_H)
    p_h0, s_h0,              # [B, K]   initial h, for rows >= B_prev (READS_H, TWO_SOURCES)
    p_dhp, s_dhp,            # [B, G*H] dHp_t (out)
    p_dxp, s_dxp,            # [B, G*H] dXp_t (out, SPLIT_DX; otherwise dXp_t = dHp_t)
    p_z, p_z_next,           # [B], [B_next] uint8 (RESET): 1 where a row starts afresh at step t, at step t+1
    B, B_next, B_prev, H,
    CELL: tl.constexpr, G: tl.constexpr, NS: tl.constexpr, HAS_C: tl.constexpr, READS_H: tl.constexpr,
    SPLIT_DX: tl.constexpr, HAS_NEXT: tl.constexpr, TWO_SOURCES: tl.constexpr, RESET: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    ACC: tl.constexpr = p_dh.dtype.element_ty  # fp32, or fp64 for fp64 tensors
    o_b, o_h, m_b, m_h, m = _tile(B, H, BLOCK_B, BLOCK_H)
    _bwd_tile(p_dhp_next, s_dn, p_w, s_wr, s_wc, p_dy, s_dy, p_dh, p_dc, p_save, p_c, p_c_prev, s_cp, p_c0, s_c0,
              p_h_prev, s_hp, p_h0, s_h0, p_dhp, s_dhp, p_dxp, s_dxp, B_prev, H, o_b, o_h, m_b, m_h, m,
              _kept(p_z, o_b, m_b, RESET), _kept(p_z_next, o_b, o_b < B_next, RESET), None, None, None, ACC, CELL, G,
              NS, HAS_C, READS_H, SPLIT_DX, HAS_NEXT, TWO_SOURCES, False, RESET, BLOCK_K, None, UPCAST_DOT,
              DOT_PRECISION, "")
