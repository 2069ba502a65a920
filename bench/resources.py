"""Compile fusedrnn's kernels (step, batch-tiled, cooperative) for an NVIDIA H100 (sm_90a) without a GPU and report their resources.

    python -m bench.resources                      # every combination the launcher uses, as a table
    python -m bench.resources --json rows.json     # also write the rows
    python -m bench.resources --src .              # load kernels/ and autotune/ by path (no torch, no fusedrnn)
    python -m bench.resources --dispatch           # only what dispatch picks on an H100 (tests assert on it)
    python -m bench.resources --launched --hidden 1 5 33 --batch 3   # the launcher's own launches, see below

Each kernel goes through ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``: frontend,
TTGIR, LLVM, PTX and the ptxas bundled with Triton; no CUDA driver is touched. The signature mirrors what
``fusedrnn.launch`` passes for contiguous tensors and H a multiple of 16: pointers and ints divisible by 16
carry ``tt.divisibility=16``, a stride equal to 1 (W_hh's column stride) becomes the constant 1, B is never
specialized. Accumulator-dtype pointers (c, saved activations, carries) are fp32, fp64 for fp64 tensors.

Per kernel: registers (``cuobjdump --dump-resource-usage`` of the cubin Triton built), spill bytes (``ptxas -v``
on its PTX, with Triton's flags), shared memory (``metadata.shared``, what a launch requests) and the matrix
instructions of the SASS (``cuobjdump -sass``): HGMMA (Hopper wgmma), HMMA (mma.sync tensor cores), DMMA
(fp64 tensor cores) or none (no matmul, or an FMA loop). Launches that give the same kernel (the H values here
differ only at run time) are compiled and analyzed once.

``--launched`` records the launches themselves instead: ``fusedrnn.launch`` runs each layer on CPU tensors with its
CUDA decisions for an H100 and its kernels replaced by recorders (``record_launches``), and each launch is compiled
with the signature Triton's JIT would give its arguments (``launch_spec``: any H, odd sizes included, where
``build_source`` assumes multiples of 16). Its PTX is checked too: the cooperative kernels' grid barrier
(``barrier_violations``) and float max/min that drop NaN (``nan_dropping_minmax``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from . import ptx
from .ptx import ARCH, SHARED, barrier_violations, nan_dropping_minmax, ptx_params  # noqa: F401

CELLS = {"lstm": (0, 4, 4), "gru": (1, 3, 4), "rnn_tanh": (2, 1, 1), "rnn_relu": (3, 1, 1)}  # CELL, G, NS
#: name -> (tensor dtype, accumulator dtype, DOT_PRECISION), as fusedrnn.launch._dot_settings picks on CUDA.
DTYPES = {"fp16": ("fp16", "fp32", "tf32"), "bf16": ("bf16", "fp32", "tf32"), "fp32": ("fp32", "fp32", "ieee"),
          "fp32-tf32": ("fp32", "fp32", "tf32"), "fp64": ("fp64", "fp64", "ieee")}
ACC_PTRS = {"p_c_prev", "p_c", "p_save", "p_dh", "p_dc", "p_cs"}
HIDDEN = (256, 512, 768, 1024)
BATCH = (16, 64)
_SRC = None  # repo root to load kernels/ and autotune/ from by path (--src), else the installed fusedrnn


def _load_by_path(name: str, folder: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _modules():
    """(kernels, autotune) modules: fusedrnn's, or loaded by path from _SRC without importing torch."""
    if _SRC is None:
        import fusedrnn.autotune
        import fusedrnn.kernels
        return fusedrnn.kernels, fusedrnn.autotune
    return (sys.modules.get("_fr_kernels") or _load_by_path("_fr_kernels", os.path.join(_SRC, "kernels")),
            sys.modules.get("_fr_autotune") or _load_by_path("_fr_autotune", os.path.join(_SRC, "autotune")))


