"""Tuning: time the pruned candidates of a problem on the current GPU and keep the fastest valid one.

Per problem (one key):
 1. Candidates of every variant, pruned by the resource model of ``spaces`` (nothing compiled yet). The heuristic
    configuration is always a candidate: it is the baseline.
 2. The heuristic runs first, through the real launcher (``harness``): its outputs are the reference.
 3. Each candidate runs once (compiling it), and its outputs must match the reference within the dtype's
    tolerance; one that fails to compile or launch, or disagrees, is dropped with the reason.
 4. The kernel launches it made are replayed and timed: ``triton.testing.do_bench_cudagraph`` (GPU time of the
    kernels, without Python launch overhead, weights warm in L2 as in a real recurrence) by default, or
    ``triton.testing.do_bench``.
 5. Search: "exhaustive" times every survivor; "coordinate" (default) starts at the heuristic and sweeps one
    group of parameters at a time (batch x hidden tile, then K tile x stages, then warps), keeping the best,
    for ``passes`` rounds (default 1; more while the best still moves): 20-40 timings, not hundreds.
 6. The winner and the heuristic are timed again, interleaved, and the gain is heuristic time / best time. A
    winner that is not faster in that final measurement is replaced by the heuristic (gain 1.0).

A tool, above the launcher: nothing in the library imports it. Importing it registers ``tune_on_first_use`` as the
runtime's hook for the policy "tune-on-first-use" (``runtime.set_first_use_tuner``; ``runtime``'s module doc says
why the library holds a hook and how a process that never imported this module finds it).
"""

from __future__ import annotations

import datetime
import inspect
import statistics
import time
from dataclasses import dataclass, field

from . import runtime
from .spaces import Problem, KernelConfig, candidates, device_limits

GROUPS = (("BLOCK_B", "BLOCK_H"), ("BLOCK_K", "num_stages"), ("num_warps",))
PARAMS = ("BLOCK_B", "BLOCK_H", "BLOCK_K", "num_warps", "num_stages")
#: max |candidate - reference| <= atol + rtol * max |reference|, per output tensor, by problem dtype.
TOLERANCE = {"float16": (1e-3, 2e-2), "bfloat16": (1e-2, 6e-2), "float32": (1e-5, 1e-4),
             "float32-tf32": (1e-3, 2e-2), "float64": (1e-12, 1e-9)}
#: Settings of a tuning started by the first use of a key (runtime policy "tune-on-first-use").
FIRST_USE_SETTINGS = dict(strategy="coordinate", passes=1, rep_ms=2)


@dataclass
class Trial:
    config: KernelConfig
    ms: float | None = None  # per replay of the recorded launches
    error: str | None = None  # why it was dropped
    reason: str | None = None  # the kind of error: "wrong result", or the exception's type


