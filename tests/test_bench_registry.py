"""The benchmark suite's own logic, on a CPU, without timing any kernel: the case registry, the FLOP count,
the provider registry and its plan, cuDNN's algorithm rule, the correctness check, the peer adapters' math,
and the results on disk (rows, merge, summary, index)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


from _helpers import load_bench  # noqa: E402

load_bench()
from bench import cudnn_info, measure, peers, providers, registry, report  # noqa: E402
from bench.base import Env  # noqa: E402


def _shapes(set_name):
    return {(c.cell, c.T, c.B, c.I, c.H, c.L, c.bidirectional) for c in registry.cases((set_name,), modes=("fwd",))}


def test_shape_sets_hold_the_issue_shapes():
    assert _shapes("fastrnns") == {("lstm", 100, 64, 512, 512, 1, False)}
    assert _shapes("persistent") == {("lstm", 1024, 16, 768, 768, 1, False)}
    assert _shapes("small_batch") == {("lstm", 1024, B, H, H, 1, False) for B in (1, 2, 4, 8) for H in (256, 512, 1024)}
    assert {s[1] for s in _shapes("long_seq")} == {1024 * 2 ** k for k in range(7)}  # 1k .. 64k
    assert {s[4] for s in _shapes("h_sweep")} == {64, 128, 256, 512, 1024, 2048}
    assert {s[2] for s in _shapes("b_sweep")} == {1, 2, 4, 8, 16, 32, 64, 128, 256}
    assert {(s[0], s[1], s[2], s[4]) for s in _shapes("gru_rnn")} == {
        (c, T, B, H) for c in ("gru", "rnn_tanh") for T, B, H in ((100, 64, 512), (1024, 16, 768))}
    assert _shapes("deep_bidir") == {("lstm", 100, 64, 512, 512, 2, True)}
    rl = registry.cases(("resets",), modes=("fwd",), dtypes=("fp16",))
    assert {(c.T, c.B, c.H, c.episode) for c in rl} == {(1024, 64, 512, 100), (1024, 64, 512, 0)}


def test_cases_are_unique_and_decode_is_one_step():
    cases = registry.cases()
    assert len({c.key for c in cases}) == len(cases)
    decode = [c for c in cases if c.mode == "decode"]
    assert decode and all(c.T == 1 and c.L == 1 and not c.bidirectional for c in decode)
    assert {c.mode for c in cases} == set(registry.MODES)
    assert {c.dtype for c in cases} == set(registry.DTYPES)
    # The same decode step from two sets is one case that belongs to both.
    both = registry.cases(("fastrnns", "b_sweep"), dtypes=("fp16",), modes=("decode",))
    shared = [c for c in both if (c.B, c.H) == (64, 512)]
    assert len(shared) == 1 and shared[0].sets == ("fastrnns", "b_sweep")


def test_gemm_flops():
    fast = registry.Case("lstm", 100, 64, 512, 512, 1, False, "fp16", "fwd")
    assert registry.gemm_flops(fast) == 2 * 100 * 64 * 4 * 512 * (512 + 512)
    assert registry.gemm_flops(registry.Case("lstm", 100, 64, 512, 512, 1, False, "fp16", "fwdbwd")) == \
        3 * registry.gemm_flops(fast)
    gru = registry.Case("gru", 7, 3, 10, 20, 1, False, "fp32", "fwd")
    assert registry.gemm_flops(gru) == 2 * 7 * 3 * 3 * 20 * (10 + 20)
    bidir = registry.Case("lstm", 5, 2, 8, 16, 2, True, "fp32", "fwd")
    layer0 = 2 * (2 * 5 * 2 * 4 * 16 * (8 + 16))
    layer1 = 2 * (2 * 5 * 2 * 4 * 16 * (32 + 16))  # the second layer reads both directions: I = 2H
    assert registry.gemm_flops(bidir) == layer0 + layer1


def test_provider_selection_and_plan():
    assert {"fusedrnn", "fusedrnn-step", "cudnn", "torch-native", "torch-compile", "flashrnn", "haste"} <= set(
        providers.PROVIDERS)
    with pytest.raises(KeyError, match="unknown provider"):
        providers.select(["cuDNN"])  # exact names only
    fwd = [p.name for p in providers.select(mode="fwd")]
    assert "fusedrnn-cell" not in fwd and "torch-cell" not in fwd and "cudnn" in fwd
    assert "fusedrnn-cell" in [p.name for p in providers.select(mode="decode")]
    assert all(p.tier == "core" for p in providers.select(with_peers=False))

    case = registry.Case("lstm", 100, 64, 512, 512, 1, False, "bf16", "fwd")
    cpu, gpu = Env("cpu", True, False), Env.simulated_cuda()
    assert providers.PROVIDERS["cudnn"].skip_reason(case, cpu)
    assert providers.PROVIDERS["cudnn"].skip_reason(case, gpu) is None
    assert providers.PROVIDERS["fusedrnn-step"].skip_reason(case, Env("cpu", False, False))
    assert providers.PROVIDERS["fusedrnn-step"].skip_reason(case, cpu) is None
    bidir = registry.Case("lstm", 100, 64, 512, 512, 2, True, "fp16", "fwd")
    if peers.installed("flashrnn"):
        assert "one layer" in providers.PROVIDERS["flashrnn"].skip_reason(bidir, gpu)
    else:
        assert "not installed" in providers.PROVIDERS["flashrnn"].skip_reason(bidir, gpu)


def test_dry_run_lists_every_case_and_provider(capsys):
    from bench import __main__ as cli
    assert cli.main(["--dry-run", "--device", "cuda", "--sets", "fastrnns", "--dtypes", "fp16"]) == 0
    out = capsys.readouterr().out
    for mode in ("fwd", "fwdbwd", "decode"):
        key = f"lstm/T{1 if mode == 'decode' else 100}-B64-I512-H512-L1-D1/fp16/{mode}"
        assert f"{key:<44} cudnn          run" in out
        assert f"{key:<44} fusedrnn-step  run" in out
    assert "3 cases" in out


def test_cudnn_algorithm_rule():
    h100 = (9, 0, 132)

    def algo(cell="lstm", dtype="fp16", T=1024, B=16, H=768, L=1, bidir=False, forward=True, dev=h100):
        return cudnn_info.predict_algo(registry.Case(cell, T, B, H, H, L, bidir, dtype, "fwdbwd"), forward, *dev)
    assert algo() == "PERSIST_STATIC"  # the Persistent-RNN case, fp16
    assert algo(dtype="fp32") == "STANDARD" and algo(dtype="bf16") == "STANDARD"
    assert algo(B=12) == "STANDARD"  # batch not a multiple of 8
    assert algo(B=256) == "STANDARD"  # batch above 128
    assert algo(H=1000) == "STANDARD"  # not a multiple of 128
    assert algo(L=2) == "STANDARD" and algo(bidir=True) == "STANDARD"
    assert algo(cell="gru") == "STANDARD"
    assert algo(dev=(8, 6, 84)) == "STANDARD"  # sm_86 is excluded
    assert algo(H=128, dtype="fp32") == "PERSIST_STATIC_SMALL_H"
    assert algo(H=192) == "PERSIST_STATIC_SMALL_H" and algo(H=192, forward=False) == "STANDARD"
    assert algo(cell="rnn_tanh", H=384, dtype="bf16") == "PERSIST_STATIC_SMALL_H"


def test_cudnn_observation_reads_the_ops():
    case = registry.Case("lstm", 3, 2, 4, 5, 1, False, "fp32", "fwd")
    lstm = torch.nn.LSTM(4, 5)
    seen = cudnn_info.observe(lambda: lstm(torch.randn(3, 2, 4)), case)["observed"]
    assert seen["used"] is False and "aten::lstm" in seen["ops"]
    assert seen["kernels"].startswith("unknown")


def _problem(case):
    p = measure.make_problem(case, "cpu")
    measure.add_reference(p)
    return p


def test_compare_passes_torch_and_fails_a_wrong_result():
    case = registry.Case("gru", 3, 2, 4, 5, 1, False, "fp32", "fwdbwd")
    p = _problem(case)
    assert p.names[:2] == ["output", "h_n"] and "grad weight_hh_l0" in p.names
    runner = providers.PROVIDERS["torch-native"].build(case, p.state_dict, "cpu")
    outs = measure.run_once(runner, p)
    ok, worst = measure.compare(p, outs)
    assert ok and worst["ratio"] <= 1
    outs[-1] = outs[-1] + 1e-2  # a wrong bias gradient
    ok, info = measure.compare(p, outs)
    assert not ok and info["tensor"] == "grad bias_hh_l0"
    outs[-1] = outs[-1] * float("nan")
    assert not measure.compare(p, outs)[0]


@pytest.mark.parametrize("cell,L,bidir", [("lstm", 2, True), ("gru", 1, False), ("rnn_tanh", 2, False),
                                          ("rnn_relu", 1, True)])
def test_naive_loop_is_torch_nn(cell, L, bidir):
    """The torch.compile provider's loop (run eagerly here) computes torch.nn's function, gradients included."""
    case = registry.Case(cell, 4, 3, 5, 6, L, bidir, "fp32", "fwdbwd")
    p = _problem(case)
    params = [t.detach().clone().requires_grad_() for t in p.state_dict.values()]
    runner = providers.Runner(lambda x, hx: peers.naive_loop(peers._STEPS[cell], case, x, hx, params), params)
    ok, info = measure.compare(p, measure.run_once(runner, p))
    assert ok, info


def test_haste_gradient_map_inverts_its_layout():
    """haste keeps W^T with gates reordered (i, g, f, o) and one summed bias; the map finds that by probing."""
    H, I = 3, 2  # noqa: E741

    def reorder(w):
        i, f, g, o = w.chunk(4, -1)
        return torch.cat([i, g, f, o], -1)

    class FakeHasteLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.kernel = torch.nn.Parameter(torch.zeros(I, 4 * H))
            self.recurrent_kernel = torch.nn.Parameter(torch.zeros(H, 4 * H))
            self.bias = torch.nn.Parameter(torch.zeros(4 * H))

        def from_native_weights(self, w_ih, w_hh, b_ih, b_hh):
            with torch.no_grad():
                self.kernel.copy_(reorder(w_ih.t()))
                self.recurrent_kernel.copy_(reorder(w_hh.t()))
                self.bias.copy_(reorder(b_ih + b_hh))

    shapes = [("weight_ih_l0", (4 * H, I)), ("weight_hh_l0", (4 * H, H)), ("bias_ih_l0", (4 * H,)),
              ("bias_hh_l0", (4 * H,))]
    to_torch = peers._haste_grad_map(FakeHasteLSTM, shapes)
    native = [torch.randn(s, requires_grad=True) for _, s in shapes]
    haste_params = [reorder(native[0].t()), reorder(native[1].t()), reorder(native[2] + native[3])]
    grads = [torch.randn_like(t) for t in haste_params]
    expected = torch.autograd.grad(haste_params, native, grads)
    for got, want in zip(to_torch(grads), expected):
        torch.testing.assert_close(got, want)


def test_measure_case_rows_on_cpu():
    """End to end through measure_case with torch.nn's CPU RNN and Cells (no Triton kernel runs)."""
    env = Env("cpu", True, False)
    case = registry.Case("lstm", 1, 2, 4, 5, 1, False, "fp32", "decode", sets=("smoke",))
    chosen = [providers.PROVIDERS[n] for n in ("torch-native", "torch-cell", "cudnn")]
    rows = {r["provider"]: r for r in measure.measure_case(case, chosen, env, "cpu",
                                                           dict(budget_s=0.0, min_reps=1, max_reps=1))}
    assert rows["cudnn"]["status"].startswith("skipped: needs a CUDA GPU")
    for name in ("torch-native", "torch-cell"):
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["median_ms"] > 0 and row["n_reps"] == 1 and row["peak_mem_bytes"] is None
        assert row["check"]["ratio"] <= 1 and row["tokens_per_s"] > 0 and row["tflops"] > 0