#: kernel -> the function's name in kernels/ (the names of ``fusedrnn.calls``: a cooperative kernel is resident or
#: streamed by its constexpr RESIDENT).
KERNEL_FNS = {"step_fwd": "_step_fwd_kernel", "step_bwd": "_step_bwd_kernel", "tiled_fwd": "_tiled_fwd_kernel",
              "tiled_bwd": "_tiled_bwd_kernel", "resident_fwd": "_coop_fwd_kernel", "resident_bwd": "_coop_bwd_kernel",
              "streamed_fwd": "_coop_fwd_kernel", "streamed_bwd": "_coop_bwd_kernel"}
#: kind prefix -> the cooperative plan's variant (``coop_config``) that runs it.
COOP_VARIANTS = {"resident": "resident", "streamed": "streamed"}
KINDS = tuple(KERNEL_FNS)
UNIT_STRIDES = {"s_wc", "s_wic"}  # W's column strides: 1 for contiguous weights, so Triton makes them constants
UNSPECIALIZED = {"T", "B", "B_prev", "B_next"}  # do_not_specialize in the kernels
INDEX_PTRS = {"p_sizes": "*i64", "p_offsets": "*i64", "p_bar": "*i32"}


def config_for(kind: str, cell: str, dtype: str, H: int, B: int, limits=None):
    """The configuration fusedrnn's heuristics give this kernel on the GPU ``limits`` (default: an H100): the
    step and batch-tiled kernels' ``default_kernel_config``, the cooperative kernels' ``coop_config`` (None
    when that cooperative variant would not run this shape)."""
    _, autotune = _modules()
    spaces = sys.modules[autotune.__name__ + ".spaces"]
    _, G, _ = CELLS[cell]
    itemsize = {"fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}[DTYPES[dtype][0]]
    variant, direction = kind.split("_")
    if variant in COOP_VARIANTS:
        plan = spaces.coop_config(G, itemsize, H, B, limits or spaces.KNOWN_GPUS["H100"])[0]
        return plan if plan is not None and plan.variant == COOP_VARIANTS[variant] else None
    width = H if direction == "fwd" else G * H
    return spaces.default_kernel_config("cuda", H, width, B, itemsize, variant)


def build_source(kind: str, cell: str, dtype: str, H: int, B: int, cfg=None, save: bool = True,
                 has_bias: bool = True, has_next: bool = True, fuse_input: bool = False):
    """(ASTSource, options, config) of one launch of a kernel (a key of KERNEL_FNS), as ``fusedrnn.launch``
    makes it for contiguous tensors with H a multiple of 16 (pointers and ints divisible by 16, W's unit column
    stride a constant, the batch and the length never specialized). ``cfg`` defaults to ``config_for``."""
    import triton
    kernels, _ = _modules()
    code, G, NS = CELLS[cell]
    ty, acc, precision = DTYPES[dtype]
    cfg = cfg or config_for(kind, cell, dtype, H, B)
    if cfg is None:
        raise ValueError(f"the {kind} kernel does not run {cell} H={H} B={B} {dtype} on an H100")
    fn = getattr(kernels, KERNEL_FNS[kind])
    launch = cfg.launch_options()
    blocks = {k: launch.pop(k) for k in ("BLOCK_B", "BLOCK_H", "BLOCK_K")}
    resident = kind.startswith("resident")
    width = triton.next_power_of_2(max(H, 16)) if resident else None  # KP / HP as the launcher passes them
    params = dict(CELL=code, G=G, NS=NS, HAS_C=cell == "lstm", READS_H=cell == "gru", SPLIT_DX=cell == "gru",
                  **blocks, UPCAST_DOT=False, DOT_PRECISION=precision, HAS_BIAS=has_bias, SAVE=save,
                  HAS_NEXT=has_next, FUSE_INPUT=fuse_input, TWO_SOURCES=False, PACKED=False, REVERSE=False,
                  RESIDENT=resident, KP=width, HP=width)
    constexprs, signature, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in params:
            signature[name], constexprs[name] = "constexpr", params[name]
        elif name in INDEX_PTRS:
            signature[name] = INDEX_PTRS[name]
            attrs[(i, )] = [["tt.divisibility", 16]]
        elif name.startswith("p_"):
            signature[name] = "*" + (acc if name in ACC_PTRS else ty)
            attrs[(i, )] = [["tt.divisibility", 16]]
        elif name in UNIT_STRIDES:
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = "i32"
            if name not in UNSPECIALIZED:
                attrs[(i, )] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    options = dict(launch, enable_fp_fusion=True)  # num_warps, num_stages (and maxnreg) as fusedrnn launches it
    return src, options, cfg


def compile_kernel(kind: str, cell: str, dtype: str, H: int, B: int, cfg=None, **flags) -> dict:
    """Compile one kernel for sm_90 and return its row.

    Args: kind a key of KERNEL_FNS; cell a key of CELLS; dtype a key of DTYPES; H hidden size; B batch;
    cfg a KernelConfig (default: fusedrnn's heuristic, ``config_for``); flags save / has_bias / fuse_input
    (forward kernels) or has_next (step_bwd). Raises on a failed compile.
    Row keys: the arguments, BLOCK_B/H/K, num_warps, num_stages, regs, spills (bytes stored + loaded),
    spill_stores, spill_loads, smem (bytes), mma (instruction counts), tensor_cores (e.g. "HGMMA" or "none").
    """
    import triton
    from triton.backends.compiler import GPUTarget
    src, options, cfg = build_source(kind, cell, dtype, H, B, cfg, **flags)
    with contextlib.redirect_stdout(io.StringIO()):  # ptxas failures print the whole PTX
        k = triton.compile(src, target=GPUTarget("cuda", ARCH, 32), options=options)
    res = ptx.analyze(k.asm["ptx"], k.asm["cubin"])
    used = [op for op, n in res["mma"].items() if n]
    return dict(kind=kind, cell=cell, dtype=dtype, H=H, B=B, **flags, variant=cfg.variant, BLOCK_B=cfg.BLOCK_B, BLOCK_H=cfg.BLOCK_H,
                BLOCK_K=cfg.BLOCK_K, num_warps=cfg.num_warps, num_stages=cfg.num_stages, **res,
                spills=(res["spill_stores"] or 0) + (res["spill_loads"] or 0), smem=k.metadata.shared,
                tensor_cores="+".join(used) if used else "none")


def ptx_of(kind: str, cell: str, dtype: str, H: int, B: int, cfg=None, **flags):
    """(PTX, its parameter names) of one kernel as ``compile_kernel`` builds it (``build_source``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    src, options, cfg = build_source(kind, cell, dtype, H, B, cfg, **flags)
    with contextlib.redirect_stdout(io.StringIO()):
        k = triton.compile(src, target=GPUTarget("cuda", ARCH, 32), options=options)
    return k.asm["ptx"], ptx_params(src)


def _flag_sets(kind: str):
    if kind == "step_fwd":
        return [dict(save=save, has_bias=has_bias) for save in (True, False) for has_bias in (True, False)]
    if kind == "step_bwd":
        return [dict(has_next=True), dict(has_next=False)]
    if kind.endswith("_fwd"):  # persistent: training (input projection precomputed) and inference (fused)
        return [dict(save=True, fuse_input=False), dict(save=False, fuse_input=True)]
    return [{}]


def combinations(cells=tuple(CELLS), dtypes=tuple(DTYPES), hidden=HIDDEN, batch=BATCH, kinds=KINDS):
    """(kind, cell, dtype, H, B, flags) of every launch configuration to cover (cooperative kernels only where
    fusedrnn would run that variant on an H100)."""
    for kind in kinds:
        for cell in cells:
            for dtype in dtypes:
                for H in hidden:
                    for B in batch:
                        if kind.split("_")[0] in COOP_VARIANTS and config_for(kind, cell, dtype, H, B) is None:
                            continue
                        for flags in _flag_sets(kind):
                            yield kind, cell, dtype, H, B, flags


LENGTHS = (16, 100, 1024)


def dispatched(cells=tuple(CELLS), dtypes=("bf16", "fp16"), hidden=HIDDEN, batch=BATCH, lengths=LENGTHS):
    """(kind, cell, dtype, H, B, flags) of the kernels fusedrnn's dispatch runs on an H100 (no tuned table: the
    heuristics) for a training step (forward with saved activations, backward) and an inference forward, at
    each sequence length in ``lengths``. Imports fusedrnn (and torch)."""
    import torch

    from fusedrnn import dispatch
    _, autotune = _modules()
    h100 = sys.modules[autotune.__name__ + ".spaces"].KNOWN_GPUS["H100"]
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp32-tf32": torch.float32,
          "fp64": torch.float64}
    seen = set()
    for cell in cells:
        for dtype in dtypes:
            for H in hidden:
                for B in batch:
                    for T in lengths:
                        kernel, plan = dispatch.choose(cell, dt[dtype], torch.device("cuda"), T, B, H, False, h100)
                        if kernel == "step":
                            kinds = [("step_fwd", dict(save=True, has_bias=True)),
                                     ("step_fwd", dict(save=False, has_bias=True)), ("step_bwd", dict(has_next=True))]
                        else:
                            prefix = plan.variant if plan else "tiled"  # "resident" or "streamed"
                            kinds = [(f"{prefix}_fwd", dict(save=True, fuse_input=False)),
                                     (f"{prefix}_fwd", dict(save=False, fuse_input=True)), (f"{prefix}_bwd", {})]
                        for kind, flags in kinds:
                            key = (kind, cell, dtype, H, B, tuple(sorted(flags.items())))
                            if key not in seen:
                                seen.add(key)
                                yield kind, cell, dtype, H, B, flags


# ---- launches recorded from the launcher ----------------------------------------------------------------------

#: Layer calls whose launches ``launched`` records: (name, T, training, forced kernel). T=1 is a single step (the
#: input projection fused into the step kernel), T=2 runs stepwise like any T < 32 (a first step reading h0, a last
#: one without a next), T=32 cooperatively wherever ``coop_plan`` accepts the layer (else stepwise); the batch-tiled
#: kernel, which an H100's dispatch picks only for batches too large for a cooperative grid (and as the fallback of
#: a cooperative launch the driver refuses), is forced.
SCENARIOS = (("T=1", 1, True, "auto"), ("T=1", 1, False, "auto"), ("T=2", 2, True, "auto"),
             ("T=2", 2, False, "auto"), ("T=32", 32, True, "auto"), ("T=32", 32, False, "auto"),
             ("tiled", 2, True, "tiled"), ("tiled", 2, False, "tiled"))
_TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp32-tf32": "float32", "fp64": "float64"}


def record_launches(cell: str, dtype: str, H: int, B: int, T: int, train: bool, kernel: str = "auto", I=None,
                    limits=None) -> list:
    """The kernel launches ``fusedrnn.launch`` makes for one layer call (one direction, dense input, biases, input size
    ``I``, default H) on the GPU ``limits`` (default an H100) without a GPU: the layer runs on CPU tensors inside
    ``dispatch.planning_for(limits)`` (every decision as on that GPU: plans, cooperative grids, CUDA dot settings, the
    heuristic configurations ``default_kernel_config`` as with no tuned table; TF32 as the dtype name says) and
    ``calls.recording(run=False)`` (each launch recorded, none run). A training call runs the forward with saved
    activations and the backward; T=1 training also runs the Cell API (``launch.cell_fwd`` / ``cell_bwd``). Returns
    [(JITFunction, args, kwargs)] in launch order (every argument by keyword). Imports torch."""
    import torch

    import fusedrnn
    from fusedrnn import calls, dispatch, launch, settings
    _, autotune = _modules()
    spaces = sys.modules[autotune.__name__ + ".spaces"]
    limits = limits or spaces.KNOWN_GPUS["H100"]
    I = H if I is None else I  # noqa: E741 - the legend's name
    linear = torch.nn.functional.linear  # the input projection's values feed only recorders: an empty result will do
    torch.nn.functional.linear = lambda a, w, b=None: torch.empty((*a.shape[:-1], w.shape[0]), dtype=a.dtype)
    try:
        with fusedrnn.use_kernel(kernel), dispatch.planning_for(limits), \
                settings.use_tf32(DTYPES[dtype][2] == "tf32"), calls.recording(run=False) as log:
            spec = launch.CELLS[cell]
            dt = getattr(torch, _TORCH_DTYPES[dtype])
            G, lstm = spec.gates, spec.has_c

            def rnd(*shape):
                return torch.randn(*shape).to(dt)

            x, h0, c0 = rnd(T, B, I), rnd(B, H), rnd(B, H) if lstm else None
            w_ih, w_hh, b_ih, b_hh = rnd(G * H, I), rnd(G * H, H), rnd(G * H), rnd(G * H)
            y, h_n, c_n, sv, cs, hr = launch.recurrence_fwd(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, None, False,
                                                            train)
            if train:
                launch.recurrence_bwd(cell, rnd(*y.shape), rnd(B, H), rnd(B, H) if lstm else None, x, h0, c0, w_ih,
                                      w_hh, None, True, None, False, y, sv, cs, hr)
            if train and T == 1:
                h1, c1, sv1 = launch.cell_fwd(cell, x[0], h0, c0, w_ih, w_hh, b_ih, b_hh, True)
                launch.cell_bwd(cell, rnd(B, H), rnd(B, H) if lstm else None, x[0], h0, c0, w_ih, w_hh, True, c1, sv1)
    finally:
        torch.nn.functional.linear = linear
    return [(one.kernel, (), dict(one.arguments)) for one in log]


def _kind_of(fn_name: str, kwargs: dict) -> str:
    kind = {v: k for k, v in KERNEL_FNS.items() if not k.startswith("streamed")}[fn_name]
    return kind.replace("resident", "streamed") if kwargs.get("RESIDENT") is False else kind


_LAUNCH_OPTIONS = ("num_warps", "num_stages", "maxnreg", "launch_cooperative_grid")


def launch_spec(fn, args, kwargs) -> dict:
    """What Triton's JIT would compile for this launch, as plain data (picklable): the kernel's name, the signature
    and attributes its specialization gives the arguments (ints equal to 1 become constants, ints and pointers
    divisible by 16 carry ``tt.divisibility``, ``do_not_specialize`` honoured; Triton's own ``specialize_impl``),
    the constexprs and the compile options."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import native_specialize_impl
    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in _LAUNCH_OPTIONS if k in kwargs}
    values = dict(zip(fn.arg_names, args), **kwargs)
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, param) in enumerate(zip(fn.arg_names, fn.params)):
        value = values[name]
        if param.is_constexpr:
            signature[name], constexprs[name] = "constexpr", value
            continue
        ty, spec = native_specialize_impl(BaseBackend, value, False, not param.do_not_specialize,
                                          not param.do_not_specialize_on_alignment)
        if ty == "constexpr":
            signature[name], constexprs[name] = "constexpr", spec
        else:
            signature[name] = ty
            if spec == "D":
                attrs[(i, )] = [["tt.divisibility", 16]]
    return dict(fn=fn.__name__, kind=_kind_of(fn.__name__, kwargs), signature=signature, constexprs=constexprs,
                attrs=attrs, options=dict(options, enable_fp_fusion=True))


