"""Compile candidate configurations ahead, in worker processes, while the tuner times others.

Compiling a candidate (about a second of CPU per kernel) costs more than timing it. Workers (spawned processes on
the same GPU) run each queued (problem, config) once through the same harness as the tuner, with two steps, which
compiles exactly the kernels the tuner will launch and leaves them in Triton's on-disk cache; the tuner's own run
then loads them from there. Nothing depends on the workers: a candidate whose compilation is not finished or not
started is compiled by the tuner itself, a worker's error is ignored (the tuner's own run decides), and a broken
pool just stops being used.
"""

from __future__ import annotations

import collections
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

_worker_device = None
_worker_harnesses: collections.OrderedDict = collections.OrderedDict()


def _worker_init(device_type: str, device_index) -> None:
    global _worker_device
    import torch

    _worker_device = torch.device(device_type, device_index)
    if device_type == "cuda":
        torch.cuda.set_device(_worker_device)


def _compile_task(problem, cfg, steps: int):
    """Run (and so compile) one configuration of one problem; returns None or the error line."""
    from .harness import Harness

    try:
        harness = _worker_harnesses.get(problem)
        if harness is None:
            harness = Harness(problem, _worker_device, steps=steps)
            _worker_harnesses[problem] = harness
            while len(_worker_harnesses) > 4:
                _worker_harnesses.popitem(last=False)
        harness.run(cfg)
        if _worker_device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        return None
    except Exception as e:  # noqa: BLE001 - reported, never raised: the tuner's own run decides
        return f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:200]


class Precompiler:
    """A queue of (problem, config) compiled by ``jobs`` worker processes, at most ``2 * jobs`` in flight.

    ``prefetch`` queues work (``urgent`` puts it first), ``wait`` is called by the tuner before it runs a
    configuration: it waits for a worker already compiling it, or takes it off the queue (the tuner compiles it).
    """

    def __init__(self, jobs: int, device, steps: int = 2, timeout: float = 300.0):
        self.jobs, self.steps, self.timeout = jobs, steps, timeout
        ctx = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                                         initargs=(device.type, device.index))
        self._pending: collections.OrderedDict = collections.OrderedDict()
        self._futures: dict = {}
        self._running: set = set()
        self.broken = False
        self.errors = 0

    def prefetch(self, problem, configs, urgent: bool = False) -> None:
        items = [(problem, c) for c in configs if (problem, c) not in self._futures]
        for item in (reversed(items) if urgent else items):
            self._pending[item] = None
            if urgent:
                self._pending.move_to_end(item, last=False)
        self._pump()

    def _in_flight(self) -> int:
        self._running = {f for f in self._running if not f.done()}
        return len(self._running)

    def _pump(self) -> None:
        if self.broken:
            self._pending.clear()
            return
        try:
            while self._pending and self._in_flight() < 2 * self.jobs:
                item, _ = self._pending.popitem(last=False)
                fut = self._pool.submit(_compile_task, item[0], item[1], self.steps)
                self._futures[item] = fut
                self._running.add(fut)
        except Exception:  # noqa: BLE001 - BrokenProcessPool, shutdown: stop using the pool
            self.broken = True
            self._pending.clear()

    def wait(self, problem, cfg) -> None:
        item = (problem, cfg)
        fut = self._futures.get(item)
        if fut is None:
            self._pending.pop(item, None)  # not started: the tuner compiles it itself
        else:
            try:
                if fut.result(timeout=self.timeout) is not None:
                    self.errors += 1
            except FutureTimeout:
                pass
            except Exception:  # noqa: BLE001 - a dead worker: the tuner compiles it itself
                self.broken = True
        self._pump()

    def close(self) -> None:
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
