"""Triton kernels of fusedrnn (installed as ``fusedrnn.kernels``). ``@triton.jit`` code only: launchers live in
``fusedrnn.launch`` (which starts them through ``fusedrnn.calls``). Nothing here reads the environment or probes a
device at import time.

- ``step.py``: one timestep per launch (``_step_fwd_kernel``, ``_step_bwd_kernel``);
- ``persistent.py``: a whole sequence per launch, batch-tiled (``_tiled_*_kernel``) or cooperative
  (``_coop_*_kernel``, resident or streamed by the constexpr ``RESIDENT``);
- ``tile.py``: the one tile path all of them compute a step with (matmuls, loads, stores, epilogues);
- ``cells.py``: each cell's pointwise math, the only code that branches on the cell itself."""

from .cells import CELL_GRU, CELL_LSTM, CELL_RNN_RELU, CELL_RNN_TANH
from .persistent import _coop_bwd_kernel, _coop_fwd_kernel, _tiled_bwd_kernel, _tiled_fwd_kernel
from .step import _step_bwd_kernel, _step_fwd_kernel

__all__ = ["CELL_LSTM", "CELL_GRU", "CELL_RNN_TANH", "CELL_RNN_RELU", "_step_fwd_kernel", "_step_bwd_kernel",
           "_tiled_fwd_kernel", "_tiled_bwd_kernel", "_coop_fwd_kernel", "_coop_bwd_kernel"]
