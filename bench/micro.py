"""Microbenchmarks of a cooperative step's parts, for the first GPU run: what the grid barrier, the broadcast of h and
the matmul with a W_hh slice held on chip each cost per step, beside the whole step (``python -m bench`` times that).

    python -m bench.micro                              # every part, 48 / 96 / 132 programs, T=2048, bf16
    python -m bench.micro --programs 132 --steps 8192 --json micro.json

Each kernel runs T steps of one part in one cooperative launch and is timed whole (CUDA events, median of a few
runs); the report is microseconds per step:

- ``barrier``: T grid barriers over N programs (``kernels/persistent.py``'s ``_grid_barrier``), nothing else;
- ``broadcast``: every program reads all of h ([B, H], from L2 with ``.cg`` loads, as the forward reads h_{t-1})
  and writes its slice of the next h, then the barrier: minus ``barrier``, the cost of exchanging h;
- ``held_matmul``: no barrier: each program multiplies a [B, K] tile (re-read every step, as h_{t-1} is, but the
  same tile: from L1) by its W_hh slice ([K, G*BLOCK_H], loaded once before the loop, as the resident kernel holds
  it), T times, each step's operand scaled by the last step's result so that no step can be skipped or hoisted:
  the floor of the held matmul.

A step of the resident kernel costs about barrier + broadcast + held_matmul + its pointwise math; cuDNN's persistent
kernel takes about 2 us per step at B=16, H=768 (LSTM fp16). Under the Triton interpreter (``--interpret``, and the
tests) the kernels run on CPU tensors for correctness only: their timings mean nothing there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import triton
import triton.language as tl

from fusedrnn.autotune.spaces import held_width
from fusedrnn.kernels.persistent import _grid_barrier
from fusedrnn.kernels.tile import _held_block

PARTS = ("barrier", "broadcast", "held_matmul")


@triton.jit
def _barrier_kernel(p_bar, T):
    """T grid barriers of every program of the grid (one counter)."""
    n = tl.num_programs(0)
    for step in range(T):
        _grid_barrier(p_bar, (step + 1) * n)


@triton.jit
def _broadcast_kernel(p_h, p_bar, T, B, H, BLOCK_B: tl.constexpr, HP: tl.constexpr, SLICE: tl.constexpr):
    """T steps of the exchange of h: program i reads all of h_{t-1} ([B, H], buffer t % 2) and writes its SLICE
    columns of h_t (the other buffer: row sums of what it read, so that the read is used), then the barrier."""
    n = tl.num_programs(0)
    o_b = tl.arange(0, BLOCK_B)
    o_k = tl.arange(0, HP)
    o_s = tl.program_id(0) * SLICE + tl.arange(0, SLICE)
    m_in = (o_b[:, None] < B) & (o_k[None, :] < H)
    m_out = (o_b[:, None] < B) & (o_s[None, :] < H)
    for step in range(T):
        src = p_h + (step % 2) * B * H
        h = tl.load(src + o_b[:, None] * H + o_k[None, :], mask=m_in, other=0.0, cache_modifier=".cg")
        s = tl.sum(h.to(tl.float32), axis=1) * (1.0 / H)
        dst = p_h + ((step + 1) % 2) * B * H
        tl.store(dst + o_b[:, None] * H + o_s[None, :], (s[:, None] + tl.zeros((BLOCK_B, SLICE), tl.float32))
                 .to(p_h.dtype.element_ty), mask=m_out)
        _grid_barrier(p_bar, (step + 1) * n)


@triton.jit
def _held_matmul_kernel(p_w, p_a, p_out, T, K, N, BLOCK_B: tl.constexpr, KB: tl.constexpr, NKB: tl.constexpr,
                        BLOCK_N: tl.constexpr):
    """T dots of a [BLOCK_B, K] tile A by this program's [K, BLOCK_N] slice of W ([K, N] row-major), the slice held
    as NKB blocks of KB rows loaded before the loop, A re-read at every step (as h_{t-1} is; the same 16-row tile
    every time, so from L1) and scaled by the mean of the last result (a serial dependence, like h_t on h_{t-1}).
    Writes the last result to p_out ([grid * BLOCK_B, BLOCK_N])."""
    o_b = tl.arange(0, BLOCK_B)
    o_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    w = ()
    for kb in tl.static_range(NKB):
        o_k = kb * KB + tl.arange(0, KB)
        w = w + (tl.load(p_w + o_k[:, None] * N + o_n[None, :], mask=(o_k[:, None] < K) & (o_n[None, :] < N),
                         other=0.0), )
    scale = tl.full((BLOCK_B, 1), 1.0, tl.float32)
    acc = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
    for step in range(T):
        acc = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
        for kb in tl.static_range(NKB):
            o_k = kb * KB + tl.arange(0, KB)
            a = tl.load(p_a + o_b[:, None] * K + o_k[None, :], mask=o_k[None, :] < K, other=0.0)
            acc = tl.dot((a * scale).to(a.dtype), w[kb], acc)
        scale = 1.0 + 0.0 * tl.sum(acc, axis=1, keep_dims=True)
    o_r = tl.program_id(0) * BLOCK_B + o_b
    tl.store(p_out + o_r[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :], acc)


def held_blocks(K: int, block_b: int) -> tuple[int, int]:
    """(KB, NKB): K held as NKB blocks of KB rows, as the resident kernel of ``block_b``-row tiles holds it
    (``autotune.spaces.held_width``, then kernels/tile.py's ``_held_block``, which the kernels call)."""
    width = held_width(K, block_b)
    kb = _held_block(width, block_b)
    return kb, width // kb


def run_part(part: str, programs: int, T: int, B: int, H: int, gates: int, block_h: int, dtype, device,
             cooperative: bool = True):
    """Launch one part once; returns what it wrote (the barrier counter, h's buffers, or the matmul's result)."""
    import torch
    coop = dict(launch_cooperative_grid=True) if cooperative else {}
    if part == "barrier":
        bar = torch.zeros(1, dtype=torch.int32, device=device)
        _barrier_kernel[(programs, )](bar, T, num_warps=4, **coop)
        return bar
    if part == "broadcast":
        slice_ = triton.cdiv(H, programs)
        h = torch.zeros(2, B, H, dtype=dtype, device=device)
        h[0] = torch.arange(B * H, device=device).reshape(B, H).to(dtype) / (B * H)
        bar = torch.zeros(1, dtype=torch.int32, device=device)
        _broadcast_kernel[(programs, )](h, bar, T, B, H, BLOCK_B=max(16, triton.next_power_of_2(B)),
                                        HP=triton.next_power_of_2(H), SLICE=triton.next_power_of_2(slice_),
                                        num_warps=4, **coop)
        return h
    if part == "held_matmul":
        K, N = H, gates * block_h * programs
        block_b = max(16, triton.next_power_of_2(B))
        kb, nkb = held_blocks(K, block_b)
        w = (torch.randn(K, N, device=device) / K ** 0.5).to(dtype)
        a = torch.randn(block_b, K, device=device).to(dtype)
        out = torch.empty(programs * block_b, gates * block_h, dtype=torch.float32, device=device)
        _held_matmul_kernel[(programs, )](w, a, out, T, K, N, BLOCK_B=block_b, KB=kb, NKB=nkb,
                                          BLOCK_N=gates * block_h, num_warps=4, num_stages=1)
        return out
    raise ValueError(f"unknown part {part!r}; the parts are {PARTS}")


def time_part(part: str, programs: int, T: int, reps: int = 5, **shape) -> float:
    """Median microseconds per step of ``reps`` launches of one part (CUDA events; a first launch compiles)."""
    import torch
    run_part(part, programs, T, **shape)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run_part(part, programs, T, **shape)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / T)
    return statistics.median(times)


