"""python -m fusedrnn.autotune: tune the recurrence kernels for a list of shapes on this GPU and keep the result.

    python -m fusedrnn.autotune --preset bench                       # the benchmark shape sets, into the user cache
    python -m fusedrnn.autotune --preset fastrnns --cells lstm --dtypes fp16 bf16
    python -m fusedrnn.autotune --hidden 256 1024 --batch 8 128 --cells gru --modes fwd bwd decode --input-size 80
    python -m fusedrnn.autotune --preset bench --dry-run             # keys and candidate counts; no GPU needed
    python -m fusedrnn.autotune --preset bench --time-budget 540 --output autotune/tables/nvidia-h100.json
    python -m fusedrnn.autotune --preset bench --show --output autotune/tables/nvidia-h100.json  # gains so far

Keys already in the destination are skipped (``--retune`` redoes them), and every key is written as soon as it
is tuned, so an interrupted run (or one stopped by ``--time-budget``) continues where it stopped when the same
command runs again. The destination is the user cache (``FUSEDRNN_CACHE_DIR`` or the user cache directory) or
``--output`` (e.g. a table to ship in ``autotune/tables/``). Exit status: 0 done, 1 some keys failed, 2 no GPU
(without --dry-run) or bad arguments, 3 stopped by the time budget with keys left.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from . import presets, runtime
from .keys import Key, batch_bucket, triton_version
from .spaces import KNOWN_GPUS, KernelConfig, candidates, device_limits, known_limits


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fusedrnn.autotune", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to tune (presets and explicit shapes add up)")
    what.add_argument("--preset", nargs="+", default=[], metavar="NAME",
                      help=f"shape presets: bench (every benchmark shape set), {', '.join(presets.PRESETS)}")
    what.add_argument("--hidden", nargs="+", type=int, default=[], metavar="H", help="hidden sizes")
    what.add_argument("--batch", nargs="+", type=int, default=[64], metavar="B", help="batch sizes (bucketed)")
    what.add_argument("--input-size", type=int, default=0, metavar="I", help="input size of --modes decode (default H)")
    what.add_argument("--modes", nargs="+", default=["fwd", "bwd"], choices=presets.MODES)
    what.add_argument("--cells", nargs="+", choices=presets.CELLS, help="default: all (presets: their own)")
    what.add_argument("--dtypes", nargs="+", metavar="DTYPE",
                      help="fp16 bf16 fp32 tf32 fp64 (default: fp16 bf16 fp32; presets: their own)")
    how = p.add_argument_group("how")
    how.add_argument("--dry-run", action="store_true", help="list keys and candidate counts after pruning; no GPU")
    how.add_argument("--show", action="store_true", help="print the tuned entries (and gains) the destination "
                                                         "holds for these keys; no GPU")
    how.add_argument("--gpu", default=None, help=f"GPU to prune for in --dry-run without a GPU "
                                                 f"({', '.join(KNOWN_GPUS)}; default H100)")
    how.add_argument("--output", type=Path, help="write here instead of the user cache (e.g. a table to ship)")
    how.add_argument("--retune", action="store_true", help="tune keys already in the destination again")
    how.add_argument("--strategy", choices=["coordinate", "exhaustive"], default="coordinate")
    how.add_argument("--passes", type=int, default=1, help="rounds of the coordinate search (default 1)")
    how.add_argument("--timer", choices=["cudagraph", "do_bench"], default="cudagraph")
    how.add_argument("--rep-ms", type=float, default=3, help="ms of timed runs per measurement (default 3)")
    how.add_argument("--steps", type=int, default=8, help="timesteps per representative launch (default 8)")
    how.add_argument("--jobs", type=int, default=max(0, min(15, (os.cpu_count() or 1) - 1)),
                     help="worker processes compiling ahead (0: none; default cpus-1, at most 15)")
    how.add_argument("--time-budget", type=float, default=0, metavar="SECONDS",
                     help="start no new key after this long (0: no limit); re-run to continue")
    how.add_argument("--report", type=Path, help="also write the results of this run as JSON here")
    return p


def _problems(a) -> list:
    cells = tuple(a.cells) if a.cells else None
    dtypes = tuple(presets.dtype_name(d) for d in a.dtypes) if a.dtypes else None
    out = presets.expand(a.preset, cells, dtypes) if a.preset else []
    seen = set(out)
    for dtype in (dtypes or presets.DTYPES):
        for cell in (cells or presets.CELLS):
            for H in a.hidden:
                for B in a.batch:
                    for prob in presets.problems_of(cell, dtype, H, B, a.modes, a.input_size):
                        if prob not in seen:
                            seen.add(prob)
                            out.append(prob)
    return out


def key_of(problem, gpu: str) -> Key:
    return Key(gpu, triton_version(), problem.kernel, problem.cell, problem.dtype, problem.H, problem.K, problem.I,
               batch_bucket(problem.B))


class Progress:
    """A progress bar on stderr (one line per key when stderr is not a terminal)."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.stream = total, 0, stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self.current = ""
        self.trials = 0

    def _bar(self) -> str:
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} keys "
                f"{elapsed:5.0f}s elapsed" + (f", ~{eta:.0f}s left" if self.done else ""))

    def start(self, label: str) -> None:
        self.current, self.trials = label, 0
        if self.tty:
            self._draw()

    def trial(self, _trial) -> None:
        self.trials += 1
        if self.tty:
            self._draw()

    def _draw(self) -> None:
        line = f"{self._bar()}  {self.current} ({self.trials} tried)"
        self.stream.write("\r" + line[:160].ljust(160))
        self.stream.flush()

    def finish(self, message: str) -> None:
        self.done += 1
        if self.tty:
            self.stream.write("\r" + " " * 160 + "\r")
        self.stream.write(f"{self._bar()}  {message}\n")
        self.stream.flush()


