"""``python -m fusedrnn.demo``: recurrent cells on the classic long-memory tasks.

Trains one small model per (task, sequence length, cell) with fusedrnn's LSTM / GRU / RNN, then prints a table
(accuracy against length, training time, gradient norm reaching the first timestep), each task's verdict derived
from it (which cells pass at which lengths) and a legend, and writes results.json, table.txt (the same text) and
PNG plots (with matplotlib: the demo extra) to --out. ``--plot DIR`` redraws the plots from DIR/results.json
without training. ``python -m fusedrnn.demo --help`` lists the options.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import torch

from .. import dispatch
from .models import CELLS, GATE_INITS
from .report import Progress, format_report, read_json, write_json, write_plots
from .runner import run_all
from .tasks import DEFAULT_TASKS, TASKS
from .train import TrainConfig

#: Settings per preset; options given on the command line win.
PRESETS = {
    # A CPU-only machine, torch's CPU path: under a minute on 2 cores. Not the adding task (tasks.DEFAULT_TASKS).
    "default": dict(tasks=list(DEFAULT_TASKS), cells=list(CELLS), lengths=[10, 30, 60], hidden=32, steps=300,
                    batch=64, lr=1e-2, eval_batch=512),
    # A GPU: longer sequences, wider models, more steps (the Triton kernels, compiled).
    "full": dict(tasks=list(TASKS), cells=list(CELLS), lengths=[50, 200, 1000], hidden=128, steps=2000,
                 batch=128, lr=3e-3, eval_batch=1024),
    # Seconds on torch's CPU path: a smoke test of every task (too few steps to learn most of them). Under the
    # Triton interpreter even this takes many minutes.
    "quick": dict(tasks=list(TASKS), cells=list(CELLS), lengths=[5, 10], hidden=16, steps=30, batch=16, lr=1e-2,
                  eval_batch=128),
}


def _csv(kind, choices):
    def parse(text: str) -> list:
        values = [kind(v) for v in text.replace(",", " ").split()]
        bad = [v for v in values if choices is not None and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list from {', '.join(choices)}, "
                                             f"got {text!r}" if choices else f"expected numbers, got {text!r}")
        return values
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fusedrnn.demo",
        description="Train fusedrnn RNN (tanh), IRNN (relu, identity init), GRU and LSTM on synthetic long-memory "
                    "tasks and compare them: accuracy against sequence length, training time, and the gradient "
                    "norm reaching the first timestep; each task's verdict (which cells pass at which lengths) is "
                    "derived from the measured table.",
        epilog="Tasks: " + "; ".join(f"{t.name}: {t.title}" for t in TASKS.values()) + ". The default run "
               f"({','.join(DEFAULT_TASKS)}) targets a CPU-only machine (under a minute on 2 cores); adding needs "
               "far more steps (e.g. --tasks adding --steps 2000, a few minutes); --quick and --full run every "
               "task; --full is for a GPU.")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--full", action="store_true", help="GPU preset: lengths 50,200,1000, hidden 128, 2000 steps")
    preset.add_argument("--quick", action="store_true", help="tiny preset (seconds): lengths 5,10, 30 steps")
    p.add_argument("--tasks", type=_csv(str, list(TASKS)),
                   help=f"comma-separated, from {','.join(TASKS)} (default: all but adding)")
    p.add_argument("--cells", type=_csv(str, list(CELLS)), help=f"comma-separated, from {','.join(CELLS)} (all)")
    p.add_argument("--lengths", type=_csv(int, None), help="sequence lengths, comma-separated (10,30,60)")
    p.add_argument("--hidden", type=int, help="hidden size (32)")
    p.add_argument("--steps", type=int, help="training steps per run (300)")
    p.add_argument("--batch", type=int, help="batch size (64)")
    p.add_argument("--lr", type=float, help="Adam learning rate, decayed to 0 along a cosine (1e-2)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold (1.0)")
    p.add_argument("--eval-batch", type=int, help="held-out sequences per accuracy measurement (512)")
    p.add_argument("--gate-init", choices=GATE_INITS, default="chrono",
                   help="gate biases of GRU/LSTM: chrono (open for memories of ~T steps) or torch's default")
    p.add_argument("--seed", type=int, default=0, help="seed of data and initial weights (0)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    p.add_argument("--workers", type=int,
                   help="processes running the training runs in parallel (default: on CPU one per core, on a GPU 1)")
    p.add_argument("--threads", type=int,
                   help="CPU threads per process (default 1: these matrices are too small to gain from more)")
    p.add_argument("--out", default="demo_out", help="output folder for results.json and plots (demo_out)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--plot", metavar="DIR",
                   help="train nothing: redraw the PNG plots in DIR from DIR/results.json (of an earlier run)")
    return p


def _backend_line(device: torch.device) -> str:
    """Which implementation fusedrnn's modules run on ``device``, in words."""
    if dispatch.select(device) == "aten":
        hint = (" (set TRITON_INTERPRET=1 to run the Triton kernels under the interpreter instead)"
                if device.type == "cpu" else "")
        return f"fusedrnn backend: aten, torch's own implementation{hint}"
    if device.type == "cpu":
        return ("fusedrnn backend: Triton kernels under the Triton interpreter (TRITON_INTERPRET=1): very slow, "
                "so the training times below mean nothing")
    return f"fusedrnn backend: Triton kernels, compiled for {torch.cuda.get_device_name(device)}"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_NO_MATPLOTLIB = "matplotlib is not installed (pip install matplotlib, or the demo extra: pip install \".[demo]\")"


