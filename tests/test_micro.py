"""bench/micro.py's kernels (the parts of a cooperative step, timed on a GPU) compute what they claim: under the
Triton interpreter, with several programs in threads where they meet at the grid barrier (tests/_grid.py). Their
sm_90a builds: tests/test_compiled.py."""

import pytest
import torch

import _grid
from _helpers import load_bench

load_bench()
from bench import micro  # noqa: E402

CPU = torch.device("cpu")
SHAPE = dict(B=3, H=10, gates=4, block_h=4, dtype=torch.float32, device=CPU)

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's runs; a GPU times them")


def test_barrier_counts_every_arrival():
    with _grid.threaded() as mode:
        bar = micro.run_part("barrier", 3, 4, **SHAPE)
    assert int(bar) == 3 * 4 and mode.launches[-1][1][0] == 3


def test_broadcast_reads_all_of_h_each_step():
    """Every program reads the whole of h_{t-1} and writes its slice of h_t (row means of what it read): after
    the first step every column holds its row's mean of the initial h, and stays there."""
    B, H = SHAPE["B"], SHAPE["H"]
    h0 = torch.arange(B * H, dtype=torch.float32).reshape(B, H) / (B * H)
    with _grid.threaded():
        h = micro.run_part("broadcast", 3, 3, **SHAPE)
    expect = h0.mean(1, keepdim=True).expand(B, H)
    torch.testing.assert_close(h[0], expect)
    torch.testing.assert_close(h[1], expect)


def test_held_matmul_is_the_slice_product():
    """Each program's result is its rows of A @ W[:, slice] (A the [BLOCK_B, K] tile, K held in blocks: K=40 is one
    block of 64 rows with a masked tail, K=300 two of 256)."""
    for K in (40, 300):
        torch.manual_seed(0)
        shape = dict(SHAPE, H=K)
        out = micro.run_part("held_matmul", 2, 2, **shape)
        torch.manual_seed(0)
        n = shape["gates"] * shape["block_h"]
        w = torch.randn(K, n * 2) / K ** 0.5
        a = torch.randn(16, K)
        for p in range(2):
            torch.testing.assert_close(out[p * 16:(p + 1) * 16], a @ w[:, p * n:(p + 1) * n], rtol=1e-4, atol=1e-4)
    assert [micro.held_blocks(K, 16) for K in (40, 768, 1536)] == [(64, 1), (256, 3), (256, 6)]
    assert [micro.held_blocks(K, 32) for K in (40, 768)] == [(64, 1), (128, 6)]


def test_cli_refuses_without_a_gpu(capsys):
    assert micro.main(["--parts", "barrier"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
