"""Autotuning on the CPU: keys and buckets, pruning by resource limits, the tuner's search (timings faked), the
tuner through the real launcher (Triton interpreter), the runtime policy and the CLI without a GPU. The cache files:
test_autotune_cache.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from fusedrnn import calls, dispatch, settings
from fusedrnn.autotune import cache, cli, harness, keys, presets, runtime, spaces, tuner
from fusedrnn.autotune.cache import CacheWarning
from fusedrnn.autotune.spaces import INTERPRETER, KNOWN_GPUS, Problem, KernelConfig

from _autotune import CPU, cpu_key, isolated  # noqa: F401  (isolated: autouse fixture)

H100 = KNOWN_GPUS["H100"]



# ---- keys ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch,bucket", [(0, 16), (1, 16), (5, 16), (16, 16), (17, 32), (33, 64), (64, 64),
                                          (65, 128), (200, 256), (256, 256), (257, 256), (100000, 256)])
def test_batch_bucket(batch, bucket):
    assert keys.batch_bucket(batch) == bucket


def test_key_fields_and_round_trip():
    key = cpu_key(B=3)
    assert [f for f in key.__dataclass_fields__] == ["gpu", "triton", "kernel", "cell", "dtype", "H", "K", "I", "B"]
    assert key.gpu == "cpu-interpreter" and key.B == 16 and key.dtype == "float32"
    assert key.triton.count(".") == 1  # major.minor
    assert keys.Key.parse(str(key)) == key
    assert cpu_key(B=1) == cpu_key(B=16) != cpu_key(B=17)  # one key per bucket, never per batch size
    assert cpu_key(I=0) != cpu_key(I=24)  # a fused input projection is another kernel
    for bad in ("", "a|b", str(key).replace("|H32|", "|X32|"), str(key).replace("triton-", "")):
        with pytest.raises(ValueError):
            keys.Key.parse(bad)


def test_launch_options_of_each_variant():
    """The batch-tiled and streamed kernels launch with ptxas's register cap at its most (one long-lived program
    per SM: occupancy does not matter), still within the SM's 64K registers; cooperative grids (resident and
    streamed) as cooperative launches, which the driver starts all at once or refuses; step kernels plain."""
    blocks = dict(BLOCK_B=16, BLOCK_H=32, BLOCK_K=64)
    opts = KernelConfig(**blocks, num_warps=8, num_stages=3, variant="step").launch_options()
    assert opts == dict(blocks, num_warps=8, num_stages=3)
    opts = KernelConfig(**blocks, num_warps=8, num_stages=1, variant="resident").launch_options()
    assert opts == dict(blocks, num_warps=8, num_stages=1, launch_cooperative_grid=True)
    for variant, coop in (("tiled", {}), ("streamed", dict(launch_cooperative_grid=True))):
        for warps, cap in ((4, 255), (8, 255), (16, 128)):
            opts = KernelConfig(**blocks, num_warps=warps, num_stages=2, variant=variant).launch_options()
            assert opts == dict(blocks, num_warps=warps, num_stages=2, maxnreg=cap, **coop)


def test_key_dtype_names():
    assert keys.dtype_name(torch.bfloat16, "cuda") == "bfloat16"
    assert keys.dtype_name(torch.float32, "cpu") == "float32"
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert keys.dtype_name(torch.float32, "cuda") == "float32-tf32"  # TF32 dots are a different kernel
        assert keys.dtype_name(torch.float32, "cpu") == "float32"
        torch.backends.cuda.matmul.allow_tf32 = False
        assert keys.dtype_name(torch.float32, "cuda") == "float32"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


# ---- pruning ------------------------------------------------------------------------------------------------


def test_resource_model_prunes_what_cannot_run():
    p = Problem("step_fwd", "lstm", "float32", 512, 512, 128)
    huge_smem = KernelConfig(128, 128, 128, 8, 3)  # 3 x (128x128 + 128x128) x 4 B = 384 KB > 227 KB
    huge_regs = KernelConfig(128, 128, 32, 2, 1)  # 9 fp32 tiles of 128x128 over 64 threads
    fits = KernelConfig(16, 32, 64, 4, 2)
    assert spaces.step_resources(p, huge_smem).smem > H100.smem_per_block
    assert spaces.step_resources(p, huge_regs).regs > H100.regs_per_thread
    pr = spaces.prune(p, [huge_smem, huge_regs, fits], H100)
    assert pr.survivors == [fits]
    reasons = dict(pr.by_resources)
    assert "smem" in reasons[huge_smem] and "regs" in reasons[huge_regs]
    for c in spaces.candidates(p, H100).survivors:  # every survivor fits by the model
        res = spaces.step_resources(p, c)
        assert res.smem <= H100.smem_per_block and res.regs <= H100.regs_per_thread


def test_prune_limits_and_shape_rules():
    p = Problem("step_bwd", "gru", "float16", 64, 192, 16)
    tiny = spaces.GpuLimits("tiny", smem_per_block=16 * 1024, smem_per_sm=16 * 1024)
    pr = spaces.candidates(p, tiny)
    assert pr.survivors and pr.by_resources and pr.by_shape
    assert all(spaces.step_resources(p, c).smem <= 16 * 1024 for c in pr.survivors)
    # tl.dot needs >= 16 on every block dimension on a GPU, not under the interpreter
    small = KernelConfig(8, 16, 16, 1, 1)
    assert "tl.dot" in dict(spaces.prune(p, [small], H100).by_shape)[small]
    assert spaces.prune(p, [small], INTERPRETER).survivors == [small]
    # tiles larger than the (power-of-two) problem are useless: B=16 bucket allows no 32-row tile
    assert all(c.BLOCK_B == 16 and c.BLOCK_H <= 64 for c in pr.survivors)
    # an unknown variant implements nothing
    other = KernelConfig(16, 16, 32, 1, 1, variant="nope")
    assert "variant" in dict(spaces.prune(p, [other], H100).by_shape)[other]


def test_default_space_is_pruned_for_h100():
    p = Problem("step_fwd", "lstm", "float16", 512, 512, 64)
    pr = spaces.candidates(p, H100)
    assert pr.total == len(list(spaces.step_candidates(p)))
    assert 0 < len(pr.survivors) < pr.total
    assert p.heuristic("cuda") in pr.survivors


# ---- the tuner's search, with a fake launcher and fake timings ---------------------------------------------


class FakeHarness:
    """Stands in for harness.Harness: records which configurations ran; outputs are wrong for ``bad`` ones."""

    ran: list = []
    bad: set = set()

    def __init__(self, problem, device, steps=8, seed=0):
        self.problem, self.T = problem, steps

    def run(self, cfg, launch=True):
        FakeHarness.ran.append(cfg)
        return (torch.full((3,), 2.0 if cfg in FakeHarness.bad else 1.0),), [cfg]

    def replay_fn(self, launches):
        def fn():
            pass
        fn.cfg = launches[0]
        return fn


def cost(cfg: KernelConfig) -> float:
    """A smooth fake time with one minimum at BLOCK_B=16, BLOCK_H=16, BLOCK_K=64, 2 warps, 3 stages."""
    return 1.0 + 0.1 * (abs(cfg.BLOCK_B.bit_length() - 5) + abs(cfg.BLOCK_H.bit_length() - 5) * 2
                        + abs(cfg.BLOCK_K.bit_length() - 7) + abs(cfg.num_warps.bit_length() - 2)
                        + abs(cfg.num_stages - 3))


@pytest.fixture
def fake_harness(monkeypatch):
    FakeHarness.ran, FakeHarness.bad = [], set()
    monkeypatch.setattr(harness, "Harness", FakeHarness)
    return FakeHarness


@pytest.mark.parametrize("strategy", ["coordinate", "exhaustive"])
def test_search_finds_the_fastest(fake_harness, strategy):
    p = Problem("step_fwd", "lstm", "float16", 512, 512, 64)
    r = tuner.tune(p, CPU, strategy=strategy, timer=lambda fn: cost(fn.cfg), limits=H100, steps=4,
                   baseline=p.heuristic("cuda"))
    assert r.config == KernelConfig(16, 16, 64, 2, 3)
    assert r.gain == pytest.approx(cost(p.heuristic("cuda")) / cost(r.config))
    assert r.us == pytest.approx(1e3 * cost(r.config) / 4)  # per step
    survivors = spaces.candidates(p, H100).survivors
    if strategy == "coordinate":
        assert r.timed < len(survivors) / 4  # a few dozen, not all
    else:
        assert r.timed == len(survivors)
    e = r.entry()
    assert KernelConfig.from_dict(e["config"]) == r.config and e["gain"] > 1


def test_pruned_candidates_are_never_run(fake_harness):
    """Configurations beyond the GPU's limits never reach the launcher (nothing is compiled for them)."""
    p = Problem("step_fwd", "gru", "float32", 256, 256, 64)
    limits = spaces.GpuLimits("small", smem_per_block=100 * 1024, smem_per_sm=100 * 1024, regs_per_thread=160)
    pruned = spaces.candidates(p, limits)
    assert pruned.by_resources and p.heuristic("cuda") in pruned.survivors
    tuner.tune(p, CPU, strategy="exhaustive", timer=lambda fn: cost(fn.cfg), limits=limits,
               baseline=p.heuristic("cuda"))
    ran = set(fake_harness.ran)
    assert ran <= set(pruned.survivors) | {p.heuristic("cuda")}
    assert not ran & {c for c, _ in pruned.by_resources}
    assert ran >= set(pruned.survivors)


