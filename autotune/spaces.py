"""Block sizes and launch settings of the step kernels.

Keys are what the best configuration depends on: device type, hidden size, width of the recurrent
input, gates and dtype, and the batch only through a bucket. Never the sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass

import triton


@dataclass(frozen=True)
class StepConfig:
    """Launch settings shared by the forward and backward step kernels."""

    BLOCK_B: int
    BLOCK_H: int
    BLOCK_K: int
    num_warps: int = 4
    num_stages: int = 2


def batch_bucket(batch: int) -> int:
    """The power of two at or above ``batch``, capped at 64: the only way the batch enters a key."""
    return min(triton.next_power_of_2(max(batch, 1)), 64)


def default_step_config(device_type: str, hidden: int, width: int, batch: int, itemsize: int = 2) -> StepConfig:
    """Heuristic configuration for a step kernel.

    Args:
        device_type: ``"cuda"`` for compiled kernels, anything else for the Triton interpreter.
        hidden: H, hidden units per gate.
        width: K, the reduction width of the recurrent matmul (H forward, G*H backward).
        batch: B.
        itemsize: bytes per element of the tensors (8 for fp64).
    """
    bb = batch_bucket(batch)
    if device_type != "cuda":
        # The interpreter runs programs one after another with numpy ops on whole blocks: few large
        # programs are fastest, and tl.dot has no minimum size there.
        return StepConfig(BLOCK_B=bb, BLOCK_H=min(triton.next_power_of_2(hidden), 64),
                          BLOCK_K=min(triton.next_power_of_2(width), 64), num_warps=1, num_stages=1)
    # tl.dot needs every block dimension >= 16 on NVIDIA GPUs. Small hidden slices spread the
    # sequential recurrence over more SMs; the batch tile follows the batch.
    block_b = max(16, bb)
    block_h = 32 if hidden <= 1024 else 64
    block_k = max(16, min(64, triton.next_power_of_2(width)))
    # A 64x32 fp64 tile on 4 warps spills (LSTM: 1-2 KB per thread, seen in the sm_90a build of
    # `python -m bench.resources`); on 8 warps it does not.
    num_warps = 8 if itemsize == 8 and block_b * block_h >= 2048 else 4
    return StepConfig(BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k, num_warps=num_warps, num_stages=2)
