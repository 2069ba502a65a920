"""One case: inputs, the fp32 reference, the correctness check of each provider, then its timing.

Correctness, before any time is taken: the provider's output, h_n and c_n (and, for forward+backward, the
gradients of the input, h0, c0 and every weight) are compared with torch.nn run in fp32, TF32 off, on the same
weights and inputs rounded to the case dtype (for fp32 cases that is torch.nn itself). A tensor passes if
``max|out - ref| <= atol + rtol * max|ref|`` (NaN fails) with the tolerances of ``TOL``; a provider with any
tensor beyond it gets the status "failed: <tensor> ..." and no time.

Timing: the call runs once for the check (under the provider's probe, which records what ran: fusedrnn's
kernel launches, cuDNN's ops and kernels), once more as a warm-up that estimates its time, then ``reps`` times
with CUDA events around each call (an L2-sized buffer is zeroed between calls, outside the events), ``reps``
chosen so the timed calls take about ``budget_s`` (within [min_reps, max_reps]). Reported: median, 20th and
80th percentiles.
Peak memory: ``torch.cuda.max_memory_allocated`` over the timed calls (reset before) minus what was allocated when
they started: what one call needs on top of the resident inputs and weights. On a CPU: wall time, no memory.

Resets (a case with ``episode``): every step of every row starts a new episode with probability 1/episode
(episode lengths geometric with that mean; ``episode_starts``, seeded), never at t=0 (a rollout continues from hx).
The reference is torch.nn on the split segments (``base.run_split``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import registry
from .base import Env, Provider, Runner, Unavailable, run_split, torch_module

TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: (atol, rtol) per case dtype, against max|ref| of each tensor. fp16 and bf16 as the test suite's table
#: (tests/_helpers.py); TF32 keeps 10 mantissa bits like fp16; fp32 is loosened 10x in rtol over the tests'
#: because weight gradients here sum over up to T*B = 262144 rows.
TOL = {"fp32": (1e-5, 1e-4), "tf32": (1e-2, 1e-2), "fp16": (1e-2, 1e-2), "bf16": (6e-2, 4e-2)}
FLUSH_BYTES = 256 * 1024 * 1024


class CudaBroken(RuntimeError):
    """The CUDA context is unusable (e.g. after an illegal memory access): nothing more can run in this process.
    ``rows`` holds the rows (status "failed: ...") of the providers it took down."""

    def __init__(self, message: str, rows: list):
        super().__init__(message)
        self.rows = rows


@contextlib.contextmanager
def precision(dtype: str):
    """TF32 in cuBLAS (torch matmuls, fusedrnn's fp32 dots) and in cuDNN: on for "tf32" cases, off otherwise."""
    from fusedrnn import settings

    with settings.use_tf32(dtype == "tf32", cudnn=True):
        yield


@dataclass
class Problem:
    """Weights, inputs, output gradients and the fp32 reference of one case."""

    case: registry.Case
    device: torch.device
    state_dict: dict  # torch.nn's, in the case dtype
    x: torch.Tensor  # [T, B, I]
    hx: list  # [h0] or [h0, c0], each [L*D, B, H]
    grads_out: list  # gradients of output, h_n (, c_n); empty unless forward+backward
    names: list = field(default_factory=list)  # of the compared tensors, in order
    ref: list = field(default_factory=list)  # fp32 reference tensors, in that order
    reset: torch.Tensor | None = None  # [T, B] bool: where episodes start (cases with ``episode``)

    def call(self, runner: Runner):
        """runner.forward on this problem's input and state (and its resets, where it has them)."""
        if self.reset is None:
            return runner.forward(self.x, self.hx)
        return runner.forward(self.x, self.hx, self.reset)


def episode_starts(T: int, B: int, mean: int, device, seed: int = 0) -> torch.Tensor:
    """[T, B] bool: True where a new episode starts, each step with probability 1/mean (geometric episode lengths
    of that mean), never at t = 0."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(T, B, generator=g) < 1.0 / mean
    starts[0] = False
    return starts.to(device)


def make_problem(case: registry.Case, device, seed: int = 0) -> Problem:
    dtype, train = TORCH_DTYPES[case.dtype], case.mode == "fwdbwd"
    torch.manual_seed(seed)
    base = torch_module(case, torch.float32, "cpu")  # torch.nn's default initialisation, the same on any device
    state_dict = {k: v.to(device=device, dtype=dtype) for k, v in base.state_dict().items()}
    n_states = 2 if case.cell == "lstm" else 1
    state_shape = (case.L * case.D, case.B, case.H)

    def rand(*shape, grad=False):
        return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(grad)
    x = rand(case.T, case.B, case.I, grad=train)
    hx = [rand(*state_shape, grad=train) for _ in range(n_states)]
    grads_out = [rand(case.T, case.B, case.D * case.H)] + [rand(*state_shape) for _ in range(n_states)] if train else []
    p = Problem(case, torch.device(device), state_dict, x, hx, grads_out)
    if case.episode:
        p.reset = episode_starts(case.T, case.B, case.episode, device, seed)
    p.names = ["output", "h_n", "c_n"][:1 + n_states]
    if train:
        p.names += ["grad input", "grad h0", "grad c0"][:1 + n_states] + [f"grad {n}" for n in state_dict]
    return p


def run_once(runner: Runner, p: Problem) -> list:
    """The provider's tensors in ``p.names`` order (gradients mapped to torch.nn's layout)."""
    if p.case.mode != "fwdbwd":
        with torch.no_grad():
            out, states = p.call(runner)
        return [out, *states]
    out, states = p.call(runner)
    grads = torch.autograd.grad([out, *states], [p.x, *p.hx, *runner.params], p.grads_out)
    n = 1 + len(p.hx)
    return [out, *states, *grads[:n], *runner.grads_to_torch(list(grads[n:]))]


def timed_call(runner: Runner, p: Problem):
    """The function that is timed: forward (no grad), or forward and the gradients of everything."""
    if p.case.mode != "fwdbwd":
        def fn():
            with torch.no_grad():
                return p.call(runner)
    else:
        def fn():
            out, states = p.call(runner)
            return torch.autograd.grad([out, *states], [p.x, *p.hx, *runner.params], p.grads_out)
    return fn


def add_reference(p: Problem) -> None:
    """torch.nn in fp32 (TF32 off, cuDNN as the device has it) on the rounded weights and inputs (on the split
    segments where the case has resets)."""
    case, train = p.case, p.case.mode == "fwdbwd"
    module = torch_module(case, torch.float32, p.device)
    module.load_state_dict({k: v.float() for k, v in p.state_dict.items()})
    module.train(train)
    x = p.x.detach().float().requires_grad_(train)
    hx = [h.detach().float().requires_grad_(train) for h in p.hx]
    runner = Runner(lambda x_, hx_, reset=None: _call(module, x_, hx_) if reset is None else
                    run_split(module, x_, hx_, reset), [getattr(module, n) for n in module._flat_weights_names])
    with precision("fp32"):
        q = Problem(case, p.device, p.state_dict, x, hx, [g.float() for g in p.grads_out], p.names, reset=p.reset)
        p.ref = [t.detach() for t in run_once(runner, q)]


def _call(module, x, hx):
    out, h = module(x, tuple(hx) if len(hx) > 1 else hx[0])
    return out, list(h) if isinstance(h, tuple) else [h]


def compare(p: Problem, outs: list) -> tuple[bool, dict]:
    """Check every tensor; returns (passed, the worst tensor's numbers or the first failure's)."""
    atol, rtol = TOL[p.case.dtype]
    if len(outs) != len(p.names):
        return False, {"tensor": "all", "error": f"{len(outs)} tensors, expected {len(p.names)}"}
    worst: dict = {}
    for name, ref, out in zip(p.names, p.ref, outs):
        if tuple(out.shape) != tuple(ref.shape):
            return False, {"tensor": name, "error": f"shape {list(out.shape)}, expected {list(ref.shape)}"}
        err = (out.detach().float() - ref).abs().max().item() if ref.numel() else 0.0
        scale = ref.abs().max().item() if ref.numel() else 0.0
        tol = atol + rtol * scale
        if err != err or scale != scale:  # NaN: fails, and stays valid JSON
            return False, {"tensor": name, "error": "NaN in the result" if err != err else "NaN in the reference"}
        info = {"tensor": name, "max_err": err, "tol": tol, "ratio": err / tol}
        if not err <= tol:
            return False, info
        if not worst or info["ratio"] > worst["ratio"]:
            worst = info
    return True, worst


def time_call(fn, device, budget_s: float = 0.25, min_reps: int = 3, max_reps: int = 100) -> dict:
    """Warm up, then time ``fn``; returns median/p20/p80 in ms, reps and the peak extra memory."""
    cuda = torch.device(device).type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()
    start = time.perf_counter()  # after the checked call: this one is the second, a warm-up and an estimate
    fn()
    sync()
    estimate = time.perf_counter() - start
    reps = int(min(max_reps, max(min_reps, budget_s / max(estimate, 1e-7))))
    peak = None
    if cuda:
        flush = torch.empty(FLUSH_BYTES, dtype=torch.int8, device=device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        sync()
        resident = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for begin, end in events:
            flush.zero_()
            begin.record()
            fn()
            end.record()
        sync()
        times = [b.elapsed_time(e) for b, e in events]
        peak = torch.cuda.max_memory_allocated(device) - resident
        del flush
    else:
        times = []
        for _ in range(reps):
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    median, p20, p80 = np.percentile(times, [50, 20, 80]).tolist()
    return {"median_ms": median, "p20_ms": p20, "p80_ms": p80, "n_reps": reps, "peak_mem_bytes": peak}


def _reason(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def _cuda_alive(device) -> bool:
    if torch.device(device).type != "cuda":
        return True
    try:
        torch.cuda.synchronize()
        return True
    except Exception:  # noqa: BLE001 - any error here means the context is gone
        return False


def case_row(case: registry.Case, provider: str) -> dict:
    """The row's identity and the case's numbers; measure_case adds the status, the check and the times."""
    return {"case": case.key, "provider": provider, "status": None, "cell": case.cell, "sets": list(case.sets),
            "T": case.T, "B": case.B, "I": case.I, "H": case.H, "L": case.L, "bidirectional": case.bidirectional,
            "episode": case.episode, "dtype": case.dtype, "mode": case.mode,
            "gemm_flops": registry.gemm_flops(case)}


def measure_case(case: registry.Case, providers: list[Provider], env: Env, device, timing: dict | None = None,
                 seed: int = 0):
    """Yield one row per provider: "ok" with its time, "failed: <why>" or "skipped: <why>"."""
    timing = timing or {}
    rows = {p.name: case_row(case, p.name) for p in providers}
    todo = []
    for p in providers:
        reason = p.skip_reason(case, env)
        if reason:
            rows[p.name]["status"] = f"skipped: {reason}"
            yield rows[p.name]
        else:
            todo.append(p)
    if not todo:
        return
    try:
        problem = make_problem(case, device, seed)
        add_reference(problem)
    except Exception as e:  # noqa: BLE001 - no reference: nothing can be checked, so nothing is timed
        for p in todo:
            rows[p.name]["status"] = f"failed: no reference ({_reason(e)})"
        if not _cuda_alive(device):
            raise CudaBroken(f"reference of {case.key}: {_reason(e)}", [rows[p.name] for p in todo]) from e
        yield from (rows[p.name] for p in todo)
        return
    for p in todo:
        yield _measure_one(problem, p, rows[p.name], device, timing)
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    del problem


def _measure_one(problem: Problem, p: Provider, row: dict, device, timing: dict) -> dict:
    case = problem.case
    try:
        with precision(case.dtype):
            runner = p.build(case, problem.state_dict, device)
            row["detail"] = dict(runner.detail)
            outs: list = []
            if runner.probe is not None:  # evidence of what ran, taken from the checked call itself
                row["detail"].update(runner.probe(lambda: outs.extend(run_once(runner, problem))))
            else:
                outs = run_once(runner, problem)
            ok, check = compare(problem, outs)
            outs.clear()  # free them before the timed calls
            row["check"] = check
            if not ok:
                what = check.get("error") or f"max|diff| {check['max_err']:.3g} > tol {check['tol']:.3g}"
                row["status"] = f"failed: {check['tensor']}: {what}"
                return row
            row.update(time_call(timed_call(runner, problem), device, **timing))
    except Unavailable as e:
        row["status"] = f"skipped: {e}"
        return row
    except Exception as e:  # noqa: BLE001 - a failing provider is a result, not the end of the run
        row["status"] = f"failed: {_reason(e)}"
        if not _cuda_alive(device):
            raise CudaBroken(f"{p.name} on {case.key}: {_reason(e)}", [row]) from e
        return row
    row["status"] = "ok"
    seconds = max(row["median_ms"] / 1e3, 1e-9)  # CUDA events resolve about 0.5 us
    row["tokens_per_s"] = case.tokens / seconds
    row["tflops"] = row["gemm_flops"] / seconds / 1e12
    return row
