"""Compile fusedrnn's kernels (step, batch-tiled, cooperative) for an NVIDIA H100 (sm_90a) without a GPU and report their resources.

    python -m bench.resources                      # every combination the launcher uses, as a table
    python -m bench.resources --json rows.json     # also write the rows
    python -m bench.resources --src .              # load kernels/ and autotune/ by path (no torch, no fusedrnn)
    python -m bench.resources --dispatch           # only what dispatch picks on an H100 (tests assert on it)

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
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

CELLS = {"lstm": (0, 4, 4), "gru": (1, 3, 4), "rnn_tanh": (2, 1, 1), "rnn_relu": (3, 1, 1)}  # CELL, G, NS
#: name -> (tensor dtype, accumulator dtype, DOT_PRECISION), as fusedrnn.launch._dot_settings picks on CUDA.
DTYPES = {"fp16": ("fp16", "fp32", "tf32"), "bf16": ("bf16", "fp32", "tf32"), "fp32": ("fp32", "fp32", "ieee"),
          "fp32-tf32": ("fp32", "fp32", "tf32"), "fp64": ("fp64", "fp64", "ieee")}
ACC_PTRS = {"p_c_prev", "p_c", "p_save", "p_dh", "p_dc", "p_cs"}
HIDDEN = (256, 512, 768, 1024)
BATCH = (16, 64)
ARCH = 90
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


#: kernel -> the function's name in kernels/.
KERNEL_FNS = {"step_fwd": "_step_fwd_kernel", "step_bwd": "_step_bwd_kernel", "tiled_fwd": "_tiled_fwd_kernel",
              "tiled_bwd": "_tiled_bwd_kernel", "coop_fwd": "_coop_fwd_kernel", "coop_bwd": "_coop_bwd_kernel",
              "streamed_fwd": "_tiled_fwd_kernel", "streamed_bwd": "_tiled_bwd_kernel"}
#: kind prefix -> the cooperative plan's variant (``coop_config``) that runs it.
COOP_VARIANTS = {"coop": "cooperative", "streamed": "streamed"}
KINDS = tuple(KERNEL_FNS)
UNIT_STRIDES = {"s_wc", "s_wic"}  # W's column strides: 1 for contiguous weights, so Triton makes them constants
UNSPECIALIZED = {"T", "B", "B_prev", "B_next"}  # do_not_specialize in the kernels
INDEX_PTRS = {"p_sizes": "*i64", "p_offsets": "*i64", "p_bar": "*i32"}


def config_for(kind: str, cell: str, dtype: str, H: int, B: int, limits=None):
    """The configuration fusedrnn's heuristics give this kernel on the GPU ``limits`` (default: an H100): the
    step and batch-tiled kernels' ``default_step_config``, the cooperative kernels' ``coop_config`` (None
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
    return spaces.default_step_config("cuda", H, width, B, itemsize, variant)


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
    params = dict(CELL=code, G=G, NS=NS, **blocks,
                  UPCAST_DOT=False, DOT_PRECISION=precision, HAS_BIAS=has_bias, SAVE=save, HAS_NEXT=has_next,
                  SPLIT_DX=cell == "gru", FUSE_INPUT=fuse_input, TWO_SOURCES=False, PACKED=False, REVERSE=False,
                  KP=triton.next_power_of_2(H), HP=triton.next_power_of_2(H), COOP=kind.startswith("streamed"))
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


def _tool(name: str, *args: str) -> str:
    """stdout+stderr of one of the CUDA tools bundled with Triton (ptxas, cuobjdump)."""
    from triton.backends.nvidia import compiler as nv
    path = nv.get_ptxas(ARCH).path if name == "ptxas" else getattr(nv.knobs.nvidia, name).path
    proc = subprocess.run([path, *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name}: {proc.stderr.strip()}")
    return proc.stdout + proc.stderr


def _analyze(ptx: str, cubin: bytes) -> dict:
    """Resources of the cubin Triton built (cuobjdump), spill bytes (ptxas -v again, Triton's flags) and
    the matrix instructions of its SASS."""
    from triton.backends.nvidia import compiler as nv
    extra = ["--regAllocOptLevel=2"] if "regAllocOptLevel" in inspect.getsource(nv.CUDABackend.make_cubin) else []
    with tempfile.TemporaryDirectory() as tmp:
        ptx_path, cubin_path = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx_path, "w") as f:
            f.write(ptx)
        with open(cubin_path, "wb") as f:
            f.write(cubin)
        log = _tool("ptxas", "-v", "-lineinfo", *extra, f"--gpu-name=sm_{ARCH}a", ptx_path, "-o", ptx_path + ".o")
        usage = _tool("cuobjdump", "--dump-resource-usage", cubin_path)
        sass = _tool("cuobjdump", "-sass", cubin_path)
    res = {k.lower(): int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL|SHARED):(\d+)", usage)}
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    mma = {op: len(re.findall(rf"\b{op}\b", sass)) for op in ("HGMMA", "HMMA", "DMMA", "IMMA")}
    return dict(regs=res.get("reg"), stack=res.get("stack"), local=res.get("local"), static_smem=res.get("shared"),
                spill_stores=int(spills.group(1)) if spills else None,
                spill_loads=int(spills.group(2)) if spills else None, mma=mma)


def compile_kernel(kind: str, cell: str, dtype: str, H: int, B: int, cfg=None, **flags) -> dict:
    """Compile one kernel for sm_90 and return its row.

    Args: kind a key of KERNEL_FNS; cell a key of CELLS; dtype a key of DTYPES; H hidden size; B batch;
    cfg a StepConfig (default: fusedrnn's heuristic, ``config_for``); flags save / has_bias / fuse_input
    (forward kernels) or has_next (step_bwd). Raises on a failed compile.
    Row keys: the arguments, BLOCK_B/H/K, num_warps, num_stages, regs, spills (bytes stored + loaded),
    spill_stores, spill_loads, smem (bytes), mma (instruction counts), tensor_cores (e.g. "HGMMA" or "none").
    """
    import triton
    from triton.backends.compiler import GPUTarget
    src, options, cfg = build_source(kind, cell, dtype, H, B, cfg, **flags)
    with contextlib.redirect_stdout(io.StringIO()):  # ptxas failures print the whole PTX
        k = triton.compile(src, target=GPUTarget("cuda", ARCH, 32), options=options)
    res = _analyze(k.asm["ptx"], k.asm["cubin"])
    used = [op for op, n in res["mma"].items() if n]
    return dict(kind=kind, cell=cell, dtype=dtype, H=H, B=B, **flags, variant=cfg.variant, BLOCK_B=cfg.BLOCK_B, BLOCK_H=cfg.BLOCK_H,
                BLOCK_K=cfg.BLOCK_K, num_warps=cfg.num_warps, num_stages=cfg.num_stages, **res,
                spills=(res["spill_stores"] or 0) + (res["spill_loads"] or 0), smem=k.metadata.shared,
                tensor_cores="+".join(used) if used else "none")


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

    from fusedrnn import launch
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
                        kernel, plan = launch._choose(cell, dt[dtype], torch.device("cuda"), T, B, H, False, h100)
                        if kernel == "step":
                            kinds = [("step_fwd", dict(save=True, has_bias=True)),
                                     ("step_fwd", dict(save=False, has_bias=True)), ("step_bwd", dict(has_next=True))]
                        else:
                            prefix = {"cooperative": "coop", "streamed": "streamed"}[plan.variant] if plan else "tiled"
                            kinds = [(f"{prefix}_fwd", dict(save=True, fuse_input=False)),
                                     (f"{prefix}_fwd", dict(save=False, fuse_input=True)), (f"{prefix}_bwd", {})]
                        for kind, flags in kinds:
                            key = (kind, cell, dtype, H, B, tuple(sorted(flags.items())))
                            if key not in seen:
                                seen.add(key)
                                yield kind, cell, dtype, H, B, flags


def _error_line(e: BaseException) -> str:
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
    a = p.parse_args(argv)
    src = os.path.abspath(a.src) if a.src else None
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