def _dry_run(problems, a) -> int:
    import torch

    if torch.cuda.is_available() and a.gpu is None:
        limits = device_limits(torch.device("cuda", torch.cuda.current_device()))
    else:
        limits = known_limits(a.gpu or "H100")
        if limits is None:
            print(f"fusedrnn.autotune: unknown --gpu {a.gpu!r}; known: {', '.join(KNOWN_GPUS)}", file=sys.stderr)
            return 2
    dest = a.output or runtime.store().user_file
    print(f"GPU {limits.name} (smem {limits.smem_per_block // 1024} KB/block, {limits.regs_per_sm} regs/SM, "
          f"{limits.regs_per_thread} regs/thread) | triton {triton_version()} | destination {dest}")
    width = max(len(str(key_of(p, limits.name))) for p in problems)
    print(f"{'key':{width}} {'cands':>5} {'shape':>5} {'res':>5} {'kept':>5}   (pruned by shape rules, by resources)")
    totals = [0, 0, 0, 0]
    for prob in problems:
        pr = candidates(prob, limits)
        row = (pr.total, len(pr.by_shape), len(pr.by_resources), len(pr.survivors))
        totals = [t + r for t, r in zip(totals, row)]
        print(f"{str(key_of(prob, limits.name)):{width}} {row[0]:>5} {row[1]:>5} {row[2]:>5} {row[3]:>5}")
    print(f"{len(problems)} keys; candidates {totals[0]}, pruned by shape rules {totals[1]}, by resources "
          f"{totals[2]}, kept {totals[3]} (strategy {a.strategy}: "
          f"{'every kept one is timed' if a.strategy == 'exhaustive' else 'about 20-40 timed per key'})")
    return 0


def _summary(rows, failed=(), stream=None) -> None:
    """Table of tuned entries (``dict(key=..., **entry)``) and the geometric-mean gain over the heuristic."""
    stream = stream or sys.stdout
    if rows:
        print(f"\n{'kernel':8} {'cell':8} {'dtype':12} {'H':>5} {'K':>5} {'I':>4} {'B':>4} {'heuristic':>10} "
              f"{'tuned':>9} {'gain':>6}  config", file=stream)
        for r in rows:
            k = Key.parse(r["key"])
            cfg = KernelConfig.from_dict(r["config"])
            print(f"{k.kernel:8} {k.cell:8} {k.dtype:12} {k.H:>5} {k.K:>5} {k.I:>4} {k.B:>4} "
                  f"{r['heuristic_us']:8.2f}us {r['us']:7.2f}us {r['gain']:5.2f}x  {cfg.short()}", file=stream)
        groups = {}
        for r in rows:
            groups.setdefault(Key.parse(r["key"]).kernel, []).append(r["gain"])
        groups["all"] = [r["gain"] for r in rows]
        for name, gains in groups.items():
            geo = math.exp(sum(math.log(g) for g in gains) / len(gains))
            print(f"{name}: gain over the heuristic, geometric mean {geo:.3f}x, max {max(gains):.2f}x over "
                  f"{len(gains)} keys", file=stream)
    for key, err in failed:
        print(f"FAILED {key}: {err}", file=stream)


def _show(problems, a) -> int:
    """Print what the destination holds for these problems (any GPU), without tuning."""
    from .cache import read_entries

    dest = a.output or runtime.store().user_file
    entries = read_entries(dest)
    wanted = {(p.kernel, p.cell, p.dtype, p.H, p.K, p.I, batch_bucket(p.B)) for p in problems}
    rows = []
    for key, e in entries.items():
        k = Key.parse(key)
        if (k.kernel, k.cell, k.dtype, k.H, k.K, k.I, k.B) in wanted and "gain" in e:
            rows.append(dict(key=key, **e))
    print(f"{dest}: {len(rows)} tuned entries for the {len(problems)} keys asked for")
    _summary(rows)
    return 0


