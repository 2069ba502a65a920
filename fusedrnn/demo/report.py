"""Reporting: a progress bar, the terminal table, results.json and PNG plots (matplotlib, optional)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from dataclasses import asdict
from typing import IO, Sequence

from .models import CELLS
from .tasks import TASKS
from .train import RunResult, TrainConfig

__all__ = ["Progress", "format_table", "write_json", "write_plots"]


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


def format_table(results: Sequence[RunResult], width: int = 100) -> str:
    """One block per task: accuracy per (cell, length), training time over all lengths, and the gradient norm
    reaching the first timestep (train.grad_profile's g[0]) at the longest length, before -> after training."""
    blocks = []
    for task_name in dict.fromkeys(r.task for r in results):
        task = TASKS[task_name]
        rows = [r for r in results if r.task == task_name]
        lengths = sorted({r.length for r in rows})
        cells = [c for c in CELLS if any(r.cell == c for r in rows)]
        longest = lengths[-1]
        head = (f"{'cell':<9}" + "".join(f"{'T=' + str(t):>8}" for t in lengths) + f"{'train':>9}"
                + f"   |dL/dx_0| at T={longest}: init -> trained")
        lines = [f"{task.name}: {task.title}; chance {task.chance}", head, "-" * len(head)]
        for cell in cells:
            by_len = {r.length: r for r in rows if r.cell == cell}
            accs = "".join(f"{by_len[t].accuracy:8.0%}" if t in by_len else f"{'':>8}" for t in lengths)
            secs = sum(r.train_s for r in by_len.values())
            grad = (f"{_grad(by_len[longest].grad0_init):>9} -> {_grad(by_len[longest].grad0_end)}"
                    if longest in by_len else "")
            lines.append(f"{cell:<9}{accs}{secs:8.1f}s   {grad}")
        lines += textwrap.wrap("why: " + task.lesson, width=width, subsequent_indent="     ")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_json(path: str, results: Sequence[RunResult], cfg: TrainConfig, info: dict) -> None:
    """Everything measured, for later plotting: config, environment ``info`` and every run (losses included)."""
    with open(path, "w") as f:
        json.dump({"config": asdict(cfg), "info": info, "runs": [asdict(r) for r in results]}, f, indent=1)


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v - (values[i - window] if i >= window else 0.0)
        out.append(acc / min(i + 1, window))
    return out


def write_plots(out_dir: str, results: Sequence[RunResult]) -> list[str] | None:
    """PNG plots into ``out_dir``: accuracy.png (accuracy against length, every task) and <task>.png (accuracy,
    gradient profile at the longest length before and after training, training loss). Returns the paths, or
    None when matplotlib is not installed."""
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
        fig.suptitle(TASKS[task_name].title)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"{task_name}.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
