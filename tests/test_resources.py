"""Static resources of the kernels fusedrnn's dispatch picks on an H100, compiled for sm_90a without a GPU
(``python -m bench.resources --dispatch``): no register spills, and the bf16/fp16 matmuls use tensor cores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _helpers import load_bench
from fusedrnn import dispatch
from fusedrnn.autotune.spaces import KNOWN_GPUS

load_bench()
from bench import resources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
H100 = KNOWN_GPUS["H100"]


def test_resource_launches_are_dispatchs():
    """bench.resources compiles the launches the launcher makes (recorded, with the heuristic configurations: no
    shipped table): a cooperative launch carries dispatch's plan, and --dispatch's kernels are dispatch's picks.
    (This process interprets the kernels, so the records are read here, not their compile specs.)"""
    for H, B, kind in ((64, 16, "resident_fwd"), (768, 16, "resident_bwd"), (1024, 64, "resident_fwd"),
                       (1536, 64, "streamed_fwd"), (1536, 64, "streamed_bwd")):
        plan, _ = dispatch.coop_plan("gru", torch.bfloat16, torch.device("cuda"), H, B, H100)
        record, = (one for one in resources.record_launches("gru", "bf16", H, B, 32, True, "cooperative")
                   if one.name == kind)
        a = record.arguments
        assert plan is not None and (a["BLOCK_B"], a["BLOCK_H"], a["BLOCK_K"], a["num_warps"]) == (
            plan.BLOCK_B, plan.BLOCK_H, plan.BLOCK_K, plan.num_warps)
        assert a["RESIDENT"] == kind.startswith("resident")
    # GRU H=1536 B=64 would need 96 slices x 2 batch tiles of 32 rows: streamed.
    assert {one.name for one in resources.record_launches("gru", "bf16", 1536, 64, 32, True)} == {
        "streamed_fwd", "streamed_bwd"}
    kinds = {one.name for cell in ("lstm", "rnn_tanh") for H in resources.HIDDEN for B in resources.BATCH
             for _, T, train, kernel in resources.DISPATCH_SCENARIOS
             for one in resources.record_launches(cell, "bf16", H, B, T, train, kernel)}
    # T=16: stepwise; T=100 and 1024: cooperative, resident at every one of these shapes (B=64 from H=768 in
    # 32-row tiles; the streamed variant runs only at B=64 H=1536, checked above). The batch-tiled kernel runs on
    # an H100 only for batches too large for a cooperative grid, which these shapes are not.
    assert {"step_fwd", "step_bwd", "resident_fwd", "resident_bwd"} == kinds


def test_jit_helpers_declare_no_default_arguments():
    """Triton 3.6, the GPU machines' version, hands a jit function's default argument value (a constexpr's
    default among them) to the code generator as a plain Python object and fails to compile ("'str' object has
    no attribute 'type'"); 3.9 wraps it. CI runs 3.9, so the source is checked: callers pass every argument."""
    import ast
    found = []
    for path in sorted((ROOT / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any("jit" in ast.unparse(d) for d in node.decorator_list):
                args = node.args
                if args.defaults or any(d is not None for d in args.kw_defaults):
                    found.append(f"{path.name}:{node.lineno} {node.name}")
    assert not found, f"jit functions with default arguments: {found}"


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_dispatched_kernels_do_not_spill_and_use_tensor_cores(cell, tmp_path):
    """H in {256, 512, 768, 1024}, B in {16, 64}, T in {16, 100, 1024}, bf16 and fp16: every launch dispatch makes
    (recorded from the launcher) compiles for sm_90a, spills nothing, passes the PTX checks and, where it has a
    matmul, has HGMMA/HMMA instructions. Compiled in a subprocess: the suite's process runs
    the Triton interpreter, which cannot compile."""
    out = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "bench.resources", "--dispatch", "--cells", cell, "--jobs", "1",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {r["H"] for r in rows} == {256, 512, 768, 1024}
    failed = [f"{r['kind']} H={r['H']} B={r['B']}: {r.get('error')}" for r in rows if not r["ok"]]
    assert not failed, failed
    spilled = [f"{r['kind']} {r['dtype']} H={r['H']} B={r['B']}: {r['spills']} B" for r in rows if r["spills"]]
    assert not spilled, f"register spills: {spilled}"
    # A sequence's last step has no next step: its backward has no matmul (has_next=0), so no tensor cores.
    scalar = [f"{r['kind']} {r['dtype']} H={r['H']} B={r['B']}" for r in rows
              if r["tensor_cores"] == "none" and r.get("has_next", True)]
    assert not scalar, f"no tensor-core instructions: {scalar}"
    # The resident kernels hold W_hh on chip: no read of it inside a loop of their PTX, within shared memory.
    streamed = [f"{r['kind']} {r['dtype']} H={r['H']} B={r['B']}" for r in rows
                if r["kind"].startswith("resident") and r["w_loop_reads"]]
    assert not streamed, f"resident kernels reading W_hh inside a loop: {streamed}"
    assert max(r["smem"] for r in rows) <= H100.smem_per_block
    assert all("step_l2_read" in r for r in rows)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_step_traffic_from_the_plan():
    """``bench.resources.traffic``: what a step reads per SM, from the plan. LSTM bf16, B=16: the streamed forward at
    H=768 (48 programs of 16 units) re-reads its 96 KB W_hh slice from L2 every step beside h_{t-1} (whole), its
    input gates and c; the resident one at H=64 (4 programs of 16 units) reads W_hh on chip."""
    def row(kind, H, block_h):
        return dict(kind=kind, cell="lstm", w_type="*bf16", BLOCK_B=16, BLOCK_H=block_h, BLOCK_K=64, num_warps=4,
                    num_stages=3, save=True, fuse_input=False)
    s = resources.traffic(row("streamed_fwd", 768, 16), 768, 16)
    w = 4 * 16 * 768 * 2
    assert s["programs"] == 48 and s["per_sm"] == 1 and s["w_onchip"] == 0
    assert s["l2_read"] == 16 * 768 * 2 + 4 * 16 * 16 * 2 + 16 * 16 * 4 + w
    assert s["write"] == 16 * 16 * 2 + 16 * 16 * 4 + 4 * 16 * 16 * 4
    r = resources.traffic(row("resident_fwd", 64, 16), 64, 16)
    assert r["programs"] == 4 and r["w_onchip"] == 4 * 16 * 64 * 2 and r["l2_read"] == 16 * 64 * 2 + 4 * 16 * 16 * 2
    b = resources.traffic(dict(row("resident_bwd", 64, 16), save=None), 64, 16)
    assert b["l2_read"] == 16 * 4 * 64 * 2 + 16 * 16 * 2 + 4 * 16 * 16 * 4 + 2 * 16 * 16 * 4  # dHp, dy, saved, c


@pytest.mark.slow
def test_resident_kernel_holds_w_hh_for_the_target_shapes(tmp_path):
    """LSTM bf16 at H in {256, 512, 768, 1024, 1536} and B in {1, 8, 16, 64}, T=100 and 1024, training and
    inference: dispatch runs the resident cooperative kernel for every B <= 16 and for B=64 up to H=1024 (in 32-row
    batch tiles from H=768), and its sm_90a builds spill nothing, stay within an H100's shared memory, read W_hh
    inside no loop of their PTX and multiply on tensor cores inside the time loop (mma.sync / wgmma in its PTX); at
    B=16, H=768 its grid has 96 programs (8 hidden units each), so a step runs on 96 of the 132 SMs, and at B=64 96
    too (48 slices of 16 units x 2 batch tiles). Compiled in a subprocess (this process interprets the kernels)."""
    out = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "bench.resources", "--dispatch", "--cells", "lstm", "--dtypes", "bf16",
                           "--hidden", "256", "512", "768", "1024", "1536", "--batch", "1", "8", "16", "64",
                           "--kinds", "resident_fwd", "resident_bwd", "streamed_fwd", "streamed_bwd", "--jobs", "2",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert not [r for r in rows if not r["ok"] or r["spills"]], [(r["kind"], r["H"], r["B"]) for r in rows
                                                                 if not r["ok"] or r["spills"]]
    resident = [r for r in rows if r["kind"].startswith("resident")]
    assert {(r["H"], r["B"]) for r in resident} == {(H, B) for H in (256, 512, 768, 1024, 1536) for B in (1, 8, 16)
                                                    } | {(H, 64) for H in (256, 512, 768, 1024)}
    assert not [r for r in resident if r["w_loop_reads"] or r["smem"] > H100.smem_per_block
                or r["tensor_cores"] == "none" or not r["loop_mma"]]
    assert {r["step_programs"] for r in resident if r["H"] == 768 and r["B"] in (16, 64)} == {96}
    assert proc.returncode == 0, proc.stdout[-2000:]