def _write_report(path: Path, head: dict, rows: list, failed: list) -> None:
    """Write (or merge into) a JSON report: one row per key, the latest run's row winning."""
    old = {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    merged = {r["key"]: r for r in (old.get("results", []) if isinstance(old, dict) else [])}
    merged.update({r["key"]: r for r in rows})
    tuned = set(merged)
    previous_failures = [f for f in (old.get("failed", []) if isinstance(old, dict) else [])
                         if f.get("key") not in tuned]
    failures = previous_failures + [dict(key=k, error=e) for k, e in failed]
    gains = [r["gain"] for r in merged.values()]
    geo = math.exp(sum(math.log(g) for g in gains) / len(gains)) if gains else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(head, keys=len(merged), geomean_gain=geo, results=list(merged.values()),
                                    failed=failures), indent=1) + "\n")


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    try:
        problems = _problems(a)
    except ValueError as e:
        print(f"fusedrnn.autotune: {e}", file=sys.stderr)
        return 2
    if not problems:
        print("fusedrnn.autotune: nothing to tune: give --preset or --hidden (see --help)", file=sys.stderr)
        return 2
    if a.dry_run:
        return _dry_run(problems, a)
    if a.show:
        return _show(problems, a)

    import torch

    from fusedrnn.settings import interpreting

    if not torch.cuda.is_available() or interpreting():
        why = "TRITON_INTERPRET is set" if torch.cuda.is_available() else "no CUDA GPU is available"
        print(f"fusedrnn.autotune: cannot tune: {why}. Tuning times compiled kernels on a GPU; on this machine "
              f"use --dry-run to list the keys and candidate counts.", file=sys.stderr)
        return 2
    return _tune(problems, a)


def _tune(problems, a) -> int:
    import torch

    from .precompile import Precompiler
    from .tuner import first_configs, tune

    device = torch.device("cuda", torch.cuda.current_device())
    gpu = torch.cuda.get_device_name(device)
    limits = device_limits(device)
    dest = a.output or runtime.store().user_file
    existing = runtime.store().user_entries() if a.output is None else _read_dest(dest)
    todo = [p for p in problems if a.retune or str(key_of(p, gpu)) not in existing]
    print(f"fusedrnn.autotune: {gpu}, triton {triton_version()}, torch {torch.__version__}: {len(todo)} keys to tune "
          f"({len(problems) - len(todo)} already in {dest}); strategy {a.strategy}, timer {a.timer}, "
          f"{a.jobs} compile workers", flush=True)
    if not todo:
        return 0
    pre = None
    if a.jobs > 0:
        try:
            pre = Precompiler(a.jobs, device)
            for p in todo:
                pre.prefetch(p, first_configs(p, limits))
        except Exception as e:  # noqa: BLE001 - compiling ahead is an optimization only
            print(f"fusedrnn.autotune: no compile workers ({type(e).__name__}: {e})", file=sys.stderr)
            pre = None
    progress = Progress(len(todo))
    results, failed, rows = [], [], []
    t0, status = time.monotonic(), 0
    try:
        for p in todo:
            if a.time_budget and time.monotonic() - t0 > a.time_budget:
                left = len(todo) - len(results) - len(failed)
                print(f"fusedrnn.autotune: time budget of {a.time_budget:.0f}s spent; {left} keys left: run the same "
                      f"command again to continue", flush=True)
                status = 3
                break
            key = str(key_of(p, gpu))
            progress.start(f"{p.kernel} {p.cell} {p.dtype} H={p.H} I={p.I} B<={p.B}")
            try:
                r = tune(p, device, strategy=a.strategy, passes=a.passes, timer=a.timer, rep_ms=a.rep_ms,
                         steps=a.steps, limits=limits, precompiler=pre, progress=progress.trial)
            except Exception as e:  # noqa: BLE001 - one key must not stop the others...
                from .tuner import _is_fatal

                failed.append((key, f"{type(e).__name__}: {e}"[:300]))
                progress.finish(f"FAILED {key}: {type(e).__name__}")
                if _is_fatal(e):  # ...unless the CUDA context is gone
                    print("fusedrnn.autotune: the CUDA context is unusable; stopping (re-run to continue)",
                          file=sys.stderr)
                    break
                continue
            e = r.entry()
            runtime.record({key: e}, path=dest)
            results.append(r)
            rows.append(dict(key=key, **e))
            progress.finish(r.summary())
    finally:
        if pre is not None:
            pre.close()
    _summary(rows, failed)
    if a.report:
        _write_report(a.report, dict(gpu=gpu, triton=triton_version(), torch=torch.__version__,
                                     destination=str(dest)), rows, failed)
    print(f"fusedrnn.autotune: {len(results)} keys written to {dest}", flush=True)
    if failed:
        return 1
    return status


def _read_dest(path: Path) -> dict:
    from .cache import read_entries

    return read_entries(path)