def replot(folder: str) -> int:
    """``--plot DIR``: the PNG plots of DIR/results.json, redrawn into DIR. Returns the exit status."""
    path = os.path.join(folder, "results.json")
    if not os.path.isfile(path):
        raise SystemExit(f"fusedrnn.demo: --plot: no {path} (write one with python -m fusedrnn.demo --out {folder})")
    results, _, _ = read_json(path)
    plots = write_plots(folder, results)
    if plots is None:
        print(f"plots: not drawn, {_NO_MATPLOTLIB}")
        return 1
    print(f"plots of {len(results)} runs from {path}: wrote " + ", ".join(plots))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo with command-line ``argv`` (default sys.argv[1:]). Returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.plot is not None:
        return replot(args.plot)
    preset_name = "full" if args.full else "quick" if args.quick else "default"
    settings = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in PRESETS[preset_name].items()}
    if min(settings["lengths"]) < 2:
        raise SystemExit("fusedrnn.demo: sequence lengths must be at least 2")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    cfg = replace(TrainConfig(), hidden=settings["hidden"], steps=settings["steps"], batch=settings["batch"],
                  lr=settings["lr"], clip=args.clip, eval_batch=settings["eval_batch"],
                  probe_batch=min(128, settings["eval_batch"]), seed=args.seed, gate_init=args.gate_init)

    if device.type == "cpu":
        workers = args.workers or _cores()
    else:
        workers = args.workers or 1
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or 1)
    try:
        print(f"fusedrnn demo ({preset_name} preset): device {device}, torch {torch.__version__}, "
              f"{workers} worker process(es) x {torch.get_num_threads()} CPU thread(s)")
        print(_backend_line(device))
        if args.full and device.type != "cuda":
            print("note: --full is meant for a GPU; on this device it will take a long time")
        if device.type == "cpu" and dispatch.select(device) == "triton":
            print("note: every kernel launch is interpreted; for a first look try --quick --tasks first_token "
                  "--cells lstm --lengths 5")
        n_runs = len(settings["tasks"]) * len(settings["cells"]) * len(settings["lengths"])
        print(f"{n_runs} runs: tasks {','.join(settings['tasks'])} x cells {','.join(settings['cells'])} x lengths "
              f"{','.join(map(str, settings['lengths']))}; hidden {cfg.hidden}, {cfg.steps} steps of batch "
              f"{cfg.batch}, Adam lr {cfg.lr:g}, clip {cfg.clip:g}, gate init {cfg.gate_init}, seed {cfg.seed}\n")
        sys.stdout.flush()

        start = time.perf_counter()
        progress = Progress(cfg.steps * sum(settings["lengths"]) * len(settings["tasks"]) * len(settings["cells"]))
        results = run_all(settings["tasks"], settings["cells"], settings["lengths"], cfg, device, progress, workers)
        progress.close()
        total = time.perf_counter() - start

        report = format_report(results, cfg.eval_batch)
        print(report)
        print(f"total {total:.0f}s")

        os.makedirs(args.out, exist_ok=True)
        info = dict(device=str(device), backend=_backend_line(device), torch=torch.__version__,
                    workers=workers, threads=torch.get_num_threads(), preset=preset_name, total_s=total,
                    tasks=settings["tasks"], cells=settings["cells"], lengths=settings["lengths"])
        write_json(os.path.join(args.out, "results.json"), results, cfg, info)
        with open(os.path.join(args.out, "table.txt"), "w") as f:
            f.write(report + "\n")
        written = [os.path.join(args.out, "results.json"), os.path.join(args.out, "table.txt")]
        if args.no_plots:
            print("plots: skipped (--no-plots)")
        else:
            plots = write_plots(args.out, results)
            if plots is None:
                print(f"plots: skipped, {_NO_MATPLOTLIB}")
            else:
                written += plots
        print("wrote " + ", ".join(written))
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
