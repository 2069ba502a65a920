"""Triton kernels of fusedrnn (installed as ``fusedrnn.kernels``). ``@triton.jit`` code only: launchers live in
``fusedrnn.launch``. Nothing here reads the environment or probes a device at import time."""

from .cells import CELL_GRU, CELL_LSTM, CELL_RNN_RELU, CELL_RNN_TANH
from .persistent import _coop_bwd_kernel, _coop_fwd_kernel, _tiled_bwd_kernel, _tiled_fwd_kernel
from .step import _step_bwd_kernel, _step_fwd_kernel

__all__ = ["CELL_LSTM", "CELL_GRU", "CELL_RNN_TANH", "CELL_RNN_RELU", "_step_fwd_kernel", "_step_bwd_kernel",
           "_tiled_fwd_kernel", "_tiled_bwd_kernel", "_coop_fwd_kernel", "_coop_bwd_kernel"]