def test_wrong_results_and_failures_are_dropped(fake_harness, monkeypatch):
    p = Problem("step_fwd", "lstm", "float16", 512, 512, 64)
    fastest = KernelConfig(16, 16, 64, 2, 3)
    fake_harness.bad = {fastest}
    broken = KernelConfig(16, 32, 64, 2, 3)
    original = FakeHarness.run

    def run(self, cfg, launch=True):
        if cfg == broken:
            raise RuntimeError("out of resource: shared memory")
        return original(self, cfg, launch)

    monkeypatch.setattr(FakeHarness, "run", run)
    r = tuner.tune(p, CPU, strategy="exhaustive", timer=lambda fn: cost(fn.cfg), limits=H100,
                   baseline=p.heuristic("cuda"))
    assert r.config != fastest and r.config != broken
    assert r.dropped == {"wrong result": 1, "RuntimeError": 1}


def test_a_winner_slower_on_retiming_gives_the_heuristic(fake_harness):
    p = Problem("step_bwd", "rnn_tanh", "bfloat16", 512, 512, 16)
    heuristic = p.heuristic("cuda")
    seen: dict = {}

    def timer(fn):  # every candidate is fast the first time, slow when measured again
        seen[fn.cfg] = seen.get(fn.cfg, 0) + 1
        return 1.0 if fn.cfg == heuristic else (0.5 if seen[fn.cfg] == 1 else 2.0)

    r = tuner.tune(p, CPU, timer=timer, limits=H100, baseline=heuristic)
    assert r.config == heuristic and r.gain == 1.0


