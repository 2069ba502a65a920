"""Which implementation runs: the Triton kernels or torch's own (aten) RNN.

``auto`` (the default): CUDA tensors run the Triton kernels; CPU tensors run them under the Triton interpreter
when ``TRITON_INTERPRET=1`` is set in the environment, and torch's own CPU implementation otherwise, so
CPU users lose nothing. Any other device runs torch's implementation.

Force a choice with ``fusedrnn.set_backend("triton" | "aten" | "auto")`` or, scoped, ``with
fusedrnn.use_backend("triton"): ...``. Forcing "triton" where the kernels cannot run is an error, never a
silent fallback.

Kernel choice (Triton backend): a layer's sequence runs on one of three kernels (see ``kernels/``):

* ``"step"``: one launch per timestep (fused gate matmul, activations and state update);
* ``"tiled"``: batch-tiled persistent kernel, one launch for the whole sequence; runs under the interpreter;
* ``"cooperative"``: cooperative persistent kernel, one launch, programs own hidden slices and meet at a grid
  barrier between steps (W_hh slices kept in registers, or for wide layers re-read from L1/L2 each step: the
  "streamed" variant); GPU only, and only when all of its programs can be resident at once.

``auto`` (the default) picks by shape, dtype and GPU; the heuristic is ``fusedrnn.launch.choose_kernel``
(documented there, provisional until the benchmarks tune it). Force a choice with
``fusedrnn.set_kernel(name)`` or ``with fusedrnn.use_kernel(name): ...``. LSTM projections (proj_size) and
single steps (Cells) always run the step kernel: forcing a persistent kernel on a layer with a projection is
an error. A forced ``"cooperative"`` whose grid cannot be co-resident falls back to ``"tiled"`` with a
warning (it never waits on a barrier that could deadlock).
"""

from __future__ import annotations

from contextlib import contextmanager

from .settings import interpreting

BACKENDS = ("auto", "triton", "aten")
KERNELS = ("auto", "step", "tiled", "cooperative")

_backend = "auto"
_kernel = "auto"

def get_backend() -> str:
    """The backend setting: "auto", "triton" or "aten"."""
    return _backend


def set_backend(name: str) -> None:
    """Set the backend for the whole process: "auto" (default), "triton" or "aten"."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"fusedrnn backend must be one of {BACKENDS}, got {name!r}")
    _backend = name


@contextmanager
def _scoped(get, set_, name: str):
    """Set a setting with ``set_`` for the block, restoring what ``get`` read before it on exit."""
    previous = get()
    set_(name)
    try:
        yield
    finally:
        set_(previous)


def use_backend(name: str):
    """Context manager that sets the backend and restores the previous one on exit."""
    return _scoped(get_backend, set_backend, name)


def select(device) -> str:
    """The implementation that runs for tensors on ``device``: "triton" or "aten"."""
    if _backend == "aten":
        return "aten"
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return "triton"
    if _backend == "triton":
        hint = (" Set TRITON_INTERPRET=1 in the environment before the process starts to run the kernels on "
                "the CPU under the Triton interpreter." if device.type == "cpu" else "")
        raise RuntimeError(f"fusedrnn: backend 'triton' was forced, but Triton kernels cannot run on device "
                           f"'{device.type}'.{hint}")
    return "aten"


def get_kernel() -> str:
    """The kernel setting: "auto", "step", "tiled" or "cooperative"."""
    return _kernel


def set_kernel(name: str) -> None:
    """Set the kernel for the whole process: "auto" (default), "step", "tiled" or "cooperative"."""
    global _kernel
    if name not in KERNELS:
        raise ValueError(f"fusedrnn kernel must be one of {KERNELS}, got {name!r}")
    _kernel = name


def use_kernel(name: str):
    """Context manager that sets the kernel and restores the previous one on exit."""
    return _scoped(get_kernel, set_kernel, name)
