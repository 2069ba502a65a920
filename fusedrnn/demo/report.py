"""Reporting: a progress bar, the terminal table with its verdicts and legend, results.json and PNG plots
(matplotlib, optional)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, fields
from typing import IO, Sequence

from .models import CELLS
from .tasks import TASKS, Task
from .train import RunResult, TrainConfig

__all__ = ["Progress", "Verdict", "shown_percent", "passes", "verdict", "format_table", "format_legend",
           "format_report", "write_json", "read_json", "write_plots"]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A one-line progress bar over ``total`` units of work (here: training steps x sequence length).

    On a terminal it redraws in place (at most 10 times a second); elsewhere (a log, a pipe) it prints one line
    per finished item, so logs stay readable. Write to ``stream`` (default stderr).
    """

    def __init__(self, total: int, stream: IO[str] | None = None, width: int = 24):
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def _line(self, label: str) -> str:
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * self.width)
        elapsed = time.perf_counter() - self.start
        left = f"{_duration(elapsed * (1 - frac) / frac)} left" if frac > 0.02 else "..."
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {frac:4.0%}  {_duration(elapsed)}, {left}  {label}"

    def update(self, units: int, label: str) -> None:
        """Add ``units`` of work done; ``label`` says what is running."""
        self.done += units
        now = time.perf_counter()
        if self._tty and now - self._last_draw > 0.1:
            self._last_draw = now
            cols = os.get_terminal_size(self.stream.fileno()).columns if self._tty else 120
            self.stream.write("\r" + self._line(label)[:cols - 1].ljust(cols - 1))
            self.stream.flush()

    def item_done(self, label: str) -> None:
        """Mark the end of one item (one training run): a log line when not on a terminal."""
        if not self._tty:
            self.stream.write(self._line(label) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


def _grad(value: float) -> str:
    return "0" if value == 0 else f"{value:.0e}"


def shown_percent(accuracy: float) -> int:
    """``accuracy`` (0..1) as the table prints it, a whole percent: the number the pass test reads."""
    return int(f"{100 * accuracy:.0f}")


def passes(task: Task, accuracy: float) -> bool:
    """Whether a run of ``task`` with this accuracy passes: at least ``task.pass_percent`` as printed."""
    return shown_percent(accuracy) >= task.pass_percent


def _lengths(ts: Sequence[int]) -> str:
    return "T=" + ",".join(map(str, ts))


@dataclass(frozen=True)
class Verdict:
    """What a task's table shows, run by run: for every cell the lengths at which it passes and those at which
    it fails (report.passes). ``lengths``: every length the task was run at. Derived from the measurements
    only (verdict()); nothing in it is written in advance."""

    task: str
    pass_percent: int
    lengths: tuple[int, ...]
    passed: dict[str, tuple[int, ...]]
    failed: dict[str, tuple[int, ...]]

    def everywhere(self) -> list[str]:
        """Cells that were run at every length and pass at all of them."""
        return [c for c in self.passed if self.passed[c] == self.lengths]

    def nowhere(self) -> list[str]:
        """Cells that pass at no length they were run at."""
        return [c for c in self.passed if not self.passed[c]]

    def passing_at(self, length: int) -> list[str]:
        return [c for c in self.passed if length in self.passed[c]]

    def text(self) -> str:
        """One sentence per group of cells with the same outcome, best first."""
        head = f"verdict (pass: accuracy >= {self.pass_percent}%): "
        if not self.passed:
            return head + "no runs."
        if len(self.everywhere()) == len(self.passed) and set(CELLS) <= set(self.passed):
            return head + f"every cell passes at every length ({_lengths(self.lengths)})."
        if len(self.nowhere()) == len(self.passed):
            return head + f"no cell passes at any length ({_lengths(self.lengths)}) in this run."
        groups: dict[tuple, list[str]] = {}
        for cell in self.passed:
            groups.setdefault((self.passed[cell], self.failed[cell]), []).append(cell)
        parts = []
        for (ok, bad), cells in sorted(groups.items(), key=lambda g: (-len(g[0][0]), g[0][0])):
            s = "es" if len(cells) == 1 else ""  # one cell passes, two pass
            if not bad and ok == self.lengths:
                what = f"pass{s} at every length ({_lengths(ok)})"
            elif not ok:
                what = f"fail{s[1:]} at every length ({_lengths(bad)})"
            elif not bad:
                what = f"pass{s} at {_lengths(ok)}, the only lengths run"
            else:
                what = f"pass{s} at {_lengths(ok)} only, fail{s[1:]} at {_lengths(bad)}"
            parts.append(f"{', '.join(cells)} {what}")
        return head + "; ".join(parts) + "."


def verdict(results: Sequence[RunResult], task_name: str) -> Verdict:
    """The Verdict of ``task_name`` from ``results`` (other tasks' runs are ignored). Cells in CELLS order."""
    task = TASKS[task_name]
    rows = [r for r in results if r.task == task_name]
    cells = [c for c in CELLS if any(r.cell == c for r in rows)]
    cells += sorted({r.cell for r in rows} - set(cells))
    passed, failed = {}, {}
    for cell in cells:
        mine = sorted((r.length, passes(task, r.accuracy)) for r in rows if r.cell == cell)
        passed[cell] = tuple(t for t, ok in mine if ok)
        failed[cell] = tuple(t for t, ok in mine if not ok)
    return Verdict(task_name, task.pass_percent, tuple(sorted({r.length for r in rows})), passed, failed)


def format_table(results: Sequence[RunResult], width: int = 100) -> str:
    """One block per task: accuracy per (cell, length), training time over all lengths, and the gradient norm
    reaching the first timestep (train.grad_profile's g[0]) at the longest length, before -> after training;
    then the verdict derived from those accuracies (verdict()) and, apart from it, the task's background."""
    blocks = []
    for task_name in dict.fromkeys(r.task for r in results):
        task = TASKS[task_name]
        rows = [r for r in results if r.task == task_name]
        lengths = sorted({r.length for r in rows})
        found = verdict(results, task_name)
        longest = lengths[-1]
        head = (f"{'cell':<9}" + "".join(f"{'T=' + str(t):>8}" for t in lengths) + f"{'train':>9}"
                + f"   |dL/dx_0| at T={longest}: init -> trained")
        lines = [f"{task.name}: {task.title}; chance {task.chance}", head, "-" * len(head)]
        for cell in found.passed:
            by_len = {r.length: r for r in rows if r.cell == cell}
            accs = "".join(f"{shown_percent(by_len[t].accuracy):7d}%" if t in by_len else f"{'':>8}"
                           for t in lengths)
            secs = sum(r.train_s for r in by_len.values())
            grad = (f"{_grad(by_len[longest].grad0_init):>9} -> {_grad(by_len[longest].grad0_end)}"
                    if longest in by_len else "")
            lines.append(f"{cell:<9}{accs}{secs:8.1f}s   {grad}")
        lines += textwrap.wrap(found.text(), width=width, subsequent_indent="     ")
        lines += textwrap.wrap("background: " + task.background, width=width, subsequent_indent="     ")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_legend(eval_batch: int, width: int = 100) -> str:
    """What the table's columns and verdict lines mean (printed under the table and written into table.txt)."""
    return "\n".join(textwrap.fill(par, width=width, subsequent_indent="  ") for par in _legend(eval_batch))


def _legend(eval_batch: int) -> list[str]:
    return [f"accuracy: share of {eval_batch} held-out sequences answered right (what counts as right: the task's "
            "title). train: training time of the cell summed over lengths.",
            "|dL/dx_0|: norm of the gradient of the last output's loss with respect to the input vector at t=0, "
            "mean over examples (0: below float32's range).",
            "verdict: computed from the table above. A run passes when its accuracy as printed is at least the "
            "task's threshold (on its verdict line); a cell is said to pass at every length only if it passes at "
            "each one.",
            "background: what the task asks of a cell; fixed text, not a result.",
            "One seed per run: differences of a few points are noise (--seed draws another)."]


def format_report(results: Sequence[RunResult], eval_batch: int, width: int = 100) -> str:
    """The table (format_table) and its legend (format_legend): what the demo prints and table.txt holds."""
    return format_table(results, width) + "\n\n" + format_legend(eval_batch, width)


def write_json(path: str, results: Sequence[RunResult], cfg: TrainConfig, info: dict) -> None:
    """Everything measured, for later plotting: config, environment ``info`` and every run (losses included)."""
    with open(path, "w") as f:
        json.dump({"config": asdict(cfg), "info": info, "runs": [asdict(r) for r in results]}, f, indent=1)


def read_json(path: str) -> tuple[list[RunResult], dict, dict]:
    """What write_json wrote: (runs, config dict, info dict)."""
    with open(path) as f:
        data = json.load(f)
    names = {f.name for f in fields(RunResult)}
    runs = [RunResult(**{k: v for k, v in run.items() if k in names}) for run in data["runs"]]
    return runs, data.get("config", {}), data.get("info", {})


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v - (values[i - window] if i >= window else 0.0)
        out.append(acc / min(i + 1, window))
    return out


def write_plots(out_dir: str, results: Sequence[RunResult]) -> list[str] | None:
    """PNG plots into ``out_dir``: accuracy.png (accuracy against length, every task; dotted: the pass threshold)
    and <task>.png (accuracy, gradient profile at the longest length before and after training, training loss).
    Returns the paths, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colors = dict(zip(CELLS, ("tab:red", "tab:orange", "tab:green", "tab:blue")))
    markers = dict(zip(CELLS, ("o-", "s--", "^-.", "D:")))  # lines at 100% overlap: tell them apart
    tasks = list(dict.fromkeys(r.task for r in results))
    paths = []

    def accuracy_panel(ax, task_name):
        rows = [r for r in results if r.task == task_name]
        for cell in [c for c in CELLS if any(r.cell == c for r in rows)]:
            pts = sorted((r.length, r.accuracy) for r in rows if r.cell == cell)
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], markers[cell], color=colors[cell], label=cell)
        lengths = sorted({r.length for r in rows})
        if task_name in TASKS:  # the verdict's pass threshold
            ax.axhline(TASKS[task_name].pass_percent, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.minorticks_off()
        ax.set_ylim(-5, 105)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(task_name)
        ax.grid(alpha=0.3)

    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    for ax, task_name in zip(axes[0], tasks):
        accuracy_panel(ax, task_name)
    axes[0][0].legend()
    fig.suptitle("accuracy against sequence length")
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "accuracy.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    for task_name in tasks:
        rows = [r for r in results if r.task == task_name]
        longest = max(r.length for r in rows)
        fig, (ax_acc, ax_grad, ax_loss) = plt.subplots(1, 3, figsize=(15, 4))
        accuracy_panel(ax_acc, task_name)
        ax_acc.legend()
        for r in (r for r in rows if r.length == longest):
            t = range(len(r.grad_end))
            ax_grad.plot(t, r.grad_init, "--", color=colors[r.cell], alpha=0.6)
            ax_grad.plot(t, r.grad_end, "-", color=colors[r.cell], label=r.cell)
            ax_loss.plot(_smooth(r.losses, max(1, len(r.losses) // 30)), color=colors[r.cell], label=r.cell)
        ax_grad.set_yscale("log", nonpositive="mask")
        ax_grad.set_xlabel("input step t")
        ax_grad.set_ylabel("|dL_last / dx_t|")
        ax_grad.set_title(f"gradient from the last output, T={longest} (dashed: init)")
        ax_grad.grid(alpha=0.3)
        ax_loss.set_yscale("log", nonpositive="mask")
        ax_loss.set_xlabel("training step")
        ax_loss.set_ylabel("training loss")
        ax_loss.set_title(f"training loss, T={longest}")
        ax_loss.grid(alpha=0.3)
        fig.suptitle(TASKS[task_name].title if task_name in TASKS else task_name)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"{task_name}.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