@pytest.mark.parametrize("mode,bidir", [("fwdbwd", True), ("fwd", False)])
def test_resets_case_fused_and_split_agree(mode, bidir):
    """A case with resets: fusedrnn (reset=, the Triton kernels under the interpreter) passes the check against
    torch.nn in fp32 on the split, packed segments (base.run_split), as torch.nn on the split does; the peers skip."""
    env = Env("cpu", True, False)
    case = registry.Case("lstm", 9, 3, 4, 5, 1, bidir, "fp32", mode, episode=3)
    p = measure.make_problem(case, "cpu", seed=1)
    assert p.reset.shape == (9, 3) and p.reset.any() and not p.reset[0].any()
    chosen = [providers.PROVIDERS[n] for n in ("fusedrnn-tiled", "torch-native", "torch-compile")]
    rows = {r["provider"]: r for r in measure.measure_case(case, chosen, env, "cpu",
                                                           dict(budget_s=0.0, min_reps=1, max_reps=1), seed=1)}
    assert rows["torch-compile"]["status"] == "skipped: takes no resets inside a sequence"
    for name in ("fusedrnn-tiled", "torch-native"):
        assert rows[name]["status"] == "ok", rows[name]
    assert "-E3/" in case.key and "episodes~3" in case.shape_label


def test_a_failing_provider_gets_no_time():
    env = Env("cpu", True, False)
    case = registry.Case("rnn_tanh", 2, 2, 3, 4, 1, False, "fp32", "fwd", ("smoke",))

    def broken(case, state_dict, device):
        raise RuntimeError("boom\nsecond line")

    def wrong(case, state_dict, device):
        runner = providers.PROVIDERS["torch-native"].build(case, state_dict, device)
        forward = runner.forward
        runner.forward = lambda x, hx: (lambda out, states: (out * 1.5, states))(*forward(x, hx))
        return runner

    fakes = [providers.Provider(n, "peer", n, b, lambda c, e: None) for n, b in (("broken", broken), ("wrong", wrong))]
    rows = {r["provider"]: r for r in measure.measure_case(case, fakes, env, "cpu", dict(budget_s=0.0))}
    assert rows["broken"]["status"] == "failed: RuntimeError: boom"
    assert rows["wrong"]["status"].startswith("failed: output: max|diff|")
    assert all("median_ms" not in r for r in rows.values())