# ---- the tuner through the real launcher (Triton interpreter) -----------------------------------------------


@pytest.mark.parametrize("kernel,cell,K,I", [("step_fwd", "lstm", 16, 0), ("step_bwd", "gru", 48, 0),
                                             ("step_fwd", "rnn_tanh", 16, 8), ("tiled_fwd", "gru", 16, 0),
                                             ("tiled_bwd", "lstm", 64, 0), ("tiled_fwd", "rnn_relu", 16, 8)])
def test_tuner_runs_the_launcher(kernel, cell, K, I):  # noqa: E741
    """Candidates run through fusedrnn.launch under the forced configuration, are checked against the heuristic's
    results, and their recorded launches are what gets timed."""
    p = Problem(kernel, cell, "float32", 16, K, 3, I)
    space = [KernelConfig(2, 8, 8, 1, 1, p.variant), KernelConfig(4, 16, 16, 1, 1, p.variant)]
    timed = []

    def timer(fn):  # the first candidate of the space wins
        timed.append(fn)
        return 1.0 if fn.launches[0].arguments["BLOCK_B"] == 2 else 2.0

    before = calls.launch_counts[kernel]
    r = tuner.tune(p, CPU, strategy="exhaustive", timer=timer, limits=INTERPRETER, steps=2, space=space)
    assert calls.launch_counts[kernel] > before
    assert r.config == space[0] and r.dropped == {} and r.steps == (1 if I and p.variant == "step" else 2)
    h = harness.Harness(p, CPU, steps=2)
    _, launches = h.run(space[1], launch=False)  # record only
    assert launches and all(one.name == kernel and one.arguments["BLOCK_B"] == 4 and one.arguments["BLOCK_H"] == 16
                            and one.arguments["BLOCK_K"] == 16 for one in launches)
    recorded = len(launches)
    h.run(space[0])
    assert len(launches) == recorded  # the recording ended with its run