def spec_key(spec: dict) -> tuple:
    """What a launch's compilation depends on, but for divisibility hints: the kernel, its constexprs (block sizes,
    KP/HP, flags, dtypes; specialized 1s), argument types and options. Launches of many H share it; the hints (which
    differ with H mod 16) change the width of memory accesses, not which dots, layouts and loops are built."""
    return (spec["fn"], tuple(sorted(spec["constexprs"].items())), tuple(spec["signature"].values()),
            tuple(sorted(spec["options"].items())))


def config_key(spec: dict) -> tuple:
    """A launch's configuration: the kernel (and its variant), cell, tensor dtype and dot precision, block sizes,
    KP/HP and the compile options; not the flags (SAVE, FUSE_INPUT, HAS_NEXT...) nor the specialized arguments."""
    c = spec["constexprs"]
    return (spec["fn"], spec["kind"], c["CELL"], spec["signature"]["p_w"], c["DOT_PRECISION"],
            *(c.get(k) for k in ("BLOCK_B", "BLOCK_H", "BLOCK_K", "KP", "HP")), tuple(sorted(spec["options"].items())))


def _coverage(spec: dict, H: int) -> tuple:
    """Which launch of a configuration ``launched(per_config=True)`` compiles: the most dots (the fused input
    projection, the backward's matmul with the next step), then saved activations, then the smallest H (H=1 makes
    Triton specialize H, K and strides to constants)."""
    c = spec["constexprs"]
    return (bool(c.get("FUSE_INPUT")) + bool(c.get("HAS_NEXT")), bool(c.get("SAVE")), -H)


