"""fusedrnn benchmark suite: fusedrnn against cuDNN and peers. Run from the repository root.

    python -m bench                          # the full suite; on a GPU writes bench/results/<gpu>/
    python -m bench --smoke                  # one tiny case end to end (no GPU: Triton interpreter)
    python -m bench --sets fastrnns,persistent --dtypes fp16 --modes fwd --providers fusedrnn,cudnn
    python -m bench --dry-run --device cuda  # list every case x provider a GPU run would do, and the count
    python -m bench --max-minutes 9 --resume # a time-boxed slice; --resume continues where the last one stopped
    python -m bench --report-only bench/results/<gpu>/<commit>.json   # summary.md and plots again
    python -m bench --list                   # shape sets and providers

Order of work: fusedrnn and cuDNN over every case first, then the peers, so a run cut short still has the
comparison that matters. Rows are saved after every case. Without a GPU only --smoke, or a part of the suite
named with --sets, runs: under the Triton interpreter, whose timings mean nothing, and into a temp folder
(never bench/results unless --out says so).

Exit status: 0 done; 1 a --smoke row failed, or bad arguments; 2 --max-minutes ran out (or the run was
stopped) with work left: run again with --resume; 3 the CUDA context broke: run again with --resume (the row
that broke it is recorded and skipped).
"""

import os
import sys

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA and "TRITON_INTERPRET" not in os.environ:
    # Before triton is first imported (it reads this when it jits; importing torch does not import triton):
    # without a GPU the Triton kernels run on CPU tensors under the interpreter.
    if "triton" in sys.modules:
        sys.exit("bench: triton was imported before TRITON_INTERPRET could be set; run `python -m bench`")
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from fusedrnn.cells import CELLS  # noqa: E402

from . import measure, registry, report  # noqa: E402
from .providers import PROVIDERS, Env, select  # noqa: E402

INTERPRETER_NOTE = ("NOTE: no GPU here. Triton kernels run under the Triton interpreter (Python on the CPU): "
                    "their results are checked for real, their TIMINGS MEAN NOTHING.")


def _csv(choices):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in items if choices is not None and t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(choices)}")
        return items
    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--smoke", action="store_true", help="one tiny LSTM case, all modes; writes to a temp folder")
    p.add_argument("--sets", type=_csv(registry.SETS), help=f"shape sets (default all): {', '.join(registry.SETS)}")
    p.add_argument("--cells", type=_csv(CELLS), help="keep only these cells")
    p.add_argument("--dtypes", type=_csv(registry.DTYPES), help="replace each set's dtypes (fp32 tf32 fp16 bf16)")
    p.add_argument("--modes", type=_csv(registry.MODES), help="replace each set's modes (fwd fwdbwd decode)")
    p.add_argument("--providers", type=_csv(PROVIDERS), help=f"exact names: {', '.join(PROVIDERS)} "
                   "(default: fusedrnn and cudnn everywhere, peers where the set asks for them)")
    p.add_argument("--peers", action="store_true", help="run the peer providers on every set")
    p.add_argument("--out", type=Path, help="output folder (default: bench/results/<gpu> on a GPU, else a temp folder)")
    p.add_argument("--resume", action="store_true", help="skip (case, provider) rows already in the output file")
    p.add_argument("--max-minutes", type=float, help="start no new case after this many minutes")
    p.add_argument("--budget-ms", type=float, default=250.0, help="timed calls per measurement take about this long")
    p.add_argument("--min-reps", type=int, default=3, help="timed calls at least (slow cases)")
    p.add_argument("--max-reps", type=int, default=100, help="timed calls at most (fast cases)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--commit", help="record this git commit (for a copied work tree without .git)")
    p.add_argument("--dry-run", action="store_true", help="list the plan (case x provider, run or skip) and stop")
    p.add_argument("--device", choices=["cuda", "cpu"], help="with --dry-run: plan for this device (cuda simulated)")
    p.add_argument("--report-only", type=Path, metavar="ROWS_JSON", help="rewrite summary.md and plots from rows")
    p.add_argument("--list", action="store_true", help="list shape sets and providers")
    return p.parse_args(argv)


def plan(args, env: Env) -> list[tuple[registry.Case, list]]:
    """[(case, providers)] in run order: core providers over every case, then the peers."""
    sets = ("smoke",) if args.smoke else (args.sets or tuple(registry.SETS))
    cases = registry.cases(sets, args.dtypes, args.modes, args.cells)
    core, rest = [], []
    for case in cases:
        if args.providers:
            chosen = select(args.providers, mode=case.mode)
        elif args.smoke:
            chosen = select(with_peers=False, mode=case.mode) + [PROVIDERS["torch-native"]]
        else:
            with_peers = args.peers or any(registry.ALL_SETS[s].peers for s in case.sets)
            chosen = select(with_peers=with_peers, mode=case.mode)
        core.append((case, [p for p in chosen if p.tier == "core"]))
        rest.append((case, [p for p in chosen if p.tier != "core"]))
    return [(c, ps) for c, ps in core + rest if ps]