@dataclass
class TuneResult:
    problem: Problem
    config: KernelConfig
    heuristic: KernelConfig
    us: float  # per step, best
    heuristic_us: float  # per step, heuristic
    steps: int
    candidates: int  # before pruning
    survivors: int
    timed: int
    dropped: dict = field(default_factory=dict)  # reason -> count
    timer: str = ""
    seconds: float = 0.0

    @property
    def gain(self) -> float:
        return self.heuristic_us / self.us if self.us > 0 else 1.0

    def entry(self) -> dict:
        """The cache entry of this result."""
        import torch
        import triton

        try:
            from fusedrnn import __version__ as fr_version
        except ImportError:  # pragma: no cover
            fr_version = "unknown"
        return dict(config=self.config.to_dict(), us=round(self.us, 4), heuristic_us=round(self.heuristic_us, 4),
                    gain=round(self.gain, 4), heuristic=self.heuristic.to_dict(), steps=self.steps,
                    batch=self.problem.B, candidates=self.candidates, survivors=self.survivors, timed=self.timed,
                    dropped=self.dropped, timer=self.timer, seconds=round(self.seconds, 1),
                    triton=triton.__version__, torch=torch.__version__, fusedrnn=fr_version,
                    date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def summary(self) -> str:
        p = self.problem
        return (f"{p.kernel} {p.cell} {p.dtype} H={p.H} K={p.K} I={p.I} B<={p.B}: {self.config.short()} "
                f"{self.us:.2f} us/step vs heuristic {self.heuristic.short()} {self.heuristic_us:.2f} us/step, "
                f"gain {self.gain:.2f}x ({self.timed} timed of {self.survivors} after pruning, "
                f"{self.candidates} candidates)")


# ---- timing ------------------------------------------------------------------------------------------------


class Timer:
    """ms per call of a function: "cudagraph" (do_bench_cudagraph; falls back to "do_bench" for good if a
    capture fails) or "do_bench". A callable (fn -> ms) can stand in for it (tests)."""

    def __init__(self, kind: str = "cudagraph", rep_ms: float = 3):
        if kind not in ("cudagraph", "do_bench"):
            raise ValueError(f"timer must be 'cudagraph' or 'do_bench', got {kind!r}")
        self.kind, self.rep_ms = kind, rep_ms

    def __call__(self, fn) -> float:
        import triton.testing

        if self.kind == "cudagraph":
            try:
                return _median(triton.testing.do_bench_cudagraph, fn, rep=self.rep_ms)
            except Exception as e:  # noqa: BLE001 - e.g. capture unsupported: fall back, consistently
                import torch

                torch.cuda.synchronize()
                print(f"fusedrnn.autotune: CUDA graph timing failed ({type(e).__name__}: {e}); timing with "
                      f"do_bench from now on", flush=True)
                self.kind = "do_bench"
        return _median(triton.testing.do_bench, fn, warmup=max(1, self.rep_ms // 2), rep=self.rep_ms)


def _median(bench, fn, **kwargs) -> float:
    """Median ms of ``bench(fn)``: with ``return_mode`` where the Triton version has it, else its quantiles."""
    if "return_mode" in inspect.signature(bench).parameters:
        return float(bench(fn, return_mode="median", **kwargs))
    out = bench(fn, quantiles=[0.5], **kwargs)
    return float(out[0] if isinstance(out, (list, tuple)) else out)


# ---- validation --------------------------------------------------------------------------------------------


def mismatch(problem: Problem, ref, out) -> str | None:
    """Why ``out`` (launcher outputs) disagrees with ``ref``; None when every tensor matches."""
    import torch

    atol, rtol = TOLERANCE[problem.dtype]
    for i, (r, o) in enumerate(zip(ref, out)):
        if not isinstance(r, torch.Tensor) or r.numel() == 0:
            continue
        if r.shape != o.shape:
            return f"output {i}: shape {tuple(o.shape)} != {tuple(r.shape)}"
        if not r.is_floating_point():
            continue
        r64, o64 = r.detach().double(), o.detach().double()
        if not torch.isfinite(o64).all():
            return f"output {i}: non-finite values"
        bound = atol + rtol * r64.abs().max().item()
        err = (o64 - r64).abs().max().item()
        if err > bound:
            return f"output {i}: max abs error {err:.3g} > {bound:.3g}"
    return None


def _error_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:200]


# ---- search ------------------------------------------------------------------------------------------------


def _distance(a: KernelConfig, b: KernelConfig, params) -> tuple:
    differing = sum(getattr(a, n) != getattr(b, n) for n in params)
    log_gap = sum(abs(getattr(a, n).bit_length() - getattr(b, n).bit_length()) for n in params)
    return differing, log_gap


def neighbours(best: KernelConfig, pool: list, group: tuple) -> list:
    """For every combination of the ``group`` parameters present in ``pool`` (same variant as ``best``), the
    member of ``pool`` closest to ``best`` in the other parameters."""
    others = [n for n in PARAMS if n not in group]
    chosen: dict = {}
    for c in pool:
        if c.variant != best.variant:
            continue
        combo = tuple(getattr(c, n) for n in group)
        d = _distance(c, best, others)
        if combo not in chosen or d < chosen[combo][0]:
            chosen[combo] = (d, c)
    return [c for _, c in chosen.values()]


class _Session:
    """The trials of one problem: each configuration run, validated and timed at most once."""

    def __init__(self, problem, device, harness, timer, precompiler, progress):
        self.problem, self.device, self.harness = problem, device, harness
        self.timer, self.precompiler, self.progress = timer, precompiler, progress
        self.trials: dict = {}
        self.reference = None

    def start(self, heuristic: KernelConfig) -> Trial:
        import torch

        out, launches = self.harness.run(heuristic)
        for i, t in enumerate(out):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
                raise RuntimeError(f"the heuristic configuration's own output {i} is not finite: no reference")
        self.reference = out
        trial = Trial(heuristic, ms=self.timer(self.harness.replay_fn(launches)))
        self.trials[heuristic] = trial
        return trial

    def evaluate(self, cfg: KernelConfig) -> Trial:
        trial = self.trials.get(cfg)
        if trial is not None:
            return trial
        trial = Trial(cfg)
        self.trials[cfg] = trial
        if self.precompiler is not None:
            self.precompiler.wait(self.problem, cfg)
        try:
            out, launches = self.harness.run(cfg)
            why = mismatch(self.problem, self.reference, out)
            if why is None:
                trial.ms = self.timer(self.harness.replay_fn(launches))
            else:
                trial.error, trial.reason = f"wrong result: {why}", "wrong result"
        except Exception as e:  # noqa: BLE001 - a candidate that cannot compile or launch is dropped
            if _is_fatal(e):
                raise
            trial.error, trial.reason = _error_line(e), type(e).__name__
        if self.progress is not None:
            self.progress(trial)
        return trial

    def best(self, variant: str | None = None) -> Trial | None:
        timed = [t for t in self.trials.values() if t.ms is not None and variant in (None, t.config.variant)]
        return min(timed, key=lambda t: t.ms) if timed else None


def _is_fatal(e: BaseException) -> bool:
    """CUDA errors that leave the context unusable (illegal address, ECC...): no later timing can be trusted."""
    text = str(e)
    return any(s in text for s in ("illegal memory access", "unspecified launch failure", "CUDA error: an illegal",
                                   "misaligned address", "device-side assert"))


def tune(problem: Problem, device=None, *, strategy: str = "coordinate", passes: int = 1, timer=None,
         rep_ms: float = 3, steps: int = 8, limits=None, precompiler=None, progress=None,
         space: list | None = None, baseline: KernelConfig | None = None) -> TuneResult:
    """Find the fastest valid configuration of ``problem`` on ``device`` (default: the current CUDA device).

    Args:
        strategy: "coordinate" or "exhaustive" (see the module doc). passes: rounds of the coordinate search.
        timer: "cudagraph" (default), "do_bench", or a callable fn -> ms. rep_ms: timing budget per measurement.
        steps: timesteps of the representative launch (the forward of a fused-input problem runs one).
        limits: GpuLimits to prune against (default: the device's). precompiler: a ``Precompiler`` warming the
        Triton cache in other processes. progress: called with each Trial. space: candidate configs to use
        instead of the variants' spaces (still pruned). baseline: the reference configuration (default: the
        heuristic for the device; it runs even if the resource model would prune it: it is what runs untuned).
    """
    import torch

    from .harness import Harness
    from .spaces import prune

    t0 = time.monotonic()
    device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    limits = limits if limits is not None else device_limits(device)
    pruned = prune(problem, space, limits) if space is not None else candidates(problem, limits)
    heuristic = baseline if baseline is not None else problem.heuristic(device.type)
    pool = list(pruned.survivors)
    if heuristic not in pool:
        pool.append(heuristic)
    if not callable(timer):
        timer = Timer(timer or "cudagraph", rep_ms)
    harness = Harness(problem, device, steps=steps)
    session = _Session(problem, device, harness, timer, precompiler, progress)
    base = session.start(heuristic)

    if strategy == "exhaustive":
        if precompiler is not None:
            precompiler.prefetch(problem, pool, urgent=True)
        for cfg in pool:
            session.evaluate(cfg)
    elif strategy == "coordinate":
        for variant in sorted({c.variant for c in pool}, key=lambda v: v != heuristic.variant):
            members = [c for c in pool if c.variant == variant]
            best = heuristic if variant == heuristic.variant else min(
                members, key=lambda c: _distance(c, heuristic, PARAMS))
            session.evaluate(best)
            for _ in range(max(1, passes)):
                before = best
                for group in GROUPS:
                    sweep = neighbours(best, members, group)
                    if precompiler is not None:
                        precompiler.prefetch(problem, sweep, urgent=True)
                    for cfg in sweep:
                        session.evaluate(cfg)
                    found = session.best(variant)
                    if found is None:  # nothing of this variant runs here
                        break
                    best = found.config
                if best == before:
                    break
    else:
        raise ValueError(f"strategy must be 'coordinate' or 'exhaustive', got {strategy!r}")

    winner = session.best()
    best_ms, heur_ms = winner.ms, base.ms
    if winner.config != heuristic:
        # Re-time both, interleaved: the minimum over many noisy timings favours the lucky one.
        _, win_launches = harness.run(winner.config)
        _, heur_launches = harness.run(heuristic)
        w, h = [], []
        for _ in range(3):
            w.append(timer(harness.replay_fn(win_launches)))
            h.append(timer(harness.replay_fn(heur_launches)))
        best_ms, heur_ms = statistics.median(w), statistics.median(h)
        if best_ms >= heur_ms:
            winner, best_ms = base, heur_ms
    dropped: dict = {}
    for t in session.trials.values():
        if t.reason:
            dropped[t.reason] = dropped.get(t.reason, 0) + 1
    timer_name = getattr(timer, "kind", "custom")
    return TuneResult(problem=problem, config=winner.config, heuristic=heuristic, us=1e3 * best_ms / harness.T,
                      heuristic_us=1e3 * heur_ms / harness.T, steps=harness.T, candidates=pruned.total,
                      survivors=len(pruned.survivors), timed=sum(t.ms is not None for t in session.trials.values()),
                      dropped=dropped, timer=timer_name, seconds=time.monotonic() - t0)


def first_configs(problem: Problem, limits, device_type: str = "cuda") -> list:
    """What a coordinate search certainly runs first (the heuristic and the first group's sweep): worth
    compiling ahead in other processes."""
    pruned = candidates(problem, limits)
    heuristic = problem.heuristic(device_type)
    pool = list(pruned.survivors) + ([heuristic] if heuristic not in pruned.survivors else [])
    return [heuristic] + [c for c in neighbours(heuristic, pool, GROUPS[0]) if c != heuristic]


def tune_on_first_use(problem: Problem, device) -> tuple:
    """(config, cache entry, summary) of ``problem`` tuned with ``FIRST_USE_SETTINGS``: the runtime's hook for the
    policy "tune-on-first-use" (``runtime.set_first_use_tuner``; also the entry point ``fusedrnn.autotune:first_use``
    that a process which never imported this module loads)."""
    result = tune(problem, device, **FIRST_USE_SETTINGS)
    return result.config, result.entry(), result.summary()


# The tool registers itself with the library (the library never imports the tool: see runtime's module doc).
runtime.set_first_use_tuner(tune_on_first_use)