def launched(cells=tuple(CELLS), dtypes=("fp16", "bf16", "fp32", "fp64"), hidden=HIDDEN, batch=BATCH,
             scenarios=SCENARIOS, per_config: bool = False, jobs: int = 1):
    """{key: (spec, [(cell, dtype, H, B, scenario), ...])}: the launches ``record_launches`` records for these layers
    and ``SCENARIOS``, with the layers that make them. Keyed by ``spec_key`` (each distinct compilation) or, with
    ``per_config``, by ``config_key`` (each configuration once: its launch of most ``_coverage``). Recorded in
    ``jobs`` processes, one cell and dtype each."""
    groups = [(cell, dtype, tuple(hidden), tuple(batch), tuple(scenarios)) for cell in cells for dtype in dtypes]
    if jobs <= 1:
        recorded = map(_record_group, groups)
    else:
        pool = ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(_SRC, ))
        recorded = pool.map(_record_group, groups)
    out = {}
    for group in recorded:
        for spec, where in group:
            key = config_key(spec) if per_config else spec_key(spec)
            H = where[2]
            if key not in out:
                out[key] = (spec, [where], H)
                continue
            best, wheres, best_h = out[key]
            wheres.append(where)
            if per_config and _coverage(spec, H) > _coverage(best, best_h):
                out[key] = (spec, wheres, H)
    if jobs > 1:
        pool.shutdown()
    return {k: (spec, wheres) for k, (spec, wheres, _) in out.items()}


