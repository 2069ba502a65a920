"""Process settings that fusedrnn reads from outside itself: the Triton interpreter switch and torch's TF32 switch.

One place reads each of them, lazily (nothing is read at import time): the launcher, dispatch, the autotune keys
and the benchmarks all ask here.

- ``interpreting()``: whether Triton runs kernels under its interpreter (``TRITON_INTERPRET=1``). Triton reads the
  variable when it jits, so it is read once per process; to torch.compile it is a constant (no guard on it, so a
  compiled model does not recompile when the first call reads it).
- ``tf32()``: whether fp32 matmuls may use TF32, as torch's cuBLAS matmuls would. torch has two APIs for it: the
  legacy ``torch.backends.cuda.matmul.allow_tf32`` and (torch >= 2.9) ``torch.backends.cuda.matmul.fp32_precision``
  / ``torch.backends.fp32_precision``. Once a program has set the new one, *reading* the legacy flag raises
  ("mix of the legacy and new APIs"), so the new API is read where it exists; the legacy setter updates it too.
- ``use_tf32(on)``: set it for a block (benchmarks and the tuner), through the new API where it exists.
"""

from __future__ import annotations

import contextlib
import os

import torch

_TRUE = ("1", "true", "on", "yes")
_interpreting: bool | None = None


@torch.compiler.assume_constant_result
def interpreting() -> bool:
    """Whether Triton kernels run under the interpreter (``TRITON_INTERPRET=1``), read once per process."""
    global _interpreting
    if _interpreting is None:
        _interpreting = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE
    return _interpreting


def tf32() -> bool:
    """Whether fp32 matmuls may run in TF32 (torch's cuBLAS setting, new API first)."""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    if precision is None:  # a torch without the new API
        return bool(matmul.allow_tf32)
    if precision == "none":  # not set for matmuls: the global setting decides
        precision = getattr(torch.backends, "fp32_precision", "none")
    return precision == "tf32"


@contextlib.contextmanager
def use_tf32(on: bool, cudnn: bool = False):
    """TF32 for fp32 matmuls on (``on``) or off for the block, and for cuDNN too with ``cudnn``; restored after."""
    targets = [torch.backends.cuda.matmul] + ([torch.backends.cudnn.rnn] if cudnn else [])
    if any(getattr(t, "fp32_precision", None) is None for t in targets):  # legacy API only
        legacy = [torch.backends.cuda.matmul] + ([torch.backends.cudnn] if cudnn else [])
        previous = [t.allow_tf32 for t in legacy]
        for t in legacy:
            t.allow_tf32 = on
        try:
            yield
        finally:
            for t, p in zip(legacy, previous):
                t.allow_tf32 = p
        return
    previous = [t.fp32_precision for t in targets]
    for t in targets:
        t.fp32_precision = "tf32" if on else "ieee"
    try:
        yield
    finally:
        for t, p in zip(targets, previous):
            t.fp32_precision = p
