"""The one place that launches a Triton kernel: every kernel fusedrnn runs, by name, launched by keyword.

``launch(name, grid, **arguments)`` starts kernel ``name`` (a key of ``KERNELS``) on ``grid`` with its arguments
and launch options, all by keyword (the kernels' parameter names: ``kernels/``), counts it in ``launch_counts`` and
hands it to every active recorder. ``recording(run=...)`` collects the launches of a block as ``Launch`` records,
which tools use without reaching into the launcher: the tuner times their replay (``Launches.replay``), and
``bench.resources`` compiles exactly what a launch would compile (``Launch.kernel`` with ``Launch.arguments``).
Nothing here decides what runs (``fusedrnn.dispatch`` does) or allocates (``fusedrnn.launch``).

Kernel names: ``step_fwd`` / ``step_bwd`` (one timestep), ``tiled_fwd`` / ``tiled_bwd`` (the batch-tiled persistent
kernel), ``resident_fwd`` / ``resident_bwd`` and ``streamed_fwd`` / ``streamed_bwd`` (the cooperative persistent
kernel with its W_hh slice held on chip for the whole sequence, or streamed from L1/L2 at every step: one kernel,
``_coop_*_kernel``, under two names, whose launches pass its constexpr RESIDENT accordingly).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass

from fusedrnn import kernels

#: kernel name -> the jitted function it launches.
KERNELS = {
    "step_fwd": kernels._step_fwd_kernel, "step_bwd": kernels._step_bwd_kernel,
    "tiled_fwd": kernels._tiled_fwd_kernel, "tiled_bwd": kernels._tiled_bwd_kernel,
    "resident_fwd": kernels._coop_fwd_kernel, "resident_bwd": kernels._coop_bwd_kernel,
    "streamed_fwd": kernels._coop_fwd_kernel, "streamed_bwd": kernels._coop_bwd_kernel,
}

#: Kernel launches by kernel name since the process started. Tests read it to prove that the Triton path ran (a
#: silent fallback to torch would leave it unchanged).
launch_counts: Counter = Counter()

#: Keywords of a launch that are compile and launch options, not kernel parameters.
OPTIONS = ("num_warps", "num_stages", "maxnreg", "launch_cooperative_grid")


@dataclass(frozen=True)
class Launch:
    """One kernel launch: its name, grid and keyword arguments (kernel parameters and launch options)."""

    name: str
    grid: tuple
    arguments: dict

    @property
    def kernel(self):
        return KERNELS[self.name]

    def run(self) -> None:
        self.kernel[self.grid](**self.arguments)


class Launches(list):
    """Recorded launches, in launch order."""

    def replay(self) -> None:
        for one in self:
            one.run()


_recorders: list = []  # (Launches, run)


def launch(name: str, grid: tuple, **arguments) -> None:
    """Launch kernel ``name`` on ``grid``; ``arguments`` by the kernel's parameter names, plus launch options.

    Errors from Triton (OutOfResources, a cooperative launch the driver refuses) propagate: the caller decides; a
    launch that failed is neither recorded nor counted (a replay would repeat the failure, not the fallback)."""
    record = Launch(name, tuple(grid), arguments)
    if all(run_it for _, run_it in _recorders):
        record.run()
    for log, _ in _recorders:
        log.append(record)
    launch_counts[name] += 1


@contextlib.contextmanager
def recording(run: bool = True):
    """Within the block, every launch is recorded into the ``Launches`` this yields; with ``run=False`` nothing is
    launched (the launcher's results then hold whatever their buffers held: for tools that only need the calls)."""
    log = Launches()
    entry = (log, run)
    _recorders.append(entry)
    try:
        yield log
    finally:
        _recorders.remove(entry)
