"""The one place that decides what runs: backend, kernel, cooperative plan, fallback, input fusion, configuration.

Backend (``select``): ``auto`` (the default): CUDA tensors run the Triton kernels; CPU tensors run them under the
Triton interpreter when ``TRITON_INTERPRET=1`` is set in the environment, and torch's own CPU implementation
otherwise, so CPU users lose nothing. Any other device runs torch's implementation. Force a choice with
``fusedrnn.set_backend("triton" | "aten" | "auto")`` or, scoped, ``with fusedrnn.use_backend("triton"): ...``
(``fusedrnn.settings``). Forcing "triton" where the kernels cannot run is an error, never a silent fallback.

Kernel (``choose``): a layer's sequence runs on one of three kernels (see ``kernels/``):

* ``"step"``: one launch per timestep (fused gate matmul, activations and state update);
* ``"tiled"``: batch-tiled persistent kernel, one launch for the whole sequence; runs under the interpreter;
* ``"cooperative"``: cooperative persistent kernel, one launch, programs own hidden slices and meet at a grid
  barrier between steps; its plan (``coop_plan``) is "resident" (each program's W_hh slice loaded once, kept on
  chip) or, for wide layers, "streamed" (W_hh re-read from L1/L2 at every step). GPU only, and only when all of
  its programs can be resident at once.

``auto`` (the default) picks by shape, dtype and GPU (``choose``, provisional until the benchmarks tune it). Force
a choice with ``fusedrnn.set_kernel(name)`` or ``with fusedrnn.use_kernel(name): ...``. LSTM projections
(proj_size) and single steps (Cells) always run the step kernel: forcing a persistent kernel on a layer with a
projection is an error. A forced ``"cooperative"`` whose grid cannot be co-resident falls back to ``"tiled"`` with
a warning (it never waits on a barrier that could deadlock), and so does a cooperative launch that the GPU refuses
(``cooperative_refused``).

Tools that plan for a GPU they do not have (``bench.resources``) run the launcher on CPU tensors inside
``planning_for(limits)``: every decision here is then made as on a CUDA device with those limits.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
import triton

from fusedrnn import settings
from fusedrnn.autotune import kernel_config
from fusedrnn.autotune.spaces import (RESIDENT_FUSED_INPUT_ROWS, KernelConfig, coop_config, coop_grid,
                                      default_kernel_config, device_limits,
                                      held_width)  # noqa: F401 - held_width: the resident launches' KP / HP
from fusedrnn.cells import CELLS

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: At and above this length the default is a persistent kernel: launches per layer and direction stop growing
#: with T (the batch-tiled kernel where the cooperative one cannot run).
PERSISTENT_MIN_T = 256
#: From this length on a GPU the cooperative kernel is the default wherever it can run.
COOP_MIN_T = 32

_planning_for = None  # GpuLimits while ``planning_for`` is active


@contextlib.contextmanager
def planning_for(limits):
    """Decide as on a CUDA GPU with ``limits`` (a ``GpuLimits``) for the block, whatever the tensors' device, with
    the heuristic configurations (no tuned table): for tools that record what the launcher would launch there."""
    global _planning_for
    previous, _planning_for = _planning_for, limits
    try:
        yield
    finally:
        _planning_for = previous


def _cuda(device) -> bool:
    return _planning_for is not None or device.type == "cuda"


def _limits(device):
    return _planning_for if _planning_for is not None else device_limits(device)


def select(device) -> str:
    """The implementation that runs for tensors on ``device``: "triton" or "aten"."""
    backend = settings.get_backend()
    if backend == "aten":
        return "aten"
    if device.type == "cuda" or (device.type == "cpu" and settings.interpreting()):
        return "triton"
    if backend == "triton":
        hint = (" Set TRITON_INTERPRET=1 in the environment before the process starts to run the kernels on "
                "the CPU under the Triton interpreter." if device.type == "cpu" else "")
        raise RuntimeError(f"fusedrnn: backend 'triton' was forced, but Triton kernels cannot run on device "
                           f"'{device.type}'.{hint}")
    return "aten"


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulator and cell-state dtype: fp64 for fp64 tensors, fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_settings(dtype: torch.dtype, device: torch.device) -> dict:
    """UPCAST_DOT and DOT_PRECISION of the kernels' tl.dot for tensors of ``dtype`` on ``device``."""
    if not _cuda(device):
        # Under the interpreter tl.dot on bf16 is wrong (triton issue 11584): feed it accumulator-dtype
        # operands there, and only there, so compiled kernels keep their fp16/bf16 tensor-core dots.
        return {"UPCAST_DOT": True, "DOT_PRECISION": "ieee"}
    if dtype == torch.float32:
        precision = "tf32" if settings.tf32() else "ieee"
    elif dtype == torch.float64:
        precision = "ieee"
    else:
        precision = "tf32"  # ignored for fp16/bf16 operands; the compiler's default
    return {"UPCAST_DOT": False, "DOT_PRECISION": precision}


def config(kernel: str, cell: str, H: int, K: int, B: int, dtype: torch.dtype, device: torch.device,
           I: int = 0) -> KernelConfig:  # noqa: E741
    """Launch configuration of the step or batch-tiled kernel ``kernel`` ("step_fwd" ...; K: width of its recurrent
    matmul; I: input width when the input projection is fused into it, else 0): tuned cache, shipped table or
    heuristic (``fusedrnn.autotune``)."""
    if _planning_for is not None:
        return default_kernel_config("cuda", H, K, B, dtype.itemsize, kernel.split("_")[0])
    return kernel_config(kernel, cell, dtype, device, H, K, B, I)