def _record_group(group) -> list:
    """[(launch_spec, (cell, dtype, H, B, scenario))] of one cell and dtype's layers (``launched``)."""
    cell, dtype, hidden, batch, scenarios = group
    out = []
    for H in hidden:
        for B in batch:
            for name, T, train, kernel in scenarios:
                for fn, args, kwargs in record_launches(cell, dtype, H, B, T, train, kernel):
                    out.append((launch_spec(fn, args, kwargs),
                                (cell, dtype, H, B, f"{name} {'train' if train else 'infer'}")))
    return out


def compile_spec(spec: dict, analyze: bool = False):
    """Compile a ``launch_spec`` for sm_90a (kernels from ``_SRC`` with --src). Returns the CompiledKernel and, with
    ``analyze``, its resources (``ptx.analyze``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    kernels, _ = _modules()
    src = triton.compiler.ASTSource(fn=getattr(kernels, spec["fn"]), signature=spec["signature"],
                                    constexprs=spec["constexprs"], attrs=spec["attrs"])
    with contextlib.redirect_stdout(io.StringIO()):  # ptxas failures print the whole PTX
        k = triton.compile(src, target=GPUTarget("cuda", ARCH, 32), options=spec["options"])
    return k, (ptx.analyze(k.asm["ptx"], k.asm["cubin"]) if analyze else None)


def _spec_row(item) -> dict:
    spec, where, analyze = item
    c = spec["constexprs"]
    row = dict(kind=spec["kind"], cell=where[0][0], dtype=where[0][1], H=sorted({w[2] for w in where}),
               B=sorted({w[3] for w in where}), scenarios=sorted({w[4] for w in where}),
               BLOCK_B=c.get("BLOCK_B"), BLOCK_H=c.get("BLOCK_H"), BLOCK_K=c.get("BLOCK_K"),
               KP=c.get("KP", c.get("HP")), num_warps=spec["options"].get("num_warps"),
               num_stages=spec["options"].get("num_stages"))
    start = time.perf_counter()
    try:
        k, res = compile_spec(spec, analyze)
    except Exception as e:  # noqa: BLE001 - one failing launch must not hide the others
        row.update(ok=False, error=_error_line(e), error_full=str(e)[-4000:])
        return row
    row.update(ok=True, seconds=round(time.perf_counter() - start, 2), smem=k.metadata.shared, **(res or {}))
    if res:
        row["spills"] = (res["spill_stores"] or 0) + (res["spill_loads"] or 0)
    ptx = k.asm["ptx"]
    row["nan_minmax"] = nan_dropping_minmax(ptx)
    if spec["kind"].split("_")[0] in COOP_VARIANTS:
        row["barrier"] = barrier_violations(ptx, ptx_params(spec), SHARED[spec["kind"].split("_")[1]])
    return row


def run_launched(specs: dict, jobs: int = 1, src=None, analyze: bool = False) -> list[dict]:
    """Compile each distinct launch of ``launched`` once (in ``jobs`` processes): one row per compilation."""
    _init_worker(src)
    items = [(spec, where, analyze) for spec, where in specs.values()]
    if jobs <= 1:
        return list(map(_spec_row, items))
    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(src, )) as pool:
        return list(pool.map(_spec_row, items))


def format_launched(rows: list[dict]) -> str:
    out = [f"{'kind':12} {'cell':8} {'dtype':9} {'blocks':10} {'KP':>3} {'w':>2} {'s':>1}  H / error"]
    for r in rows:
        blocks = f"{r['BLOCK_B']}x{r['BLOCK_H']}x{r['BLOCK_K']}"
        tail = (" ".join(map(str, r["H"])) + (f"  regs {r['regs']} spills {r['spills']}" if "regs" in r else "")
                if r["ok"] else f"FAILED {r['error']}  (H {' '.join(map(str, r['H']))})")
        if r.get("barrier"):
            tail += f"  BARRIER: {'; '.join(r['barrier'])}"
        if r.get("nan_minmax"):
            tail += f"  NaN-DROPPING MAX/MIN: {'; '.join(r['nan_minmax'][:3])}"
        out.append(f"{r['kind']:12} {r['cell']:8} {r['dtype']:9} {blocks:10} {r['KP'] or '':>3} {r['num_warps']:>2} "
                   f"{r['num_stages']:>1}  {tail}")
    out.append(f"{len(rows)} distinct compilations, {sum(not r['ok'] for r in rows)} failed")
    return "\n".join(out)


# ---- reading the PTX ------------------------------------------------------------------------------------------

def _error_line(e: BaseException) -> str:
    """One line saying why a compile failed: from the innermost cause (a CompilationError's own text is the source
    location, its cause the reason, e.g. tl.dot's "Input shapes should have ... K >= 16")."""
    while e.__cause__ is not None or (e.__context__ is not None and not str(e).strip()):
        e = e.__cause__ or e.__context__
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    msg = next((ln for ln in reversed(lines) if re.search(r"error|Error|assert|must|expected|unsupported", ln)),
               lines[-1] if lines else "")
    return f"{type(e).__name__}: {msg.strip()}"[:300]


def _safe_row(combo) -> dict:
    kind, cell, dtype, H, B, flags = combo
    try:
        return dict(compile_kernel(kind, cell, dtype, H, B, **flags), ok=True)
    except Exception as e:  # noqa: BLE001 - one failing combination must not hide the others
        return dict(kind=kind, cell=cell, dtype=dtype, H=H, B=B, **flags, ok=False, error=_error_line(e),
                    error_full=str(e)[-4000:])


def _init_worker(src):
    global _SRC
    _SRC = src


def _key(combo):
    """What the compiled kernel depends on: its source hash and options (H and B only through them)."""
    kind, cell, dtype, H, B, flags = combo
    try:
        src, options, _ = build_source(kind, cell, dtype, H, B, **flags)
    except Exception:  # noqa: BLE001 - _safe_row reports it
        return repr(combo)
    return src.hash(), tuple(sorted(options.items()))


def run_all(combos, jobs: int = 1, src=None) -> list[dict]:
    """Compile every combination (in ``jobs`` processes); failures become rows with ok=False and error."""
    combos = list(combos)
    _init_worker(src)
    keys = [_key(c) for c in combos]
    first = {}
    for c, k in zip(combos, keys):
        first.setdefault(k, c)
    if jobs <= 1:
        done = dict(zip(first, map(_safe_row, first.values())))
    else:
        with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(src, )) as pool:
            done = dict(zip(first, pool.map(_safe_row, first.values())))
    return [dict(done[k], H=c[3], B=c[4]) for c, k in zip(combos, keys)]