def test_precompiler_compiles_ahead_in_a_worker():
    """Queued candidates run (so compile) in a spawned worker; the tuner waits for them or compiles itself."""
    from fusedrnn.autotune.precompile import Precompiler

    p = Problem("step_fwd", "rnn_relu", "float32", 16, 16, 3)
    space = [KernelConfig(2, 8, 8, 1, 1), KernelConfig(4, 16, 16, 1, 1)]
    with Precompiler(1, CPU) as pre:
        pre.prefetch(p, space)
        r = tuner.tune(p, CPU, strategy="exhaustive", timer=lambda fn: 1.0, limits=INTERPRETER, steps=2,
                       space=space, precompiler=pre)
        assert not pre.broken and pre.errors == 0
        assert [f.result(timeout=60) for f in pre._futures.values()] == [None, None]
    assert r.timed == 2


def test_timing_median_across_triton_versions():
    def new_style(fn, rep=20, quantiles=None, return_mode="mean"):
        return {"median": 2.0}[return_mode]

    def old_style(fn, rep=20, quantiles=None):
        return [3.0]

    assert tuner._median(new_style, None, rep=5) == 2.0
    assert tuner._median(old_style, None, rep=5) == 3.0


# ---- runtime policy -----------------------------------------------------------------------------------------


def test_policy_default_env_and_setter(monkeypatch):
    assert runtime.get_policy() == "off"
    monkeypatch.setenv("FUSEDRNN_AUTOTUNE", "1")
    assert runtime.get_policy() == "off"  # read once per process
    runtime.reset()
    assert runtime.get_policy() == "tune-on-first-use"
    runtime.set_policy("off")
    assert runtime.get_policy() == "off"
    with pytest.raises(ValueError):
        runtime.set_policy("sometimes")
    monkeypatch.setenv("FUSEDRNN_AUTOTUNE", "maybe")
    runtime.reset()
    with pytest.warns(UserWarning, match="not understood"):
        assert runtime.get_policy() == "off"


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device as far as the lookup is concerned, and a fake tuner that counts its runs."""
    gpu = torch.device("cuda", 0)
    monkeypatch.setitem(keys._gpu_names, 0, "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    calls = []

    def tune(problem, device, **kwargs):
        calls.append(problem)
        if problem.H == 13:
            raise RuntimeError("no luck")
        cfg = KernelConfig(16, 16, 32, 2, 1)
        return tuner.TuneResult(problem, cfg, problem.heuristic("cuda"), us=1.0, heuristic_us=1.5, steps=8,
                                candidates=10, survivors=5, timed=4)

    monkeypatch.setattr(tuner, "tune", tune)
    return gpu, calls


def test_no_tuning_unless_opted_in(fake_gpu):
    gpu, calls = fake_gpu
    cfg, source = runtime.lookup("step_fwd", "lstm", torch.float16, gpu, 512, 512, 64)
    assert source == "heuristic" and cfg == spaces.default_kernel_config("cuda", 512, 512, 64, 2) and calls == []


def test_tune_on_first_use(fake_gpu, tmp_path, capsys):
    gpu, calls = fake_gpu
    runtime.set_policy("tune-on-first-use")
    assert runtime.lookup("step_fwd", "lstm", torch.float16, gpu, 512, 512, 64) == (KernelConfig(16, 16, 32, 2, 1),
                                                                                    "tuned")
    assert runtime.lookup("step_fwd", "lstm", torch.float16, gpu, 512, 512, 50)[1] == "tuned"  # same bucket: memo
    assert len(calls) == 1 and calls[0] == Problem("step_fwd", "lstm", "float16", 512, 512, 64)
    assert "tuning" in capsys.readouterr().err
    written = json.loads((tmp_path / "cache" / cache.FILE_NAME).read_text())["entries"]
    assert list(written) == ["Fake GPU|" + str(cpu_key(H=512, K=512, B=64, dtype=torch.float16)).split("|", 1)[1]]
    runtime.reset(tables_dir=tmp_path / "tables")  # a new process: found in the user cache, not tuned again
    assert runtime.lookup("step_fwd", "lstm", torch.float16, gpu, 512, 512, 64)[1] == "user" and len(calls) == 1
    # not on the CPU, and a failure falls back to the heuristic once, with a warning
    runtime.set_policy("tune-on-first-use")
    assert runtime.lookup("step_fwd", "lstm", torch.float16, CPU, 512, 512, 64)[1] == "heuristic"
    with pytest.warns(CacheWarning, match="no luck"):
        assert runtime.lookup("step_fwd", "gru", torch.float16, gpu, 13, 13, 8)[1] == "heuristic"
    runtime.set_policy("tune-on-first-use")
    assert runtime.lookup("step_fwd", "gru", torch.float16, gpu, 13, 13, 8)[1] == "heuristic"
    assert len(calls) == 2


def test_first_use_tuner_is_a_hook_the_tool_registers(fake_gpu, monkeypatch, tmp_path):
    """The library never imports the tuner: importing the tool registers it; a process that never imported it finds
    it through the package metadata (pyproject.toml's entry point; here a stub distribution on sys.path declares
    it); without either the policy warns once and launches use the heuristic."""
    gpu, tuned = fake_gpu
    assert runtime.first_use_tuner() is tuner.tune_on_first_use
    group, name = runtime.TUNER_ENTRY_POINT
    (tmp_path / "stub-0.dist-info").mkdir()
    (tmp_path / "stub-0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: stub\nVersion: 0\n")
    (tmp_path / "stub-0.dist-info" / "entry_points.txt").write_text(
        f"[{group}]\n{name} = fusedrnn.autotune.tuner:tune_on_first_use\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        runtime.set_first_use_tuner(None)
        assert runtime.first_use_tuner() is tuner.tune_on_first_use  # from the entry point
        monkeypatch.setattr(runtime, "TUNER_ENTRY_POINT", (group, "no-such-entry-point"))
        runtime.set_first_use_tuner(None)
        runtime.set_policy("tune-on-first-use")
        with pytest.warns(CacheWarning, match="no tuner is available") as got:
            for H in (512, 256):
                assert runtime.lookup("step_fwd", "lstm", torch.float16, gpu, H, H, 64)[1] == "heuristic"
        assert len(got) == 1 and tuned == []  # warned once
    finally:
        runtime.set_first_use_tuner(tuner.tune_on_first_use)


def test_forced_config_reaches_the_launcher():
    cfg = KernelConfig(2, 4, 8, 1, 1)
    with runtime.forced(cfg):
        assert dispatch.config("step_bwd", "gru", 32, 96, 5, torch.float32, CPU) == cfg
    assert dispatch.config("step_bwd", "gru", 32, 96, 5, torch.float32, CPU) != cfg


# ---- CLI ----------------------------------------------------------------------------------------------------


def test_cli_dry_run_lists_keys_and_counts(capsys):
    assert cli.main(["--preset", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3|" in out and "|step_fwd|lstm|float16|H512|K512|I0|B64" in out
    assert "|step_bwd|lstm|float16|H512|K2048|I0|B64" in out and "4 keys" in out
    assert "|tiled_fwd|lstm|float16|H512|K512|I0|B64" in out and "|tiled_bwd|lstm|float16|H512|K2048|I0|B64" in out
    assert cli.main(["--preset", "bench", "--dry-run"]) == 0
    bench = capsys.readouterr().out
    assert "|decode" not in bench and "|I512|B16" in bench  # decode keys carry the input size
    assert cli.main(["--preset", "nope", "--dry-run"]) == 2


def test_cli_tunes_writes_each_key_and_resumes(tmp_path, monkeypatch, capsys):
    """The tuning loop with a pretend GPU and a fake tuner: every key is written, the gain is printed, a second
    run skips what is done, a spent time budget stops with exit status 3."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(cli, "device_limits", lambda device: H100)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(settings.SETTINGS, "_interpreting", False)  # read once per process: the CLI asks fusedrnn.settings
    calls = []

    def tune(problem, device, **kwargs):
        calls.append(problem)
        return tuner.TuneResult(problem, KernelConfig(16, 16, 64, 2, 3, problem.variant), problem.heuristic("cuda"), us=2.0,
                                heuristic_us=3.0, steps=8, candidates=432, survivors=198, timed=30)

    monkeypatch.setattr(tuner, "tune", tune)
    out, report = tmp_path / "shipped" / "table.json", tmp_path / "report.json"
    args = ["--preset", "smoke", "--jobs", "0", "--output", str(out)]
    assert cli.main([*args, "--report", str(report)]) == 0
    entries = json.loads(out.read_text())["entries"]
    assert len(entries) == 4 == len(calls) and all(k.startswith("Fake GPU|") for k in entries)
    assert {e["gain"] for e in entries.values()} == {1.5}
    assert "all: gain over the heuristic, geometric mean 1.500x" in capsys.readouterr().out
    assert json.loads(report.read_text())["geomean_gain"] == pytest.approx(1.5)
    assert len(json.loads(report.read_text())["results"]) == 4
    assert cli.main(args) == 0 and len(calls) == 4  # nothing left to do
    assert cli.main([*args, "--show"]) == 0 and "4 tuned entries" in capsys.readouterr().out
    assert cli.main([*args, "--retune", "--time-budget", "1e-9"]) == 3 and len(calls) == 4
    # the shipped-table path: the file written by --output is a valid table
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.Store(tables_dir=tmp_path / "shipped").lookup(next(iter(entries)))[1] == "shipped"


