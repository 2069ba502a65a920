"""What the compiled code does that the interpreter does not (DESIGN.md), read from sm_90a builds made without a GPU.

The suite runs the kernels under the Triton interpreter, which takes a tl.dot of any size, does its float max/min
with numpy (NaN handling by Triton version: np.maximum in 3.6, np.fmax in 3.9) and runs programs one after another
(a grid barrier there orders nothing). These tests compile the
kernels for an H100 (``triton.compile(ASTSource, GPUTarget("cuda", 90, 32))``: frontend to ptxas, no driver) through
``bench/resources.py`` and read the result. Each compiles in a subprocess: this process runs the interpreter
(``TRITON_INTERPRET=1``, tests/conftest.py), which cannot compile.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from _helpers import kernels_ran, make_pair

ROOT = Path(__file__).resolve().parents[1]
SMALL_AND_ODD_H = [*range(1, 21), 33, 100, 257]


def _compile_in_subprocess(script: str, tmp_path: Path, *args: str, timeout: int = 600) -> dict:
    """Run ``script`` (Python, with bench.resources importable) without TRITON_INTERPRET in the repo root; it writes
    its findings as JSON to the path in sys.argv[1]. Returns them."""
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # what the kernels compile with (bench.resources passes it too)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text())


# ---- item 2: tl.dot needs K >= 16 -----------------------------------------------------------------------------


@pytest.mark.slow
def test_every_dispatched_configuration_compiles_for_small_and_odd_hidden_sizes(tmp_path):
    """H = 1..20, 33, 100, 257 (batch 3), every cell, bf16/fp32/fp64 (fp16 builds the same configurations as bf16;
    ``python -m bench.resources --per-config`` covers it, and fp32-tf32): every configuration the launcher picks on
    an H100 (step, batch-tiled, resident and streamed cooperative kernels, forward and backward; training and
    inference, T = 1, 2, 32 and the batch-tiled kernel forced) compiles for sm_90a. The launches are recorded from
    ``fusedrnn.launch`` itself (``dispatch.planning_for`` the H100's limits: its plans, the heuristic configurations),
    with the arguments Triton's JIT would specialize, and each configuration (kernel, cell, dtype, block sizes,
    KP/HP, options) is compiled once, for its launch with the most dots and the smallest H
    (``bench.resources --per-config``). The resident kernels' dots reduce over KP / HP; with
    next_power_of_2(H) there, H <= 8 gave K < 16 and failed to build ("Input shapes should have ... K >= 16") on the
    GPU path dispatch sends them for T >= 32. The cooperative kernels' PTX also passes the barrier checks of
    ``test_grid_barrier_orders_the_steps_in_the_ptx``, and no kernel has a NaN-dropping float max/min."""
    rows = _compile_in_subprocess("""
        import json, sys
        from bench import resources as r
        hidden = [int(h) for h in sys.argv[2:]]
        specs = r.launched(dtypes=("bf16", "fp32", "fp64"), hidden=hidden, batch=[3], per_config=True, jobs=2)
        rows = r.run_launched(specs, jobs=2)
        json.dump(rows, open(sys.argv[1], "w"))
    """, tmp_path, *map(str, SMALL_AND_ODD_H), timeout=1500)
    covered = {(r["kind"], r["cell"], r["dtype"]) for r in rows}
    kinds = {"step_fwd", "step_bwd", "tiled_fwd", "tiled_bwd", "resident_fwd", "resident_bwd", "streamed_fwd",
             "streamed_bwd"}
    assert {k for k, _, _ in covered} == kinds
    assert {(c, d) for _, c, d in covered} == {(c, d) for c in ("lstm", "gru", "rnn_tanh", "rnn_relu")
                                               for d in ("bf16", "fp32", "fp64")}
    assert all(h in {h for r in rows for h in r["H"]} for h in SMALL_AND_ODD_H)
    assert any(r["kind"].startswith("resident") and min(r["H"]) <= 8 for r in rows), "no resident kernel for H <= 8"
    failed = [f"{r['kind']} {r['cell']} {r['dtype']} H={r['H']}: {r['error']}" for r in rows if not r["ok"]]
    assert not failed, failed
    barrier = [f"{r['kind']} {r['cell']} {r['dtype']} H={r['H']}: {r['barrier']}" for r in rows if r.get("barrier")]
    assert not barrier, barrier
    nan = [f"{r['kind']} {r['cell']} {r['dtype']}: {r['nan_minmax'][:2]}" for r in rows if r["nan_minmax"]]
    assert not nan, nan


# ---- item 4: relu keeps NaN -----------------------------------------------------------------------------------

_NAN_TOY = '''
import triton
import triton.language as tl


@triton.jit
def relu_by_maximum(p, n):
    """relu as the kernels wrote it before: tl.maximum(x, 0.0)."""
    o = tl.arange(0, 128)
    x = tl.load(p + o, mask=o < n)
    tl.store(p + o, tl.maximum(x, 0.0), mask=o < n)
'''


def test_relu_compiles_to_nan_propagating_code(tmp_path):
    """The rnn_relu kernels (step, batch-tiled, resident and streamed forward; step and resident backward; bf16 with
    fp32 math, and fp64) have no float max/min that drops NaN in their PTX: relu was tl.maximum(x, 0.0), which
    compiles to max.f32 (max.f64), returning the operand that is not NaN, so a NaN pre-activation came out 0 on a GPU
    where torch.relu gives NaN (now max.NaN.f32, and a select in fp64). The check finds max.f32 in a toy kernel
    that still uses tl.maximum, so it cannot pass by finding nothing."""
    (tmp_path / "nan_toy.py").write_text(_NAN_TOY)
    found = _compile_in_subprocess("""
        import json, sys
        import triton
        from triton.backends.compiler import GPUTarget
        from bench import resources as r
        sys.path.insert(0, sys.argv[2])
        import nan_toy
        out = {}
        for dtype in ("bf16", "fp64"):
            for kind, H, B in (("step_fwd", 64, 16), ("tiled_fwd", 64, 16), ("resident_fwd", 64, 16),
                               ("streamed_fwd", 1536, 64), ("step_bwd", 64, 16), ("resident_bwd", 64, 16)):
                flags = dict(SAVE=True, FUSE_INPUT=kind == "step_fwd") if kind.endswith("fwd") else {}
                ptx, _ = r.ptx_of(r.find(kind, "rnn_relu", dtype, H, B, **flags))
                out[f"{kind} {dtype}"] = r.nan_dropping_minmax(ptx)
        src = triton.compiler.ASTSource(fn=nan_toy.relu_by_maximum, signature={"p": "*fp32", "n": "i32"})
        toy = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(enable_fp_fusion=True))
        out["toy"] = r.nan_dropping_minmax(toy.asm["ptx"])
        json.dump(out, open(sys.argv[1], "w"))
    """, tmp_path, str(tmp_path))
    assert any("max.f32" in line for line in found.pop("toy")), "the check misses tl.maximum's max.f32"
    assert len(found) == 12
    dropping = {k: v for k, v in found.items() if v}
    assert not dropping, dropping


def test_relu_nan_forward_and_backward_follow_torch():
    """Under the interpreter (the cell math the GPU compiles): a NaN input makes NaN outputs exactly where torch.nn.RNN
    (relu) does, and the gradients follow torch's relu backward (threshold_backward on the output: 0 where h <= 0,
    else dh, so a NaN h passes dh on): the input gradient equals torch's, NaN exactly where torch's is. With the old
    backward (dh where h > 0, else 0) a NaN h blocked the gradient and the input gradient of the rows after the NaN
    came out 0 (and with the old forward, under Triton 3.9's interpreter as on a GPU, the NaN itself was lost)."""
    torch.manual_seed(0)
    ref, fused = make_pair("rnn_relu", 4, 6)
    x = torch.randn(4, 3, 4)
    x[1, 1, 2] = float("nan")
    dy = torch.randn(4, 3, 6)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    want, _ = ref(xr)
    (want * dy).sum().backward()
    with kernels_ran("step_fwd", "step_bwd"):
        got, _ = fused(xf)
        (got * dy).sum().backward()
    assert torch.isnan(want).any() and torch.equal(torch.isnan(got), torch.isnan(want))
    finite = ~torch.isnan(want)
    torch.testing.assert_close(got[finite], want[finite], atol=2e-5, rtol=1e-5)
    assert torch.equal(torch.isnan(xf.grad), torch.isnan(xr.grad))
    assert not torch.isnan(xr.grad).all() and xr.grad[2:, 1].abs().sum() > 0  # the case the old backward zeroed
    torch.testing.assert_close(xf.grad, xr.grad, atol=2e-5, rtol=1e-5, equal_nan=True)
    for p, q in zip(fused.parameters(), ref.parameters()):
        assert torch.equal(torch.isnan(p.grad), torch.isnan(q.grad))


# ---- item 8: the grid barrier ---------------------------------------------------------------------------------

_BARRIER_TOYS = '''
import triton
import triton.language as tl

from fusedrnn.kernels.persistent import _grid_barrier


@triton.jit
def _fenced(x):
    """x, after a fence.acq_rel.gpu (inline asm with side effects: the compiler keeps it)."""
    return tl.inline_asm_elementwise("fence.acq_rel.gpu;\\n\\tmov.b32 $0, $1;", "=r,r", [x], dtype=tl.int32,
                                     is_pure=False, pack=1)


@triton.jit
def _toy_barrier(p_bar, target, p_y, step, o, MODE: tl.constexpr):
    """kernels/persistent.py's _grid_barrier ("ok", "hoisted"), or a faulty one: "early" reads y between the arrival
    and the first poll, "relaxed" polls relaxed with a fence after each poll, "relaxed_arrival" arrives relaxed.
    Returns what "early" read (zeros otherwise)."""
    h = tl.zeros((16, ), tl.float32)
    if MODE == "ok" or MODE == "hoisted":
        _grid_barrier(p_bar, target)
    else:
        tl.debug_barrier()
        if MODE == "relaxed_arrival":
            tl.atomic_add(p_bar, 1, sem="relaxed", scope="gpu")
        else:
            tl.atomic_add(p_bar, 1, sem="release", scope="gpu")
        if MODE == "early":
            h = tl.load(p_y + step * 16 + o, cache_modifier=".cg")
        if MODE == "relaxed":
            seen = _fenced(tl.atomic_add(p_bar, 0, sem="relaxed", scope="gpu"))
            while seen < target:
                seen = _fenced(tl.atomic_add(p_bar, 0, sem="relaxed", scope="gpu"))
        else:
            seen = tl.atomic_add(p_bar, 0, sem="acquire", scope="gpu")
            while seen < target:
                seen = tl.atomic_add(p_bar, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()
    return h


@triton.jit
def toy_kernel(p_y, p_bar, T, MODE: tl.constexpr):
    """The cooperative kernels' shape: step t reads row t of y (what the other programs wrote the step before),
    writes row t+1 and meets the others at the barrier. "hoisted" reads y once, before the loop."""
    o = tl.arange(0, 16)
    h = tl.zeros((16, ), tl.float32)
    if MODE == "hoisted":
        h = tl.load(p_y + o, cache_modifier=".cg")
    for step in range(T):
        if MODE != "hoisted":
            h += tl.load(p_y + step * 16 + o, cache_modifier=".cg")
        tl.store(p_y + (step + 1) * 16 + o, h + 1.0)
        h += _toy_barrier(p_bar, (step + 1) * tl.num_programs(0), p_y, step, o, MODE)
'''

#: The polls of kernels/persistent.py's _grid_barrier, and what the relaxed-poll-plus-fence variant makes of them.
_ACQUIRE_POLL = 'tl.atomic_add(p_bar, 0, sem="acquire", scope="gpu")'
_RELAXED_FENCED_POLL = ('tl.inline_asm_elementwise("fence.acq_rel.gpu;\\n\\tmov.b32 $0, $1;", "=r,r", '
                        '[tl.atomic_add(p_bar, 0, sem="relaxed", scope="gpu")], dtype=tl.int32, is_pure=False, pack=1)')


def test_grid_barrier_orders_the_steps_in_the_ptx(tmp_path):
    """The cooperative kernels as dispatch builds them (_coop_fwd/_coop_bwd: resident at H=64 B=16, streamed,
    RESIDENT=False, at H=1536 B=64; LSTM and GRU, bf16; training and, forward, inference), read from their PTX
    (``bench.resources.barrier_violations``, which follows the registers computed from p_bar and from p_y / p_dhp):
    the arrival is a release add at GPU scope; every poll is an acquire read at GPU scope; the time loop (the loop
    holding the arrival) spins on a poll; and every read of what other programs wrote (h_{t-1} through y, the
    backward's dHp_{t+1}: the .cg loads and cp.async copies) sits inside the time loop and after a poll on every path
    from the arrival. The checker rejects the faults it is for: the real kernels with the polls relaxed and a fence
    after each (a patched copy of kernels/), and toy kernels whose read is hoisted out of the loop, made between the
    arrival and the poll, or whose arrival is relaxed; the same toy with the real barrier passes. On the same PTX,
    ``bench.ptx.loop_reads`` finds no read of W_hh inside a loop of the resident kernels and finds them in the
    streamed ones."""
    patched = tmp_path / "patched"
    for folder in ("kernels", ):
        shutil.copytree(ROOT / folder, patched / folder)
    persistent = patched / "kernels" / "persistent.py"
    text = persistent.read_text()
    assert text.count(_ACQUIRE_POLL) == 2, "kernels/persistent.py's barrier polls changed: update this test"
    persistent.write_text(text.replace(_ACQUIRE_POLL, _RELAXED_FENCED_POLL))
    (tmp_path / "barrier_toys.py").write_text(_BARRIER_TOYS)
    found = _compile_in_subprocess("""
        import json, sys
        import triton
        from triton.backends.compiler import GPUTarget
        from bench import resources as r
        out, w_reads = {}, {}
        for kind, H, B in (("resident_fwd", 64, 16), ("resident_bwd", 64, 16), ("streamed_fwd", 1536, 64),
                           ("streamed_bwd", 1536, 64)):
            flag_sets = [{}]
            if kind.endswith("fwd"):  # training, and inference (the input projection fused)
                flag_sets = [dict(SAVE=True, FUSE_INPUT=False), dict(SAVE=False, FUSE_INPUT=True)]
            for cell in ("lstm", "gru"):
                for flags in flag_sets:
                    ptx, params = r.ptx_of(r.find(kind, cell, "bf16", H, B, **flags))
                    out[f"{kind} {cell} fuse={flags.get('FUSE_INPUT', 0)}"] = r.barrier_violations(
                        ptx, params, r.SHARED[kind[-3:]])
                    assert ".gpu.acquire" in ptx
                    w_reads[f"{kind} {cell} fuse={flags.get('FUSE_INPUT', 0)}"] = len(
                        r.ptx.loop_reads(ptx, params, ("p_w", ))["global_reads"])
        sys.path.insert(0, sys.argv[2])
        import barrier_toys
        toy_signature = {"p_y": "*fp32", "p_bar": "*i32", "T": "i32", "MODE": "constexpr"}
        for mode in ("ok", "hoisted", "early", "relaxed", "relaxed_arrival"):
            src = triton.compiler.ASTSource(fn=barrier_toys.toy_kernel, signature=toy_signature,
                                            constexprs={"MODE": mode})
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                               options=dict(num_warps=1, enable_fp_fusion=True))
            out[f"toy {mode}"] = r.barrier_violations(k.asm["ptx"], r.ptx_params(src), ("p_y", ))
            w_reads[f"toy {mode}"] = len(r.ptx.loop_reads(k.asm["ptx"], r.ptx_params(src), ("p_y", ))["global_reads"])
        r._SRC = sys.argv[3]  # kernels/ with the relaxed, fenced polls
        ptx, params = r.ptx_of(r.find("resident_fwd", "gru", "bf16", 64, 16))
        assert "fence.acq_rel.gpu" in ptx
        out["relaxed polls + fence"] = r.barrier_violations(ptx, params, r.SHARED["fwd"])
        json.dump(dict(out, w_reads=w_reads), open(sys.argv[1], "w"))
    """, tmp_path, str(tmp_path), str(patched))
    w_reads = found.pop("w_reads")
    real = {k: v for k, v in found.items() if not k.startswith(("toy", "relaxed"))}
    assert len(real) == 12 and not any(real.values()), {k: v for k, v in real.items() if v}
    assert found["toy ok"] == []
    assert any("outside the time loop" in v for v in found["toy hoisted"]), found["toy hoisted"]
    assert any("before any poll" in v for v in found["toy early"]), found["toy early"]
    assert any("relaxed" in v and "neither" in v for v in found["toy relaxed"]), found["toy relaxed"]
    assert any("no arrival" in v for v in found["toy relaxed_arrival"]), found["toy relaxed_arrival"]
    fenced = found["relaxed polls + fence"]
    assert any("ld.global.gpu.relaxed" in v for v in fenced) and any("no poll" in v for v in fenced), fenced
    # bench.ptx.loop_reads on the same PTX: the resident kernels read W_hh inside no loop (held on chip for the
    # whole sequence), the streamed ones re-read it at every step; on the toys it sees the read of y in the loop,
    # and none once hoisted out of it.
    held = {k: n for k, n in w_reads.items() if k.startswith("resident")}
    streamed = {k: n for k, n in w_reads.items() if k.startswith("streamed")}
    assert len(held) == 6 and not any(held.values()), held
    assert len(streamed) == 6 and all(streamed.values()), streamed
    assert w_reads["toy ok"] > 0 and w_reads["toy hoisted"] == 0, w_reads


# ---- resets: the RESET variants compile as the plain ones do ----------------------------------------------------


@pytest.mark.slow
def test_reset_variants_compile_without_spills(tmp_path):
    """Every kernel with a reset mask (RESET=True: the step, batch-tiled, resident and streamed cooperative kernels,
    forward and backward, LSTM bf16 B=16 (the streamed ones B=64: where dispatch runs them; the resident ones at H=64
    and 768, with 8-unit slices and K in 3 blocks), as the launcher records them with ``reset=``) compiles for sm_90a,
    keeps its tensor-core matmuls, and the cooperative ones pass the grid-barrier check of the PTX, with no spill; so
    does GRU's resident backward at H=64 and 128. (Those resident backwards spilled, 8-48 B, while their dots' loads
    were masked by the reset flags; the flagged rows are now zeroed after the dots: kernels/persistent.py, _bwd_step.)"""
    rows = _compile_in_subprocess("""
        import json, sys
        from bench import resources as r
        out = []
        for cell, kind, H, B in (("lstm", "step_fwd", 256, 16), ("lstm", "step_bwd", 256, 16),
                                 ("lstm", "tiled_fwd", 256, 16), ("lstm", "tiled_bwd", 256, 16),
                                 ("lstm", "resident_fwd", 64, 16), ("lstm", "resident_bwd", 64, 16),
                                 ("lstm", "resident_fwd", 768, 16), ("lstm", "resident_bwd", 768, 16),
                                 ("lstm", "streamed_fwd", 1536, 64), ("lstm", "streamed_bwd", 1536, 64),
                                 ("gru", "resident_bwd", 64, 16), ("gru", "resident_bwd", 128, 16)):
            flags = dict(HAS_NEXT=True) if kind == "step_bwd" else {}
            spec = r.find(kind, cell, "bf16", H, B, reset=True, RESET=True, **flags)
            out.append(r._spec_row((spec, [(cell, "bf16", H, B, "reset")], True)))
        json.dump(out, open(sys.argv[1], "w"))
    """, tmp_path)
    assert len(rows) == 12
    for row in rows:
        assert row["ok"], row.get("error")
        assert row["reset"] and row["spills"] == 0, (row["cell"], row["kind"], row["H"], row["spills"])
        assert row["tensor_cores"] != "none", row["kind"]
        assert not row.get("barrier") and not row["nan_minmax"], (row["kind"], row.get("barrier"))


# ---- bench/micro.py: the parts of a step, as the first GPU run times them -----------------------------------------


@pytest.mark.slow
def test_micro_kernels_compile_as_the_parts_they_time(tmp_path):
    """bench/micro.py's kernels build for sm_90a as what they stand for: the broadcast's grid barrier passes the PTX
    check (its reads of h inside the time loop, after a poll), and the held matmul (LSTM's 4 gates x 8 units of a
    768-wide bf16 slice, B=16, its default) reads its W slice inside no loop, on tensor cores. (Registers and
    spills are printed by ``bench.micro``'s GPU run, not asserted: Triton 3.9's ptxas spills this one, 3.6's not.)"""
    found = _compile_in_subprocess("""
        import json, sys
        import triton
        from triton.backends.compiler import GPUTarget
        from bench import micro, ptx

        def build(fn, signature, constexprs, **options):
            src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(enable_fp_fusion=True, **options))
            return k.asm, [n for n, t in signature.items() if t != "constexpr"]

        out = {}
        kb, nkb = micro.held_blocks(768, 16)
        asm, params = build(micro._held_matmul_kernel, dict(p_w="*bf16", p_a="*bf16", p_out="*fp32", T="i32",
                            K="i32", N="i32", BLOCK_B="constexpr", KB="constexpr", NKB="constexpr",
                            BLOCK_N="constexpr"),
                            dict(BLOCK_B=16, KB=kb, NKB=nkb, BLOCK_N=32), num_warps=4, num_stages=1)
        out["held_w_loop_reads"] = len(ptx.loop_reads(asm["ptx"], params, ("p_w", ))["global_reads"])
        out["held_mma"] = ptx.analyze(asm["ptx"], asm["cubin"])["mma"]
        asm, params = build(micro._broadcast_kernel, dict(p_h="*bf16", p_bar="*i32", T="i32", B="i32", H="i32",
                            BLOCK_B="constexpr", HP="constexpr", SLICE="constexpr"), dict(BLOCK_B=16, HP=1024, SLICE=8),
                            num_warps=4, launch_cooperative_grid=True)
        out["broadcast_barrier"] = ptx.barrier_violations(asm["ptx"], params, ("p_h", ))
        build(micro._barrier_kernel, dict(p_bar="*i32", T="i32"), {}, num_warps=4, launch_cooperative_grid=True)
        json.dump(out, open(sys.argv[1], "w"))
    """, tmp_path)
    assert found["held_w_loop_reads"] == 0
    assert found["held_mma"]["HMMA"] + found["held_mma"]["HGMMA"] > 0, found["held_mma"]
    assert found["broadcast_barrier"] == [], found["broadcast_barrier"]