def _flags(r: dict) -> str:
    names = {"save": "save", "has_bias": "bias", "has_next": "next", "fuse_input": "fuse"}
    return " ".join(f"{short}={int(r[k])}" for k, short in names.items() if k in r)


def format_table(rows: list[dict]) -> str:
    head = f"{'kind':9} {'cell':8} {'dtype':9} {'H':>5} {'B':>3} {'flags':15} {'blocks':10} " \
           f"{'regs':>4} {'spill':>6} {'smem':>6}  tensor cores / error"
    out = [head, "-" * len(head)]
    for r in rows:
        row = f"{r['kind']:9} {r['cell']:8} {r['dtype']:9} {r['H']:>5} {r['B']:>3} {_flags(r):15} "
        if r["ok"]:
            blocks = f"{r['BLOCK_B']}x{r['BLOCK_H']}x{r['BLOCK_K']}"
            mma = " ".join(f"{op}x{n}" for op, n in r["mma"].items() if n) or "none"
            row += f"{blocks:10} {r['regs']:>4} {r['spills']:>6} {r['smem']:>6}  {mma}"
        else:
            row += f"{'FAILED':10} {'':>4} {'':>6} {'':>6}  {r['error']}"
        out.append(row)
    failed = sum(not r["ok"] for r in rows)
    out.append(f"{len(rows)} kernels, {failed} failed to compile")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--src", metavar="DIR", help="load kernels/ and autotune/ from this repo root by path")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--dispatch", action="store_true",
                   help="only the kernels fusedrnn's dispatch picks on an H100 (training and inference, T in "
                        f"{LENGTHS}); needs fusedrnn importable")
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES),
                   help="default: all (with --dispatch: bf16 and fp16, the tensor-core dtypes)")
    p.add_argument("--hidden", nargs="+", type=int, default=list(HIDDEN))
    p.add_argument("--batch", nargs="+", type=int, default=list(BATCH))
    p.add_argument("--launched", action="store_true",
                   help="every launch fusedrnn's launcher makes on an H100 for these layers (recorded from it, with "
                        "Triton's own argument specialization; SCENARIOS: T=1, 2, 32 and the batch-tiled kernel, "
                        "training and inference), each distinct compilation once; checks the PTX (grid barrier, "
                        "NaN-dropping max/min); needs fusedrnn importable. Default dtypes: fp16 bf16 fp32 fp64")
    p.add_argument("--per-config", action="store_true",
                   help="with --launched: each configuration once (config_key), not each distinct compilation")
    p.add_argument("--analyze", action="store_true", help="with --launched: registers, spills, tensor cores too")
    a = p.parse_args(argv)
    src = os.path.abspath(a.src) if a.src else None
    if a.launched:
        _init_worker(src)
        specs = launched(a.cells, a.dtypes or ("fp16", "bf16", "fp32", "fp64"), a.hidden, a.batch,
                         per_config=a.per_config, jobs=a.jobs)
        rows = run_launched(specs, a.jobs, src, a.analyze)
        print(format_launched(rows))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
        return 1 if any(not r["ok"] or r["nan_minmax"] or r.get("barrier") for r in rows) else 0
    combos = (dispatched(a.cells, a.dtypes or ("bf16", "fp16"), a.hidden, a.batch) if a.dispatch else
              combinations(a.cells, a.dtypes or list(DTYPES), a.hidden, a.batch, a.kinds))
    rows = run_all(combos, a.jobs, src)
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any(not r["ok"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
