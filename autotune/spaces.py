"""Launch configurations of the recurrence kernels: the heuristic, the search space, and its pruning.

Legend: B batch (a bucket's representative), H hidden, K width of the recurrent matmul (P forward, G*H
backward), I input width reduced inside the kernel (the layer's input size when the input projection is fused
into a single step, else 0), G gates, NS saved activations per hidden unit.

A kernel *variant* is one implementation of launcher kernels: "step" (one launch per timestep: "step_fwd",
"step_bwd") and "tiled" (the batch-tiled persistent kernel, one launch per sequence: "tiled_fwd", "tiled_bwd";
its programs run the step kernels' tile code over all hidden chunks, so the same space and resource model
apply). Each is an entry of ``VARIANTS``: a name, the kernels it implements, a candidate generator and a
resource model; the tuner and the cache need nothing else. Which variant runs a layer is
``fusedrnn.dispatch.choose_kernel``'s decision (it depends on T, which keys leave out); the cooperative kernel is
not tuned here: its tiles follow from the GPU's SM count (``fusedrnn.dispatch.coop_plan``).

Resource model (estimates, before anything is compiled; ``step_resources``)
--------------------------------------------------------------------------
Shared memory, bytes per program: the operand tiles of ``tl.dot`` staged through shared memory, one copy per
pipeline stage, plus the accumulator tile once for the layout conversion of the epilogue::

    smem = max(num_stages, 1) * (BLOCK_B*BLOCK_K + W*BLOCK_K*BLOCK_H) * itemsize + BLOCK_B*BLOCK_H*acc_bytes

W is G in the forward (one pass over K computes every gate: a block of h_{t-1} and G weight blocks per step)
and 1 in the backward (one matmul over all G*H gate rows). This is an upper bound: Triton allocates at most
num_stages copies (num_stages - 1 on the mma.sync path).

Registers, 32-bit per thread: the fp32 (fp64: 2 registers) tiles live at the cell's pointwise update, spread
over the program's 32*num_warps threads, plus a fixed part for pointers, offsets, masks and loop state::

    regs = ceil(live_tiles * BLOCK_B*BLOCK_H * acc_words / (32*num_warps)) + REG_BASE
    live_tiles: forward 2G + 1 (G recurrent accumulators, G input pre-activations, c or h of the previous step);
                backward 1 + NS + (3 LSTM: dc, c_{t-1}, c_t | 1 GRU: h_{t-1} | 0 RNN)

This is close to a lower bound (the compiler needs more for the dot operands and the math), so what it prunes
spills; survivors can still spill a little and are then simply slow in the timing.

A candidate is pruned when ``smem > smem_per_block`` (Triton raises OutOfResources at launch),
``regs > regs_per_thread`` (255 on NVIDIA: the rest spills to local memory) or ``regs * threads > regs_per_sm``
(the block cannot be resident), and on a GPU when a block dimension is below ``min_dot`` (tl.dot needs >= 16 on
each of BLOCK_B, BLOCK_H, BLOCK_K). Shape rules prune what cannot help: tiles larger than the problem (rounded
up to a power of two), more threads than a quarter of the tile's elements, more stages than K iterations.

Calibration (71 random candidates of the default space, H=512, B=128, lstm/gru/rnn_tanh x fp16/fp32/fp64, fwd and
bwd, compiled for sm_90a without a GPU by Triton 3.9, as ``bench/resources.py`` does; shared memory from the
kernel's metadata, registers and spills from ``ptxas -v``): the shared-memory estimate was at or above the
compiler's for all 71 (1.1x to 3.3x). The register estimate pruned 18, of which 17 spill (255 registers and
36 B to 140 KB of spills) and one does not (estimated 256, compiled to 245); of the 53 kept, 7 spill, six of them
under 1 KB. (Measured before the forward computed all gates in one pass over K, which the shared-memory model now
counts; not re-run since.)
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable, Iterable

import triton

from fusedrnn.cells import CELLS
from fusedrnn.kernels.tile import held_rows

from .keys import batch_bucket

KERNELS = ("step_fwd", "step_bwd", "tiled_fwd", "tiled_bwd")
#: dtype name (as in keys) -> (bytes per tensor element, bytes per accumulator element).
DTYPE_BYTES = {"float16": (2, 4), "bfloat16": (2, 4), "float32": (4, 4), "float32-tf32": (4, 4),
               "float64": (8, 8)}


#: ptxas's register limit for the batch-tiled and streamed persistent kernels (``KernelConfig.launch_options``):
#: 255, the most a thread can have (fewer beyond 8 warps, so that one program always fits the SM's 64K
#: registers; at 8 warps, 32 threads x 256 each, as the allocation granule rounds 255 up, is all of them).
PERSISTENT_MAXNREG = 255


@dataclass(frozen=True)
class KernelConfig:
    """Launch settings of a recurrence kernel: block sizes, warps, pipeline stages and the kernel variant."""

    BLOCK_B: int
    BLOCK_H: int
    BLOCK_K: int
    num_warps: int = 4
    num_stages: int = 2
    variant: str = "step"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "KernelConfig":
        """Inverse of ``to_dict``; raises ValueError on missing, unknown or ill-typed fields."""
        if not isinstance(d, dict):
            raise ValueError(f"config must be an object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        cfg = cls(**d)
        for f in fields(cls)[:5]:
            v = getattr(cfg, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v > 4096:
                raise ValueError(f"config field {f.name}={v!r} is not a positive integer")
        if not isinstance(cfg.variant, str):
            raise ValueError(f"config variant {cfg.variant!r} is not a string")
        return cfg

    def launch_options(self) -> dict:
        """The launch keywords of this configuration: block sizes, warps and stages; for the batch-tiled and
        streamed persistent kernels ``maxnreg`` (``PERSISTENT_MAXNREG``), and for the cooperative ones (resident
        and streamed) ``launch_cooperative_grid``.

        The persistent kernels run one long-lived program per batch tile (and hidden slice), about one per SM,
        so occupancy is no reason to save registers: left to itself, the ptxas of Triton 3.6 (12.8) held their
        16-row tiles to 128 registers and spilled (GRU and LSTM, 8-40 B); with the cap lifted Triton 3.6 and 3.9
        build every dispatched tile spill-free. A cooperative launch (CU_LAUNCH_ATTRIBUTE_COOPERATIVE) makes the
        driver either start every program of the grid at once or fail the launch ("too many blocks in
        cooperative launch"), so the grid barrier can never wait for a program that is not running, even when
        other work holds SMs; the launcher then falls back to the batch-tiled kernel."""
        options = dict(BLOCK_B=self.BLOCK_B, BLOCK_H=self.BLOCK_H, BLOCK_K=self.BLOCK_K, num_warps=self.num_warps,
                       num_stages=self.num_stages)
        if self.variant in ("tiled", "streamed"):
            options["maxnreg"] = min(PERSISTENT_MAXNREG, 65536 // (32 * self.num_warps))  # 64K registers per SM
        if self.variant in ("resident", "streamed"):
            options["launch_cooperative_grid"] = True
        return options

    def short(self) -> str:
        return (f"{self.variant} {self.BLOCK_B}x{self.BLOCK_H}x{self.BLOCK_K} w{self.num_warps} "
                f"s{self.num_stages}")


def default_kernel_config(device_type: str, hidden: int, width: int, batch: int, itemsize: int = 2,
                        variant: str = "step") -> KernelConfig:
    """Heuristic configuration for a step kernel (or, ``variant="tiled"``, the batch-tiled persistent kernel):
    what runs when no tuned entry exists.

    Args:
        device_type: ``"cuda"`` for compiled kernels, anything else for the Triton interpreter.
        hidden: H, hidden units per gate.
        width: K, the reduction width of the recurrent matmul (P forward, G*H backward).
        batch: B.
        itemsize: bytes per element of the tensors (8 for fp64).
        variant: "step" or "tiled".
    """
    bb = batch_bucket(batch, 1, 64)
    if device_type != "cuda":
        # The interpreter runs programs one after another with numpy ops on whole blocks: few large
        # programs are fastest, and tl.dot has no minimum size there.
        return KernelConfig(BLOCK_B=bb, BLOCK_H=min(triton.next_power_of_2(hidden), 64),
                          BLOCK_K=min(triton.next_power_of_2(width), 64), num_warps=1, num_stages=1, variant=variant)
    if variant == "tiled":
        # One program per 16 rows walks every hidden chunk: the smallest batch tile gives the most programs.
        # The chunk's G accumulators and G weight blocks per K step are live together: 32 units (16 beyond
        # 2-byte dtypes) on 4 warps is the widest that compiles without spills for every cell (sm_90a).
        return KernelConfig(BLOCK_B=16, BLOCK_H=32 if itemsize == 2 else 16,
                          BLOCK_K=max(16, min(128 // itemsize, _cap(width))), num_warps=4, num_stages=2,
                          variant="tiled")
    # tl.dot needs every block dimension >= 16 on NVIDIA GPUs. Small hidden slices spread the
    # sequential recurrence over more SMs; the batch tile follows the batch.
    block_b = max(16, bb)
    block_h = 32 if hidden <= 1024 else 64
    block_k = max(16, min(64, triton.next_power_of_2(width)))
    # A 64x32 fp64 tile on 4 warps spills (LSTM: 1-2 KB per thread, seen in the sm_90a build of
    # `python -m bench.resources`); on 8 warps it does not.
    num_warps = 8 if itemsize == 8 and block_b * block_h >= 2048 else 4
    return KernelConfig(BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k, num_warps=num_warps, num_stages=2)


# ---- the cooperative kernel's tiles ---------------------------------------------------------------------------

#: The resident cooperative kernel: each program holds its slice of W_hh on chip for the whole sequence (``_held_fwd`` /
#: ``_held_bwd`` in kernels/tile.py: K in blocks of ``held_rows`` rows, the forward's gates side by side in one dot),
#: where the compiler keeps it in shared memory. ``RESIDENT_SLICES``: its hidden slices, narrowest first (narrow
#: slices spread a step over more SMs: 96 programs of 8 units at H=768); ``RESIDENT_W_BYTES``: the most W_hh a program
#: holds (the forward's slice, gates padded to a power of two: 4 x 16 x 1536 x 2 B at H=1536 bf16), within the
#: 227 KB of shared memory a block gets on an H100, with room for the rest (``RESIDENT_BLOCK_B``: its batch tiles).
#: From the sm_90a builds of ``python -m bench.resources --dispatch`` (Triton 3.6 and 3.9, bf16 and fp16,
#: H 256..1536, B 1..64): spill-free with 8 warps (wider slices spilled: 32 units, 8-208 B on 4 or 8 warps).
RESIDENT_SLICES = (8, 16)
#: The 8-unit slices serve only layers wider than this: at H <= 512 their backward spilled (sm_90a, Triton 3.6: GRU
#: 32-56 B, LSTM 20 B at H=256), the 16-unit ones' did not.
RESIDENT_NARROW_ABOVE = 512
RESIDENT_W_BYTES = 200 * 1024
#: The same for 32- and 64-bit W_hh: wider slices spilled there (fp32, fp64 and TF32 at H >= 256, 8 B to 22 KB;
#: their dots keep more of the operands in registers).
RESIDENT_W_BYTES_WIDE = 16 * 1024
#: Its batch tiles, fewest rows first: 16, or 32 where 16-row tiles would need more programs than SMs (B=64 at
#: H=768 and 1024: 48 or 64 slices x 2 tiles; they hold K in 128-row blocks, ``held_rows``). 64-row tiles spilled
#: (sm_90a, Triton 3.6, B=64 at H=1536, 16-unit slices, their dots on wgmma: LSTM and GRU 2-11 KB with 128-row
#: blocks, 1-10 KB with 64-row ones, at 255 registers): B=64 at H=1536 is streamed.
RESIDENT_BLOCK_B = (16, 32)
#: The K blocks in which an inference forward streams its W_ih slice (the input projection fused, one dot per block
#: over the slice's gates side by side, as for W_hh): 32 builds without spills (16 spilled RNN's H=1024 forward,
#: 16 B, under ptxas's 128-register heuristic; 64 LSTM's at H=768 with one dot per gate).
RESIDENT_INPUT_BLOCK_K = 32
#: The tallest resident batch tile whose inference forward fuses the input projection (``dispatch.plan_layer``);
#: taller tiles (B=64 at H=768 and 1024) read the input gates that one GEMM computes for all T, as cuDNN does.
#: Their fused builds spilled at ptxas's 128-register cap whatever the held blocks (sm_90a: LSTM at H=768, 16 B,
#: Triton 3.9, with 64-row blocks; RNN at H=1024, 24-32 B, Triton 3.6, with 128-row ones).
RESIDENT_FUSED_INPUT_ROWS = 16


def held_width(width: int, block_b: int) -> int:
    """The width a resident program of ``block_b``-row batch tiles holds of a reduction ``width`` wide (K forward, H
    per gate backward): the next power of two >= 16 up to ``rows = held_rows(block_b)`` (tl.dot's minimum K is 16),
    else the next multiple of ``rows`` (blocks of that many rows, ``kernels/tile.py``'s ``_held_block``: 768 is three
    blocks of 256 at 16-row tiles and six of 128 at 32-row ones, not padded to 1024)."""
    rows = held_rows(block_b)
    if width <= rows:
        return triton.next_power_of_2(max(width, 16))
    return triton.cdiv(width, rows) * rows


def resident_slice_bytes(gates: int, itemsize: int, hidden: int, block_h: int, block_b: int) -> int:
    """Bytes of W_hh one resident program of ``block_b``-row tiles holds: the forward's slice (gates padded to a
    power of two, K held as ``held_width``), which is at least the backward's (G x held_width rows of BLOCK_H
    columns)."""
    return triton.next_power_of_2(gates) * block_h * held_width(hidden, block_b) * itemsize


def coop_config(gates: int, itemsize: int, hidden: int, batch: int, limits: "GpuLimits | None"):
    """(KernelConfig, None), or (None, why not): how the cooperative kernel runs a layer of ``hidden`` units.

    GPU (``limits``): variant "resident" (``_coop_*_kernel`` with RESIDENT: each program holds its W_hh slice on chip
    for the whole sequence) with the first batch tile of ``RESIDENT_BLOCK_B`` (fewest rows first; more than 16 only
    for batches of more than 16 rows) and, for it, the narrowest hidden slice of ``RESIDENT_SLICES``, whose grid
    (hidden slices x batch tiles) has no more programs than the GPU has SMs and whose W_hh slice fits
    ``RESIDENT_W_BYTES`` (``RESIDENT_W_BYTES_WIDE`` for 32- and 64-bit W_hh; 8 warps). Else variant
    "streamed": the batch-tiled kernels' code on a cooperative grid (``coop_grid``) with the grid barrier, batch
    tiles of 16..64 rows; each program walks its 16-unit hidden chunks, re-reading their W_hh rows every step in
    BLOCK_K blocks (from the SM's L1, or L2): the layers whose grid or slice does not fit (bf16 on an H100: B=64 at
    H=1536). Its tiles compile without spills for every H (sm_90a, bf16/fp16, B tile 16 on 4 warps, 32 and 64 on 8;
    with ``KernelConfig.launch_options``' register cap, under Triton 3.9 and 3.6).
    Refused when there are so many batch tiles that 2 hidden slices each would exceed the SMs (the batch-tiled
    kernel fills the GPU there). One program per SM makes the grid resident at once.
    Interpreter (``limits`` None): one resident program holds everything (programs run one after another there;
    two would wait forever at a barrier).
    """
    if limits is None or limits.min_dot == 0:
        return KernelConfig(BLOCK_B=_cap(batch), BLOCK_H=_cap(hidden), BLOCK_K=64, num_warps=1, num_stages=1,
                          variant="resident"), None
    block_b = max(16, min(64, _cap(batch)))
    n_b = triton.cdiv(batch, block_b)
    if 2 * n_b > limits.sms:
        return None, (f"{n_b} batch tiles leave no room for 2 hidden slices each on the GPU's {limits.sms} SMs "
                      f"(the batch-tiled kernel already fills it)")
    w_bytes = RESIDENT_W_BYTES if itemsize <= 2 else RESIDENT_W_BYTES_WIDE
    for rows in RESIDENT_BLOCK_B:
        if rows > RESIDENT_BLOCK_B[0] and rows > _cap(batch):
            break
        tiles = triton.cdiv(batch, rows)
        for block_h in RESIDENT_SLICES:
            if block_h == RESIDENT_SLICES[0] and hidden <= RESIDENT_NARROW_ABOVE:
                continue
            if (triton.cdiv(hidden, block_h) * tiles <= limits.sms
                    and resident_slice_bytes(gates, itemsize, hidden, block_h, rows) <= w_bytes):
                return KernelConfig(BLOCK_B=rows, BLOCK_H=block_h, BLOCK_K=RESIDENT_INPUT_BLOCK_K, num_warps=8,
                                    num_stages=1, variant="resident"), None
    return KernelConfig(BLOCK_B=block_b, BLOCK_H=16, BLOCK_K=max(16, min(128 // itemsize, _cap(hidden))),
                      num_warps=4 if block_b == 16 else 8, num_stages=2 if itemsize == 8 else 3,
                      variant="streamed"), None


def coop_grid(cfg: KernelConfig, hidden: int, batch: int, sms: int) -> tuple[int, int]:
    """(hidden slices, batch tiles) of a cooperative launch of ``coop_config``'s ``cfg`` on a GPU with ``sms``
    SMs (the interpreter's single-program plan gives (1, 1) whatever ``sms``). Resident: one slice of BLOCK_H
    units per program. Streamed: the BLOCK_H chunks spread evenly over at most ``sms`` programs in all."""
    n_b = triton.cdiv(batch, cfg.BLOCK_B)
    chunks = triton.cdiv(hidden, cfg.BLOCK_H)
    if cfg.variant == "resident":
        return chunks, n_b
    per_program = triton.cdiv(chunks, max(1, sms // n_b))
    return triton.cdiv(chunks, per_program), n_b


# ---- the problem a configuration is chosen for -------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One tuning problem: a kernel of a cell on one shape (B is the batch bucket's representative)."""

    kernel: str  # "step_fwd" | "step_bwd"
    cell: str
    dtype: str  # key dtype name, e.g. "float16", "float32-tf32"
    H: int
    K: int
    B: int
    I: int = 0  # noqa: E741 - the legend's name

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, got {self.cell!r}")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {tuple(DTYPE_BYTES)}, got {self.dtype!r}")

    @property
    def gates(self) -> int:
        return CELLS[self.cell].gates

    @property
    def saved(self) -> int:
        return CELLS[self.cell].saved

    @property
    def itemsize(self) -> int:
        return DTYPE_BYTES[self.dtype][0]

    @property
    def acc_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype][1]

    @property
    def width(self) -> int:
        """The longest reduction inside the kernel: K, or I when the input projection is fused."""
        return max(self.K, self.I)

    @property
    def variant(self) -> str:
        """The variant whose kernel this is ("step" or "tiled")."""
        return self.kernel.split("_")[0]

    def heuristic(self, device_type: str = "cuda") -> KernelConfig:
        return default_kernel_config(device_type, self.H, self.K, self.B, self.itemsize, self.variant)