def coop_plan(cell: str, dtype: torch.dtype, device: torch.device, H: int, B: int, limits=None):
    """(KernelConfig, None) if the cooperative kernel can run this layer with all programs resident at once, else
    (None, reason): ``autotune.spaces.coop_config`` for the device's limits (``limits`` overrides them, for
    tools that plan for a GPU they do not have). One program per SM is resident whenever it fits an SM at all
    and no other work holds SMs; the launch is cooperative, so where not all programs can start at once the
    driver refuses it and the launcher falls back: the grid barrier cannot deadlock. Under MPS with a
    thread percentage below 100 the number of usable SMs is unknown: refused."""
    if _cuda(device):
        mps = settings.mps_thread_percentage()
        if mps and mps != "100":
            return None, f"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={mps}: the SMs available to this process are unknown"
        limits = limits or _limits(device)
    return coop_config(CELLS[cell].gates, dtype.itemsize, H, B, limits if _cuda(device) else None)


def coop_launch_grid(plan: KernelConfig, device, H: int, B: int) -> tuple:
    """(hidden slices, batch tiles) of a cooperative launch of ``plan`` on ``device``."""
    return coop_grid(plan, H, B, _limits(device).sms if _cuda(device) else 1)


def choose_kernel(cell: str, dtype: torch.dtype, device: torch.device, T: int, B: int, H: int, proj: bool,
                  limits=None) -> str:
    """The kernel that runs a layer's sequence: "step", "tiled" or "cooperative" (``choose``)."""
    return choose(cell, dtype, device, T, B, H, proj, limits)[0]


def choose(cell, dtype, device, T, B, H, proj, limits=None):
    """(kernel, cooperative plan or None) of a layer's sequence.

    A forced choice (``fusedrnn.use_kernel``) wins; persistent kernels have no projection (an error when forced);
    a forced cooperative kernel that ``coop_plan`` refuses runs batch-tiled, with a warning.
    ``auto`` (provisional, to be tuned by the benchmarks on GPUs):
      - projections (proj_size) and single steps (T = 1): step;
      - GPU: cooperative when T >= COOP_MIN_T and ``coop_plan`` accepts the shape; else batch-tiled when
        T >= PERSISTENT_MIN_T; else step;
      - interpreter: batch-tiled when T >= PERSISTENT_MIN_T, else step.
    """
    forced = settings.get_kernel()
    if forced != "auto":
        if forced != "step" and proj:
            raise ValueError(f"fusedrnn: the {forced!r} kernel has no LSTM projection (proj_size > 0); use the "
                             f"'step' or 'auto' kernel for this layer")
        if forced != "cooperative":
            return forced, None
        plan, why = coop_plan(cell, dtype, device, H, B, limits)
        if plan is None:
            warnings.warn(f"fusedrnn: the cooperative kernel cannot run this layer ({why}); running the "
                          f"batch-tiled persistent kernel instead.", RuntimeWarning, stacklevel=5)
            return "tiled", None
        return "cooperative", plan
    if proj or T <= 1:
        return "step", None
    if _cuda(device) and T >= COOP_MIN_T:
        plan = coop_plan(cell, dtype, device, H, B, limits)[0]
        if plan is not None:
            return "cooperative", plan
    return ("tiled" if T >= PERSISTENT_MIN_T else "step"), None


@dataclass(frozen=True)
class LayerPlan:
    """How one layer and direction runs: the kernel, its cooperative plan (or None) and whether the input projection
    is fused into the kernel (single steps, and persistent kernels without saved activations: inference then
    allocates nothing of size T beyond its input and output; the resident cooperative kernel then streams its W_ih
    slice at every step, in 32-row blocks, beside the W_hh it holds; not in its batch tiles taller than
    ``RESIDENT_FUSED_INPUT_ROWS``, B=64 at H=768 and 1024 on an H100, which read the gates of one GEMM over all T)."""

    kernel: str
    coop: KernelConfig | None
    fuse_input: bool


def plan_layer(cell: str, dtype, device, T: int, B: int, H: int, proj: bool, save: bool) -> LayerPlan:
    """The plan of a layer's forward (``save``: with saved activations) or, with ``save=True``, its backward."""
    kernel, coop = choose(cell, dtype, device, T, B, H, proj) if B > 0 and H > 0 else ("step", None)
    tall = coop is not None and coop.variant == "resident" and coop.BLOCK_B > RESIDENT_FUSED_INPUT_ROWS
    return LayerPlan(kernel, coop, fuse_input=T == 1 or (kernel != "step" and not save and not tall))


def cooperative_refused(error: BaseException) -> bool:
    """Whether a cooperative launch failed because the GPU cannot run it resident (then the launcher falls back to
    the batch-tiled kernel, with a warning): a program that does not fit an SM (OutOfResources, raised before the
    launch), or a grid the driver will not start all at once ("too many blocks in cooperative launch"; nothing
    ran). Anything else is a real error."""
    return isinstance(error, triton.runtime.errors.OutOfResources) or (
        isinstance(error, RuntimeError) and "cooperative launch" in str(error))