def test_presets_are_the_benchmark_shape_sets():
    """The presets are the benchmark's shape sets: one description, in the package, that bench/registry.py reads."""
    from _helpers import load_bench

    load_bench()
    from bench import registry

    assert registry.SETS is presets.SETS and set(presets.PRESETS) == set(presets.SETS) | {"smoke"}
    from_registry = presets.expand(["bench"])
    assert from_registry == presets.expand(list(registry.SETS))
    assert Problem("step_fwd", "lstm", "float32", 512, 512, 64) == from_registry[0]  # fastrnns first
    assert Problem("step_fwd", "lstm", "float16", 768, 768, 16, 768) in from_registry  # a decode step
    assert {p.cell for p in from_registry} == {"lstm", "gru", "rnn_tanh"}
    sweep = presets.expand(["h_sweep"], cells=("lstm",), dtypes=("float16",))
    assert [p for p in sweep if p.variant == "step"] == [
        Problem(k, "lstm", "float16", H, H if k == "step_fwd" else 4 * H, 32)
        for H in (64, 128, 256, 512, 1024, 2048) for k in ("step_fwd", "step_bwd")]
    assert {p for p in sweep if p.variant == "tiled"} == {  # inference (fused input), training fwd and bwd
        Problem(k, "lstm", "float16", H, H if k == "tiled_fwd" else 4 * H, 32, I)
        for H in (64, 128, 256, 512, 1024, 2048)
        for k, I in (("tiled_fwd", H), ("tiled_fwd", 0), ("tiled_bwd", 0))}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cli_refuses_to_tune_without_gpu():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-m", "fusedrnn.autotune", "--preset", "smoke"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA GPU" in proc.stderr and "--dry-run" in proc.stderr