# ---- what a GPU can hold -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuLimits:
    """Per-GPU resource limits the candidates are pruned against."""

    name: str
    smem_per_block: int  # bytes one block may request (the opt-in maximum; what Triton checks at launch)
    smem_per_sm: int
    regs_per_sm: int = 65536
    regs_per_thread: int = 255
    threads_per_block: int = 1024
    sms: int = 132
    min_dot: int = 16  # tl.dot's minimum block dimension (0: none, under the interpreter)


#: Known GPUs by a substring of their name (torch.cuda.get_device_name). H100 and H200: 228 KB shared memory per
#: SM of which 227 KB per block, 64K registers per SM, 255 per thread.
KNOWN_GPUS = {
    "H100": GpuLimits("NVIDIA H100 80GB HBM3", smem_per_block=227 * 1024, smem_per_sm=228 * 1024, sms=132),
    "H200": GpuLimits("NVIDIA H200", smem_per_block=227 * 1024, smem_per_sm=228 * 1024, sms=132),
    "A100": GpuLimits("NVIDIA A100-SXM4-80GB", smem_per_block=163 * 1024, smem_per_sm=164 * 1024, sms=108),
}
#: The Triton interpreter: no shared memory, register or dot-size limits.
INTERPRETER = GpuLimits("cpu-interpreter", smem_per_block=1 << 40, smem_per_sm=1 << 40, regs_per_sm=1 << 40,
                        regs_per_thread=1 << 20, threads_per_block=1 << 20, sms=1, min_dot=0)


