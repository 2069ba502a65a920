"""Compile fusedrnn's kernels (step, batch-tiled, cooperative) for an NVIDIA H100 (sm_90a) without a GPU and report their resources.

    python -m bench.resources                      # every launch the launcher makes for these layers (SCENARIOS)
    python -m bench.resources --dispatch           # the launches of what dispatch picks on an H100 (tests assert on it)
    python -m bench.resources --per-config --hidden 1 5 33 --batch 3 --no-analyze   # each configuration once
    python -m bench.resources --json rows.json     # also write the rows
    python -m bench.resources --src DIR            # compile DIR/kernels/ instead (an older tree: before / after)

Nothing here describes a kernel's arguments. ``fusedrnn.launch`` runs each layer on CPU tensors inside
``dispatch.planning_for`` an H100 (every decision as there: plans, cooperative grids, the heuristic configurations
with no tuned table, CUDA dot settings) and ``calls.recording(run=False)`` (each launch recorded, none run): see
``record_launches``. Each launch is compiled with the signature Triton's JIT would give its arguments
(``launch_spec``: its own ``specialize_impl``, so ints equal to 1 become constants and pointers and ints divisible
by 16 carry ``tt.divisibility``), through ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``:
frontend, TTGIR, LLVM, PTX and the ptxas bundled with Triton; no CUDA driver is touched. Launches that compile to
the same kernel are compiled once.

Per compilation (``bench/ptx.py``): registers (``cuobjdump --dump-resource-usage`` of the cubin Triton built),
spill bytes (``ptxas -v`` on its PTX, with Triton's flags), shared memory (``metadata.shared``, what a launch
requests), the matrix instructions of the SASS (HGMMA: Hopper wgmma, HMMA: mma.sync, DMMA: fp64, or none), and two
checks of the PTX: the cooperative kernels' grid barrier (``barrier_violations``) and float max/min that drop NaN
(``nan_dropping_minmax``). The exit status is 1 if any launch fails to compile or fails a check.
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

from fusedrnn.cells import CELLS

from . import ptx
from .ptx import ARCH, SHARED, barrier_violations, nan_dropping_minmax, ptx_params  # noqa: F401

#: name -> (torch dtype, TF32 on): the dtypes a layer runs in (fp32-tf32: fp32 tensors, TF32 dots).
DTYPES = {"fp16": ("float16", True), "bf16": ("bfloat16", True), "fp32": ("float32", False),
          "fp32-tf32": ("float32", True), "fp64": ("float64", False)}
HIDDEN = (256, 512, 768, 1024)
BATCH = (16, 64)
#: The kernels, by fusedrnn.calls' names.
KINDS = ("step_fwd", "step_bwd", "tiled_fwd", "tiled_bwd", "resident_fwd", "resident_bwd", "streamed_fwd",
         "streamed_bwd")
COOPERATIVE = ("resident", "streamed")

#: Layer calls whose launches are recorded by default: (name, T, training, forced kernel). T=1 is a single step (the
#: input projection fused into the step kernel), T=2 runs stepwise like any short sequence (a first step reading h0,
#: a last one without a next), T=32 cooperatively wherever ``coop_plan`` accepts the layer (else stepwise); the
#: batch-tiled kernel, which an H100's dispatch picks only for batches too large for a cooperative grid (and as the
#: fallback of a cooperative launch the driver refuses), is forced.
SCENARIOS = (("T=1", 1, True, "auto"), ("T=1", 1, False, "auto"), ("T=2", 2, True, "auto"),
             ("T=2", 2, False, "auto"), ("T=32", 32, True, "auto"), ("T=32", 32, False, "auto"),
             ("tiled", 2, True, "tiled"), ("tiled", 2, False, "tiled"))
#: ``--dispatch``: what dispatch picks by itself for a training step and an inference forward at these lengths.
LENGTHS = (16, 100, 1024)
DISPATCH_SCENARIOS = tuple((f"T={T}", T, train, "auto") for T in LENGTHS for train in (True, False))
#: The flags a row shows (the constexprs that say which launch of a kernel it is), by the kernels' names.
FLAGS = ("SAVE", "HAS_BIAS", "HAS_NEXT", "FUSE_INPUT", "RESET")
_SRC = None  # repo root whose kernels/ is compiled (--src), else fusedrnn's


def _kernels():
    """The kernels module compiled: fusedrnn's, or DIR/kernels/ loaded by path (``--src``)."""
    if _SRC is None:
        from fusedrnn import kernels
        return kernels
    if "_fr_kernels" not in sys.modules:
        folder = os.path.join(_SRC, "kernels")
        spec = importlib.util.spec_from_file_location("_fr_kernels", os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_fr_kernels"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["_fr_kernels"]


# ---- recording the launcher's launches --------------------------------------------------------------------------

def record_launches(cell: str, dtype: str, H: int, B: int, T: int, train: bool, kernel: str = "auto", I=None,
                    limits=None, reset: bool = False) -> list:
    """The ``calls.Launch`` records of one layer call (one direction, dense input, biases, input size ``I``, default
    H) as ``fusedrnn.launch`` makes them on the GPU ``limits`` (default an H100), without a GPU: the layer runs on tensors
    without data (``meta``) inside ``dispatch.planning_for(limits)``, ``settings.use_kernel(kernel)``, TF32 as the dtype name says,
    and ``calls.recording(run=False)``. A training call runs the forward with saved activations and the backward;
    T=1 training also runs the Cell API (``launch.cell_fwd`` / ``cell_bwd``). ``reset``: the layer gets a reset mask
    (the kernels' RESET variants). In launch order. Imports torch."""
    import torch

    from fusedrnn import calls, dispatch, launch, settings
    from fusedrnn.autotune.spaces import KNOWN_GPUS
    I = H if I is None else I  # noqa: E741 - the legend's name
    with settings.use_kernel(kernel), dispatch.planning_for(limits or KNOWN_GPUS["H100"]), \
            settings.use_tf32(DTYPES[dtype][1]), calls.recording(run=False) as log:
        G, lstm = CELLS[cell].gates, CELLS[cell].has_c
        dt = getattr(torch, DTYPES[dtype][0])

        def rnd(*shape):  # no data: the launches are recorded, never run, and the matmuls around them are free
            return torch.empty(*shape, dtype=dt, device="meta")

        x, h0, c0 = rnd(T, B, I), rnd(B, H), rnd(B, H) if lstm else None
        w_ih, w_hh, b_ih, b_hh = rnd(G * H, I), rnd(G * H, H), rnd(G * H), rnd(G * H)
        zero = torch.empty(T, B, dtype=torch.uint8, device="meta") if reset else None
        y, h_n, c_n, sv, cs, hr = launch.recurrence_fwd(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, None, False,
                                                        train, zero)
        if train:
            launch.recurrence_bwd(cell, rnd(*y.shape), rnd(B, H), rnd(B, H) if lstm else None, x, h0, c0, w_ih,
                                  w_hh, None, True, None, False, y, sv, cs, hr, zero)
        if train and T == 1:
            h1, c1, sv1 = launch.cell_fwd(cell, x[0], h0, c0, w_ih, w_hh, b_ih, b_hh, True)
            launch.cell_bwd(cell, rnd(B, H), rnd(B, H) if lstm else None, x[0], h0, c0, w_ih, w_hh, True, c1, sv1)
    return list(log)


def launch_spec(record) -> dict:
    """What Triton's JIT would compile for this ``calls.Launch``, as plain data (picklable): the kernel's function
    name and fusedrnn name (``kind``), the signature and attributes its specialization gives the arguments (Triton's
    own ``specialize_impl``, ``do_not_specialize`` honoured), the constexprs and the compile options."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import native_specialize_impl

    from fusedrnn.calls import OPTIONS
    fn, values = record.kernel, dict(record.arguments)
    options = {k: values.pop(k) for k in OPTIONS if k in values}
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
    return dict(fn=fn.__name__, kind=record.name, grid=record.grid, signature=signature, constexprs=constexprs,
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
             scenarios=SCENARIOS, per_config: bool = False, kinds=KINDS, jobs: int = 1, reset: bool = False) -> dict:
    """{key: (spec, [(cell, dtype, H, B, scenario), ...])}: the launches ``record_launches`` records for these layers
    and ``scenarios`` (of the kernels ``kinds``), with the layers that make them. Keyed by ``spec_key`` (each distinct
    compilation) or, with ``per_config``, by ``config_key`` (each configuration once: its launch of most
    ``_coverage``). Recorded in ``jobs`` processes, one cell and dtype each; ``reset``: with a reset mask."""
    groups = [(cell, dtype, tuple(hidden), tuple(batch), tuple(scenarios), reset) for cell in cells
              for dtype in dtypes]
    pool = ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(_SRC, )) if jobs > 1 else None
    out = {}
    for group in (pool.map(_record_group, groups) if pool else map(_record_group, groups)):
        for spec, where in group:
            if spec["kind"] not in kinds:
                continue
            key = config_key(spec) if per_config else spec_key(spec)
            H = where[2]
            if key not in out:
                out[key] = (spec, [where], H)
                continue
            best, wheres, best_h = out[key]
            wheres.append(where)
            if per_config and _coverage(spec, H) > _coverage(best, best_h):
                out[key] = (spec, wheres, H)
    if pool:
        pool.shutdown()
    return {k: (spec, wheres) for k, (spec, wheres, _) in out.items()}


def _record_group(group) -> list:
    """[(launch_spec, (cell, dtype, H, B, scenario))] of one cell and dtype's layers (``launched``)."""
    cell, dtype, hidden, batch, scenarios, reset = group
    out = []
    for H in hidden:
        for B in batch:
            for name, T, train, kernel in scenarios:
                label = f"{name} {'train' if train else 'infer'}{' reset' if reset else ''}"
                for record in record_launches(cell, dtype, H, B, T, train, kernel, reset=reset):
                    out.append((launch_spec(record), (cell, dtype, H, B, label)))
    return out


def find(kind: str, cell: str, dtype: str, H: int, B: int, reset: bool = False, **constexprs) -> dict:
    """The ``launch_spec`` of one launch of kernel ``kind`` that the launcher makes for this layer, with these
    constexprs (e.g. ``SAVE=True, FUSE_INPUT=False``): recorded from a training and an inference call of T=1 (the
    step kernels with the input projection fused) or T=2 (stepwise), the batch-tiled or the cooperative kernel
    forced for theirs (T=32); ``reset``: the layer has a reset mask. Raises a ValueError listing what was recorded
    if none matches."""
    variant = kind.split("_")[0]
    T, kernel = ((1, "auto") if constexprs.get("FUSE_INPUT") else (2, "step")) if variant == "step" else \
        (2, "tiled") if variant == "tiled" else (32, "cooperative")
    seen = []
    for train in (True, False):
        for record in record_launches(cell, dtype, H, B, T, train, kernel, reset=reset):
            spec = launch_spec(record)
            if spec["kind"] == kind and all(spec["constexprs"].get(k) == v for k, v in constexprs.items()):
                return spec
            seen.append(f"{spec['kind']} {_flags(spec['constexprs'])}")
    raise ValueError(f"no {kind} launch with {constexprs} for {cell} {dtype} H={H} B={B}; recorded: {sorted(set(seen))}")


# ---- compiling ---------------------------------------------------------------------------------------------------

def compile_spec(spec: dict, analyze: bool = False):
    """Compile a ``launch_spec`` for sm_90a (kernels from ``_SRC`` with --src). Returns the CompiledKernel and, with
    ``analyze``, its resources (``ptx.analyze``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    src = triton.compiler.ASTSource(fn=getattr(_kernels(), spec["fn"]), signature=spec["signature"],
                                    constexprs=spec["constexprs"], attrs=spec["attrs"])
    with contextlib.redirect_stdout(io.StringIO()):  # ptxas failures print the whole PTX
        k = triton.compile(src, target=GPUTarget("cuda", ARCH, 32), options=spec["options"])
    return k, (ptx.analyze(k.asm["ptx"], k.asm["cubin"]) if analyze else None)


def ptx_of(spec: dict):
    """(PTX, its parameter names) of a ``launch_spec`` compiled for sm_90a."""
    k, _ = compile_spec(spec)
    return k.asm["ptx"], ptx_params(spec)


def _flags(constexprs: dict) -> str:
    """"save=1 has_bias=1 ...": the FLAGS a kernel has; RESET only where set (rows compare with older trees')."""
    return " ".join(f"{name.lower()}={int(constexprs[name])}" for name in FLAGS
                    if name in constexprs and (name != "RESET" or constexprs[name]))


def _spec_row(item) -> dict:
    spec, where, analyze = item
    c = spec["constexprs"]
    row = dict(kind=spec["kind"], cell=where[0][0], dtype=where[0][1], H=sorted({w[2] for w in where}),
               B=sorted({w[3] for w in where}), scenarios=sorted({w[4] for w in where}),
               **{name.lower(): bool(c[name]) for name in FLAGS if name in c}, flags=_flags(c),
               BLOCK_B=c.get("BLOCK_B"), BLOCK_H=c.get("BLOCK_H"), BLOCK_K=c.get("BLOCK_K"),
               KP=c.get("KP", c.get("HP")), num_warps=spec["options"].get("num_warps"),
               num_stages=spec["options"].get("num_stages"), programs=spec["grid"][0],
               w_type=spec["signature"]["p_w"])
    start = time.perf_counter()
    try:
        k, res = compile_spec(spec, analyze)
    except Exception as e:  # noqa: BLE001 - one failing launch must not hide the others
        row.update(ok=False, error=_error_line(e), error_full=str(e)[-4000:])
        return row
    row.update(ok=True, seconds=round(time.perf_counter() - start, 2), smem=k.metadata.shared, **(res or {}))
    if res:
        row["spills"] = (res["spill_stores"] or 0) + (res["spill_loads"] or 0)
        used = [op for op, n in res["mma"].items() if n]
        row["tensor_cores"] = "+".join(used) if used else "none"
    text = k.asm["ptx"]
    row["nan_minmax"] = nan_dropping_minmax(text)
    loops = ptx.loop_reads(text, ptx_params(spec), ("p_w", ))
    row["w_loop_reads"], row["loop_shared_reads"] = len(loops["global_reads"]), loops["shared_reads"]
    row["loop_mma"] = loops["loop_mma"]
    if spec["kind"].split("_")[0] in COOPERATIVE:
        row["barrier"] = barrier_violations(text, ptx_params(spec), SHARED[spec["kind"].split("_")[1]])
    return row


def run_launched(specs: dict, jobs: int = 1, src=None, analyze: bool = False, progress=None) -> list[dict]:
    """Compile each launch of ``launched`` once (in ``jobs`` processes): one row per key, with the H, B and
    scenarios that make it. ``progress`` (a ``Progress``) hears of each compilation."""
    _init_worker(src)
    items = [(spec, where, analyze) for spec, where in specs.values()]
    pool = ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(src, )) if jobs > 1 else None
    rows = []
    for row in (pool.map(_spec_row, items) if pool else map(_spec_row, items)):
        rows.append(row)
        if progress is not None:
            progress.update(1, f"{row['kind']} {row['cell']} {row['dtype']}")
    if pool:
        pool.shutdown()
    return rows


#: bytes per element of the W dtype a kernel compiles for (its ``p_w`` type).
_ITEMSIZE = {"*fp16": 2, "*bf16": 2, "*fp32": 4, "*fp64": 8}


def traffic(row: dict, H: int, B: int, sms: int = 132) -> dict:
    """What one step of a launch reads and writes, per SM, computed from its plan (not measured): the row's kernel,
    blocks, grid for this layer (H hidden units, batch B, input size H as recorded, no projection) and flags, on a
    GPU of ``sms`` SMs. Keys (bytes): ``l2_read`` (h_{t-1} forward / dHp_{t+1} backward, which every program reads
    whole for its rows, the input gates, saved activations, states and carries in memory, and W_hh where it is
    streamed: re-read at every step, from L2, or L1 where it stays there), ``w_onchip`` (W_hh held by a resident
    program, read from shared memory or registers at every step), ``write``; ``programs`` and ``per_sm`` (programs
    per SM). The resident kernels hold W_hh on chip: where, the compiled code says (``smem``, ``w_loop_reads``)."""
    from fusedrnn.autotune.spaces import KernelConfig, coop_grid
    cell = CELLS[row["cell"]]
    variant, direction = row["kind"].split("_")
    it = _ITEMSIZE[row["w_type"]]
    acc = 8 if it == 8 else 4
    G, NS, BB, BH = cell.gates, cell.saved, row["BLOCK_B"], row["BLOCK_H"]
    n_b, chunks = -(-B // BB), -(-H // BH)
    if variant in ("resident", "streamed"):
        cfg = KernelConfig(BB, BH, row["BLOCK_K"], row["num_warps"], row["num_stages"], variant=variant)
        n_h = coop_grid(cfg, H, B, sms)[0]
    else:
        n_h = chunks if variant == "step" else 1
    per = -(-chunks // n_h)  # hidden chunks of BH units a program walks per step
    tile, K = BB * BH, H
    memory_state = variant != "resident"  # c and the carries: in memory, else in registers
    if direction == "fwd":
        reads = BB * K * it * per  # h_{t-1}, whole, for each chunk's matmul
        reads += (BB * H * it + G * BH * H * it) * per if row.get("fuse_input") else G * tile * it * per
        reads += (tile * it if cell.reads_h else 0) * per + (tile * acc if cell.has_c and memory_state else 0) * per
        w = G * BH * K * it * per
        writes = (tile * it + (tile * acc if cell.has_c else 0) + (NS * tile * acc if row.get("save") else 0)) * per
    else:
        reads = BB * G * H * it * per  # dHp_{t+1}, whole
        reads += (tile * it + NS * tile * acc + (tile * it if cell.reads_h else 0)
                  + (2 * tile * acc if cell.has_c else 0)) * per
        reads += ((1 + cell.has_c) * tile * acc if memory_state else 0) * per
        w = G * H * BH * it * per
        writes = (G * tile * it * (1 + cell.split_dx) + ((1 + cell.has_c) * tile * acc if memory_state else 0)) * per
    programs = n_h * n_b
    per_sm = -(-programs // sms)
    held = variant == "resident"
    return dict(programs=programs, per_sm=per_sm, l2_read=(reads + (0 if held else w)) * per_sm,
                w_onchip=(w if held else 0) * per_sm, write=writes * per_sm)


def per_layer(rows: list[dict]) -> list[dict]:
    """One row per layer shape and launch: each compiled row repeated for every (H, B) that launches it, with H and B
    ints (how ``--dispatch`` reports, so that two trees' runs compare row by row)."""
    out = {}
    for r in rows:
        for H in r["H"]:
            for B in r["B"]:
                if r["ok"]:
                    one = dict(r, H=H, B=B, **{"step_" + k: v for k, v in traffic(r, H, B).items()})
                else:
                    one = dict(r, H=H, B=B)
                out.setdefault((r["kind"], r["cell"], r["dtype"], H, B, r["flags"]), one)
    return sorted(out.values(), key=lambda r: (r["cell"], r["dtype"], r["H"], r["B"], r["kind"], r["flags"]))


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


def _init_worker(src):
    global _SRC
    _SRC = src


def _checks(r: dict) -> str:
    tail = ""
    if r.get("barrier"):
        tail += f"  BARRIER: {'; '.join(r['barrier'])}"
    if r.get("nan_minmax"):
        tail += f"  NaN-DROPPING MAX/MIN: {'; '.join(r['nan_minmax'][:3])}"
    return tail


def format_table(rows: list[dict]) -> str:
    """The rows as a table: one line per row (its H and B: one each, or the lists a compilation serves). ``Wld``: the
    global reads of W_hh inside the kernel's loops in its PTX (0: held on chip for the whole sequence); with one H
    and B per row (``--dispatch``), what a step reads per SM (``traffic``, KB): ``L2rd`` from memory (L2), ``chip``
    the held W_hh from shared memory or registers."""
    per_step = any("step_l2_read" in r for r in rows)
    head = (f"{'kind':12} {'cell':8} {'dtype':9} {'flags':32} {'blocks':10} {'KP':>4} {'w':>2} {'s':>1} {'grid':>4} "
            f"{'regs':>4} {'spill':>5} {'smem':>6}  {'mma':12} {'Wld':>3} "
            + (f"{'L2rd':>6} {'chip':>6} " if per_step else "") + "H x B")
    out = [head, "-" * len(head)]
    kb = lambda n: f"{n / 1024:6.1f}"  # noqa: E731
    for r in rows:
        shapes = (f"{r['H']} x {r['B']}" if isinstance(r["H"], int) else
                  f"{' '.join(map(str, r['H']))} x {' '.join(map(str, r['B']))}")
        line = f"{r['kind']:12} {r['cell']:8} {r['dtype']:9} {r['flags']:32} "
        blocks = f"{r['BLOCK_B']}x{r['BLOCK_H']}x{r['BLOCK_K']}"
        line += f"{blocks:10} {r['KP'] or '':>4} {r['num_warps']:>2} {r['num_stages']:>1} {r['programs']:>4} "
        if not r["ok"]:
            out.append(line + f"FAILED {r['error']}  ({shapes})")
            continue
        if "regs" in r:
            mma = " ".join(f"{op}x{n}" for op, n in r["mma"].items() if n) or "none"
            line += f"{r['regs']:>4} {r['spills']:>5} {r['smem']:>6}  {mma:12} "
        else:
            line += f"{'':>4} {'':>5} {r['smem']:>6}  {'':12} "
        line += f"{r['w_loop_reads']:>3} "
        if per_step:
            line += f"{kb(r['step_l2_read'])} {kb(r['step_w_onchip'])} " if "step_l2_read" in r else f"{'':>13} "
        out.append(line + shapes + _checks(r))
    out.append(f"{len(rows)} rows, {sum(not r['ok'] for r in rows)} failed to compile, "
               f"{sum(bool(r.get('barrier') or r.get('nan_minmax')) for r in rows)} failed a PTX check")
    return "\n".join(out)


def main(argv=None) -> int:
    from fusedrnn.demo.report import Progress
    p = argparse.ArgumentParser(prog="python -m bench.resources", description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--src", metavar="DIR", help="compile DIR/kernels/ (by path) with the launches fusedrnn records: "
                                                "compare an older tree's kernels with the same arguments")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--dispatch", action="store_true",
                   help="the launches of what dispatch picks by itself on an H100 (training and inference, T in "
                        f"{LENGTHS}), one row per layer shape and launch; default dtypes bf16 and fp16")
    p.add_argument("--per-config", action="store_true",
                   help="each configuration once (config_key: its launch with the most dots), not each distinct "
                        "compilation")
    p.add_argument("--reset", action="store_true",
                   help="every layer with a reset mask (reset=...): the kernels' RESET variants")
    p.add_argument("--no-analyze", action="store_true",
                   help="compile and check the PTX only: no registers, spills, tensor cores (ptxas, cuobjdump)")
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES),
                   help="default: fp16 bf16 fp32 fp64 (with --dispatch: bf16 and fp16, the tensor-core dtypes)")
    p.add_argument("--hidden", nargs="+", type=int, default=list(HIDDEN))
    p.add_argument("--batch", nargs="+", type=int, default=list(BATCH))
    a = p.parse_args(argv)
    src = os.path.abspath(a.src) if a.src else None
    _init_worker(src)
    dtypes = a.dtypes or (("bf16", "fp16") if a.dispatch else ("fp16", "bf16", "fp32", "fp64"))
    print(f"recording the launches of {len(a.cells) * len(dtypes) * len(a.hidden) * len(a.batch)} layers ...",
          file=sys.stderr)
    specs = launched(a.cells, dtypes, a.hidden, a.batch, DISPATCH_SCENARIOS if a.dispatch else SCENARIOS,
                     a.per_config, tuple(a.kinds), a.jobs, a.reset)
    progress = Progress(len(specs))
    rows = run_launched(specs, a.jobs, src, not a.no_analyze, progress)
    progress.close()
    if a.dispatch:
        rows = per_layer(rows)
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any(not r["ok"] or r["nan_minmax"] or r.get("barrier") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
