"""Running the grid of (task, length, cell) runs, in this process or in worker processes.

Every run seeds its own data and weights (train.run), so the results do not depend on the number of workers
or on the order in which the runs finish. Workers are spawned processes with one CPU thread each by default
(the matrices of these small models are too small to gain from more threads); they report progress through a
queue that the parent drains into the progress bar.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Protocol, Sequence

import torch

from .. import settings
from .tasks import TASKS
from .train import RunResult, TrainConfig, run

__all__ = ["run_all"]

#: Steps between two progress messages of a worker.
_REPORT_EVERY = 10

_worker_queue = None  # set in each worker by _init_worker


class ProgressSink(Protocol):
    def update(self, units: int, label: str) -> None: ...

    def item_done(self, label: str) -> None: ...


def _label(job: tuple[str, int, str]) -> str:
    name, length, cell = job
    return f"{name} T={length} {cell}"


def _run_job(job: tuple[str, int, str], cfg: TrainConfig, device: str, report) -> RunResult:
    """One run; ``report(kind, units, label)`` with kind "step" (``units`` of work done) or "done"."""
    name, length, cell = job
    label = _label(job)
    pending = [0]

    def on_step(step: int, loss: float) -> None:
        pending[0] += length
        if (step + 1) % _REPORT_EVERY == 0 or step + 1 == cfg.steps:
            report("step", pending[0], f"{label} step {step + 1}/{cfg.steps} loss {loss:.3f}")
            pending[0] = 0

    result = run(TASKS[name], cell, length, cfg, device, on_step)
    report("done", 0, f"{label}: accuracy {result.accuracy:.0%}")
    return result


def _init_worker(q, backend: str, threads: int) -> None:
    global _worker_queue
    _worker_queue = q
    settings.set_backend(backend)
    torch.set_num_threads(threads)


def _worker_job(job: tuple[str, int, str], cfg: TrainConfig, device: str) -> RunResult:
    return _run_job(job, cfg, device, lambda kind, units, label: _worker_queue.put((kind, units, label)))


def _deliver(progress: ProgressSink | None, kind: str, units: int, label: str) -> None:
    if progress is None:
        return
    if kind == "step":
        progress.update(units, label)
    else:
        progress.item_done(label)


def run_all(tasks: Sequence[str], cells: Sequence[str], lengths: Sequence[int], cfg: TrainConfig,
            device: torch.device | str = "cpu", progress: ProgressSink | None = None,
            workers: int = 1) -> list[RunResult]:
    """Every (task, length, cell) run; results in that order whatever ``workers`` is.

    ``progress`` (report.Progress) hears of the work done, in units of steps x length (the work of a step grows
    with T), and of each finished run. ``workers > 1`` runs them in that many spawned processes, each with
    the fusedrnn backend setting and the torch thread count of this one.
    """
    jobs = [(name, length, cell) for name in tasks for length in lengths for cell in cells]
    device = str(device)
    if workers <= 1 or len(jobs) <= 1:
        return [_run_job(job, cfg, device, lambda *msg: _deliver(progress, *msg)) for job in jobs]

    ctx = multiprocessing.get_context("spawn")  # no fork: torch and triton hold threads and locks
    q = ctx.Queue()

    def drain(timeout: float) -> None:
        try:
            msg = q.get(timeout=timeout)
            while True:
                _deliver(progress, *msg)
                msg = q.get_nowait()
        except queue_module.Empty:
            pass

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
                             initargs=(q, settings.get_backend(), torch.get_num_threads())) as pool:
        futures = [pool.submit(_worker_job, job, cfg, device) for job in jobs]
        pending = set(futures)
        while pending:
            drain(0.1)
            _, pending = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
        drain(0.5)
        return [f.result() for f in futures]