def known_limits(name: str) -> GpuLimits | None:
    """Limits of a GPU from the KNOWN_GPUS table, by tag ("H100") or (a substring of) its name; None if unknown."""
    if name.upper() in KNOWN_GPUS:
        return KNOWN_GPUS[name.upper()]
    for tag, lim in KNOWN_GPUS.items():
        if tag.lower() in name.lower():
            return replace(lim, name=name)
    return None


def device_limits(device) -> GpuLimits:
    """Limits of a torch device: read from the CUDA device properties (once per device and process: the
    launcher asks at every persistent layer call), the interpreter's for anything else."""
    if getattr(device, "type", device) != "cuda":
        return INTERPRETER
    import torch

    return _cuda_limits(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_limits(index: int) -> GpuLimits:
    import torch

    props = torch.cuda.get_device_properties(index)
    known = known_limits(props.name)
    smem_block = getattr(props, "shared_memory_per_block_optin", None) or (known.smem_per_block if known else None)
    smem_sm = getattr(props, "shared_memory_per_multiprocessor", None) or (known.smem_per_sm if known else None)
    if smem_block is None:  # an old torch and an unknown GPU: the sm_80 opt-in limit is a safe floor
        smem_block, smem_sm = 163 * 1024, 164 * 1024
    return GpuLimits(name=props.name, smem_per_block=int(smem_block), smem_per_sm=int(smem_sm or smem_block),
                     regs_per_sm=int(getattr(props, "regs_per_multiprocessor", 0) or 65536),
                     sms=int(props.multi_processor_count))


# ---- resource model ----------------------------------------------------------------------------------------

REG_BASE = 32  # registers for pointers, offsets, masks and loop state


@dataclass(frozen=True)
class Resources:
    smem: int  # bytes per program
    regs: int  # 32-bit registers per thread
    threads: int


def _live_tiles(p: Problem) -> int:
    if p.kernel.endswith("_fwd"):
        return 2 * p.gates + 1
    cell = CELLS[p.cell]
    extra = 3 if cell.has_c else (1 if cell.reads_h else 0)  # dc, c_{t-1}, c_t | h_{t-1}
    return 1 + p.saved + extra


def step_resources(p: Problem, c: KernelConfig) -> Resources:
    """Estimated shared memory and registers of one program of the step kernel (model in the module doc)."""
    tiles = c.BLOCK_B * c.BLOCK_K + (p.gates if p.kernel.endswith("_fwd") else 1) * c.BLOCK_K * c.BLOCK_H
    smem = max(c.num_stages, 1) * tiles * p.itemsize + c.BLOCK_B * c.BLOCK_H * p.acc_bytes
    threads = 32 * c.num_warps
    acc_words = p.acc_bytes // 4
    regs = math.ceil(_live_tiles(p) * c.BLOCK_B * c.BLOCK_H * acc_words / threads) + REG_BASE
    return Resources(smem=smem, regs=regs, threads=threads)


def resource_violation(res: Resources, limits: GpuLimits) -> str | None:
    """Why a program with these resources cannot run (or must spill) on the GPU; None if it fits."""
    if res.smem > limits.smem_per_block:
        return f"smem {res.smem} B > {limits.smem_per_block} B per block"
    if res.threads > limits.threads_per_block:
        return f"{res.threads} threads > {limits.threads_per_block} per block"
    if res.regs > limits.regs_per_thread:
        return f"regs {res.regs} > {limits.regs_per_thread} per thread"
    if res.regs * res.threads > limits.regs_per_sm:
        return f"regs {res.regs} x {res.threads} threads > {limits.regs_per_sm} per SM"
    return None


# ---- candidates --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSpace:
    """The values each parameter of the step variant may take."""

    BLOCK_B: tuple = (16, 32, 64, 128)
    BLOCK_H: tuple = (16, 32, 64, 128)
    BLOCK_K: tuple = (32, 64, 128)
    num_warps: tuple = (2, 4, 8)
    num_stages: tuple = (1, 2, 3)


STEP_SPACE = StepSpace()


def _cap(n: int) -> int:
    return triton.next_power_of_2(max(n, 1))


def step_shape_violation(p: Problem, c: KernelConfig, limits: GpuLimits) -> str | None:
    """Why a step configuration is useless or invalid for this problem regardless of resources; None if fine."""
    if limits.min_dot and min(c.BLOCK_B, c.BLOCK_H, c.BLOCK_K) < limits.min_dot:
        return f"a block dimension < {limits.min_dot} (tl.dot minimum)"
    for name, block, n in (("BLOCK_B", c.BLOCK_B, p.B), ("BLOCK_H", c.BLOCK_H, p.H), ("BLOCK_K", c.BLOCK_K, p.width)):
        if block > max(_cap(n), limits.min_dot):
            return f"{name}={block} larger than the problem ({n})"
    if limits.min_dot and 32 * c.num_warps * 4 > c.BLOCK_B * c.BLOCK_H:
        return "fewer than 4 tile elements per thread"
    if c.num_stages > max(1, triton.cdiv(p.width, c.BLOCK_K)):
        return "more stages than K iterations"
    return None


def step_candidates(p: Problem, space: StepSpace = STEP_SPACE) -> Iterable[KernelConfig]:
    for bb, bh, bk, w, s in itertools.product(space.BLOCK_B, space.BLOCK_H, space.BLOCK_K, space.num_warps,
                                              space.num_stages):
        yield KernelConfig(BLOCK_B=bb, BLOCK_H=bh, BLOCK_K=bk, num_warps=w, num_stages=s, variant=p.variant)


@dataclass(frozen=True)
class Variant:
    """One implementation of launcher kernels, as the tuner and the cache see it."""

    name: str
    kernels: tuple  # which launcher kernels it implements
    candidates: Callable[[Problem], Iterable[KernelConfig]]
    resources: Callable[[Problem, KernelConfig], Resources]
    shape_violation: Callable[[Problem, KernelConfig, GpuLimits], str | None]


VARIANTS: dict[str, Variant] = {
    "step": Variant("step", ("step_fwd", "step_bwd"), step_candidates, step_resources, step_shape_violation),
    "tiled": Variant("tiled", ("tiled_fwd", "tiled_bwd"), step_candidates, step_resources, step_shape_violation),
}


@dataclass
class Pruned:
    """Candidates of a problem split into survivors and pruned ones, with the reason of each prune."""

    survivors: list
    by_shape: list  # (config, reason)
    by_resources: list  # (config, reason)

    @property
    def total(self) -> int:
        return len(self.survivors) + len(self.by_shape) + len(self.by_resources)


def prune(p: Problem, configs: Iterable[KernelConfig], limits: GpuLimits) -> Pruned:
    """Split ``configs`` by the shape rules and the resource model of their variant; nothing is compiled."""
    out = Pruned([], [], [])
    seen = set()
    for c in configs:
        if c in seen:
            continue
        seen.add(c)
        v = VARIANTS.get(c.variant)
        if v is None or p.kernel not in v.kernels:
            out.by_shape.append((c, f"variant {c.variant!r} does not implement {p.kernel}"))
            continue
        why = v.shape_violation(p, c, limits)
        if why:
            out.by_shape.append((c, why))
            continue
        why = resource_violation(v.resources(p, c), limits)
        if why:
            out.by_resources.append((c, why))
            continue
        out.survivors.append(c)
    return out


def candidates(p: Problem, limits: GpuLimits, variants: Iterable[str] | None = None) -> Pruned:
    """Every variant's candidates for ``p``, pruned for ``limits``."""
    names = list(variants) if variants is not None else list(VARIANTS)
    configs = itertools.chain.from_iterable(VARIANTS[n].candidates(p) for n in names if p.kernel in VARIANTS[n].kernels)
    return prune(p, configs, limits)