def main(argv=None) -> int:
    import torch
    p = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--programs", nargs="+", type=int, default=[48, 96, 132])
    p.add_argument("--steps", type=int, default=2048)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--gates", type=int, default=4, help="G of the held slice (LSTM 4)")
    p.add_argument("--block-h", type=int, default=8, help="hidden units per program of the held slice")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        print("bench.micro times GPU kernels: no CUDA device here (the tests run them under the interpreter)",
              file=sys.stderr)
        return 2
    dtype, device = getattr(torch, a.dtype), torch.device("cuda")
    rows = []
    print(f"{'part':12} {'programs':>8} {'us/step':>8}   B={a.batch} H={a.hidden} {a.dtype} T={a.steps}")
    for part in a.parts:
        for n in a.programs:
            try:
                us = time_part(part, n, a.steps, B=a.batch, H=a.hidden, gates=a.gates, block_h=a.block_h,
                               dtype=dtype, device=device)
                rows.append(dict(part=part, programs=n, us_per_step=round(us, 3), B=a.batch, H=a.hidden,
                                 dtype=a.dtype, T=a.steps, gates=a.gates, block_h=a.block_h))
                print(f"{part:12} {n:>8} {us:>8.3f}")
            except Exception as e:  # noqa: BLE001 - a failing part (a refused cooperative grid) must not hide the rest
                rows.append(dict(part=part, programs=n, error=f"{type(e).__name__}: {e}"[:300]))
                print(f"{part:12} {n:>8}   FAILED {type(e).__name__}: {str(e)[:200]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                           rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