def _row(case, provider, status="ok", ms=1.0):
    row = measure.case_row(case, provider)
    row.update(status=status, gpu="Fake GPU 80GB", torch="2.11", triton="3.6", cuda="12.8", cudnn=91000,
               commit="0123456789abcdef", dirty=False, timestamp="2026-01-01T00:00:00+00:00", interpreter=False)
    if status == "ok":
        row.update(median_ms=ms, p20_ms=ms * 0.9, p80_ms=ms * 1.1, n_reps=5, peak_mem_bytes=2 ** 20,
                   tokens_per_s=case.tokens / ms * 1e3, tflops=registry.gemm_flops(case) / ms / 1e9)
    return row


def test_results_on_disk(tmp_path):
    case = registry.cases(("fastrnns",), dtypes=("fp16",), modes=("fwd",))[0]
    other = registry.cases(("h_sweep",), dtypes=("fp16",), modes=("fwd",))[0]
    rows = [_row(case, "cudnn", ms=2.0), _row(case, "fusedrnn", ms=1.0),
            _row(case, "fusedrnn-step", "failed: output: max|diff| 1 > tol 0.01"),
            _row(case, "flashrnn", "skipped: FlashRNN is not installed"), _row(other, "fusedrnn", ms=3.0)]
    assert report.speedup(rows) == {(case.key, "cudnn"): 1.0, (case.key, "fusedrnn"): 2.0}

    meta = {"commit": "0123456789abcdef", "dirty": True}
    path = report.results_file(tmp_path / "fake-gpu", meta)
    assert path.name == "0123456789ab-dirty.json"
    report.save_rows(path, rows[:2])
    report.save_rows(path, report.merge(report.load_rows(path), [_row(case, "fusedrnn", ms=0.5)] + rows[2:]))
    back = report.load_rows(path)
    assert len(back) == 5 and json.loads(path.read_text()) == back
    assert [r["median_ms"] for r in back if r["provider"] == "fusedrnn" and r["case"] == case.key] == [0.5]

    notes = report.write_report(path, back)
    text = (path.parent / "summary.md").read_text()
    assert "Fake GPU 80GB" in text and "## fastrnns" in text and "## h_sweep" in text
    assert "0.5 (4.00x)" in text  # the fusedrnn median, with its speedup over cuDNN
    assert "## Failures" in text and "fusedrnn-step" in text and "FlashRNN is not installed (1 case)" in text
    assert any(n.startswith("summary:") for n in notes)
    if importlib.util.find_spec("matplotlib") is not None:
        assert (path.parent / "plots" / "fastrnns.png").exists()
    index = report.write_index(tmp_path).read_text()
    assert "[Fake GPU 80GB](fake-gpu/summary.md)" in index
    assert "fusedrnn" in report.table(back) and report.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_reset_cost_pairs_each_case_with_its_twin_without_resets():
    rl, plain = (registry.Case("lstm", 1024, 64, 512, 512, 1, False, "fp16", "fwd", ("resets",), episode=e)
                 for e in (100, 0))
    rows = [dict(measure.case_row(c, p), status="ok", median_ms=ms)
            for c, p, ms in ((rl, "fusedrnn", 2.1), (plain, "fusedrnn", 2.0), (rl, "cudnn", 40.0), (plain, "cudnn", 3.0))]
    (row, x), = report.reset_cost(rows)
    assert row["provider"] == "fusedrnn" and x == pytest.approx(1.05)
    text = report.summary_markdown(rows, "rows.json", {})
    assert "The cost of the reset flag" in text and "fusedrnn fp16 fwd 1.050" in text
    assert "resets (episodes~100)" in text and "no resets" in text