class Progress:
    """A one-line bar on a terminal; a line per case in a log."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, n: int, label: str) -> None:
        self.done += n
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        width = 30
        fill = int(width * self.done / max(self.total, 1))
        text = (f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {elapsed:6.0f}s "
                f"eta {eta:5.0f}s {label}")
        if self.tty:
            sys.stderr.write("\r" + text[:150].ljust(150))
            sys.stderr.flush()
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def dry_run(work, env: Env) -> int:
    runs = skips = 0
    for case, providers in work:
        for p in providers:
            reason = p.skip_reason(case, env)
            runs += reason is None
            skips += reason is not None
            print(f"{case.key:<44} {p.name:<14} {'run' if reason is None else 'skip: ' + reason}")
    cases = len({c for c, _ in work})
    where = "a simulated CUDA machine" if env.simulated else env.device
    print(f"\n{cases} cases, {runs + skips} (case, provider) pairs on {where}: {runs} to run, {skips} to skip")
    return 0


def output_folder(args, meta: dict) -> Path:
    if args.out:
        return args.out
    if HAS_CUDA and not args.smoke:
        return report.RESULTS / meta["gpu_slug"]
    # Smoke runs and interpreter runs never land in bench/results, so nobody commits their timings.
    return Path(tempfile.mkdtemp(prefix="fusedrnn-bench-smoke-" if args.smoke else "fusedrnn-bench-"))


def main(argv=None) -> int:
    args = parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress goes to stderr; keep the two in order in a log
    if args.list:
        for s in registry.ALL_SETS.values():
            print(f"set {s.name:<12} {len(s.shapes):>2} shapes | dtypes {','.join(s.dtypes)} | modes "
                  f"{','.join(s.modes)} | peers {'yes' if s.peers else 'no'} | {s.description}")
        for p in PROVIDERS.values():
            print(f"provider {p.name:<14} {p.tier:<5} {p.description}")
        return 0
    if args.report_only:
        rows = report.load_rows(args.report_only)
        print(report.table(rows))
        for note in report.write_report(args.report_only, rows):
            print(note)
        if args.report_only.resolve().is_relative_to(report.RESULTS.resolve()):
            print(f"index: {report.write_index()}")
        return 0

    env = Env.simulated_cuda() if args.dry_run and args.device == "cuda" and not HAS_CUDA else Env.detect()
    work = plan(args, env)
    if args.dry_run:
        return dry_run(work, env)
    if not HAS_CUDA and not args.smoke and not args.sets:
        print("bench: no GPU here. The whole suite under the Triton interpreter would take days: run --smoke, "
              "or name --sets (and --dtypes, --modes, --providers) to run a part of it anyway.", file=sys.stderr)
        return 1

    meta = report.environment(env.device, env.interpreting)
    if args.commit:
        meta.update(commit=args.commit, dirty=None if meta["commit"] != args.commit else meta["dirty"])
    elif meta["commit"] is None:
        print("WARNING: no git checkout here, so the rows record no commit; pass --commit <sha>", file=sys.stderr)
    out = output_folder(args, meta)
    path = report.results_file(out, meta)
    old = report.load_rows(path)
    done = {(r["case"], r["provider"]) for r in old} if args.resume else set()
    work = [(c, [p for p in ps if (c.key, p.name) not in done]) for c, ps in work]
    work = [(c, ps) for c, ps in work if ps]
    device = "cuda" if HAS_CUDA else "cpu"
    print(f"fusedrnn bench | {meta['gpu']} | torch {meta['torch']} | triton {meta['triton']} | CUDA {meta['cuda']} "
          f"| commit {(meta['commit'] or '?')[:12]}{' (dirty)' if meta['dirty'] else ''}")
    if env.interpreting:
        print(INTERPRETER_NOTE)
        if Path(out).resolve().is_relative_to(report.RESULTS.resolve()):
            print("WARNING: interpreter timings are going into bench/results: do not commit them", file=sys.stderr)
    print(f"{len({c for c, _ in work})} cases, {sum(len(ps) for _, ps in work)} (case, provider) rows -> {path}"
          + (f" ({len(done)} already there, skipped by --resume)" if done else ""))

    timing = dict(budget_s=args.budget_ms / 1e3, min_reps=args.min_reps, max_reps=args.max_reps)
    if args.smoke:
        timing = dict(budget_s=0.0, min_reps=2, max_reps=2)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))  # `timeout` sends SIGTERM: still write the report
    new, status, start = [], 0, time.perf_counter()
    bar = Progress(sum(len(ps) for _, ps in work))
    try:
        for i, (case, providers) in enumerate(work):
            if args.max_minutes is not None and time.perf_counter() - start > args.max_minutes * 60:
                left = sum(len(ps) for _, ps in work[i:])
                print(f"\n--max-minutes {args.max_minutes:g} reached: {left} (case, provider) rows left; "
                      f"run again with --resume", file=sys.stderr)
                status = 2
                break
            stamp = {**meta, "timestamp": report.now()}
            try:
                for row in measure.measure_case(case, providers, env, device, timing, args.seed):
                    new.append({**row, **stamp})
                    bar.update(1, f"{case.key} {row['provider']}: {row['status'][:40]}")
            except measure.CudaBroken as e:
                new += [{**row, **stamp} for row in e.rows]
                print(f"\nCUDA context lost ({e}); rows so far are saved; run again with --resume", file=sys.stderr)
                status = 3
                break
            finally:
                if new:
                    report.save_rows(path, report.merge(old, new))
    except (KeyboardInterrupt, SystemExit) as e:
        print(f"\ninterrupted ({type(e).__name__}); rows so far are saved in {path}", file=sys.stderr)
        status = 2
    finally:
        bar.close()
    rows = report.merge(old, new)
    print()
    if rows:
        report.save_rows(path, rows)
        print(report.table(new))
        for note in report.write_report(path, rows):
            print(note)
        if Path(out).resolve().is_relative_to(report.RESULTS.resolve()):
            print(f"index: {report.write_index()}")
    if env.interpreting:
        print(INTERPRETER_NOTE)
    failed = [r for r in new if r["status"].startswith("failed")]
    print(f"{sum(r['status'] == 'ok' for r in new)} ok, {len(failed)} failed, "
          f"{sum(r['status'].startswith('skipped') for r in new)} skipped")
    if args.smoke and failed:
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
