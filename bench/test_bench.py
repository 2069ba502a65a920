"""The benchmark registry under pytest-benchmark: one test per (case, provider).

    pytest bench/                                     # GPU: fastrnns and persistent; no GPU: the smoke case
    FUSEDRNN_BENCH_SETS=h_sweep,b_sweep pytest bench/ --benchmark-json out.json

Each test checks the provider against torch.nn in fp32 first (bench/measure.py; a provider that differs fails
its test and is not timed), then times the same call as `python -m bench` (synchronised on a GPU). A provider
that cannot run here is skipped with the reason. `python -m bench` is the tool that writes bench/results/.
"""

import os

import pytest
import torch

from bench import measure, registry
from bench.providers import Env, select

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
SETS = tuple(os.environ.get("FUSEDRNN_BENCH_SETS", "fastrnns,persistent").split(",")) if HAS_CUDA else ("smoke",)
ROUNDS = 20 if HAS_CUDA else 2
ENV = Env.detect()


def _params():
    for case in registry.cases(SETS):
        with_peers = any(registry.ALL_SETS[s].peers for s in case.sets) or not HAS_CUDA
        for provider in select(with_peers=with_peers, mode=case.mode):
            yield pytest.param(case, provider, id=f"{case.key}|{provider.name}")


_problem: dict = {}  # one case's inputs and reference, kept while its providers run (the tests are case-major)


def _problem_for(case):
    if case not in _problem:
        _problem.clear()
        p = measure.make_problem(case, DEVICE)
        measure.add_reference(p)
        _problem[case] = p
    return _problem[case]


@pytest.mark.parametrize("case,provider", list(_params()))
def test_bench(benchmark, case, provider):
    reason = provider.skip_reason(case, ENV)
    if reason:
        pytest.skip(reason)
    p = _problem_for(case)
    with measure.precision(case.dtype):
        runner = provider.build(case, p.state_dict, DEVICE)
        ok, check = measure.compare(p, measure.run_once(runner, p))
        assert ok, f"{provider.name} differs from torch.nn on {case.key}: {check}"
        fn = measure.timed_call(runner, p)

        def call():
            fn()
            if HAS_CUDA:
                torch.cuda.synchronize()
        benchmark.pedantic(call, warmup_rounds=1, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(case=case.key, provider=provider.name, gemm_flops=registry.gemm_flops(case),
                                tokens=case.tokens, check=check, interpreter=ENV.interpreting)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:  # None under --benchmark-disable
        median = stats.stats.median
        benchmark.extra_info.update(tflops=registry.gemm_flops(case) / median / 1e12,
                                    tokens_per_s=case.tokens / median)
