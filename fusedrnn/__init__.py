"""fusedrnn: fused Triton kernels for LSTM, GRU and RNN, as drop-ins for torch.nn.

    import fusedrnn
    lstm = fusedrnn.LSTM(input_size=512, hidden_size=512, num_layers=2)   # same API as torch.nn.LSTM

Backend choice (see fusedrnn.dispatch): CUDA tensors run the Triton kernels; CPU tensors run them under the
Triton interpreter with ``TRITON_INTERPRET=1`` and torch's own implementation otherwise. Kernel choice
(stepwise, batch-tiled persistent, cooperative persistent): ``fusedrnn.use_kernel`` (see fusedrnn.dispatch).
"""


def _map_source_subpackages() -> None:
    """In a source checkout, load ``kernels/`` and ``autotune/`` (beside this folder) as ``fusedrnn.kernels`` and
    ``fusedrnn.autotune``, as the installed package lays them out (pyproject.toml maps them there).

    Run from the repository root (``python -m bench``, ``python -m fusedrnn.demo``), Python imports this folder
    before any installed copy; with a non-editable install nothing else would map the two subpackages and every
    command would fail with ``No module named 'fusedrnn.autotune'``. An installed package has them inside, and
    this does nothing."""
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    for name in ("kernels", "autotune"):
        full, folder = f"{__name__}.{name}", os.path.join(root, name)
        if full in sys.modules or os.path.isdir(os.path.join(here, name)):
            continue
        init = os.path.join(folder, "__init__.py")
        if not os.path.isfile(init):
            continue
        spec = importlib.util.spec_from_file_location(full, init, submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[full]
            raise
        globals()[name] = module


_map_source_subpackages()

from .convert import convert, revert  # noqa: E402
from .settings import get_backend, get_kernel, set_backend, set_kernel, use_backend, use_kernel  # noqa: E402
from .functional import fused_gru, fused_gru_cell, fused_lstm, fused_lstm_cell, fused_rnn, fused_rnn_cell  # noqa: E402
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, is_fused  # noqa: E402

__version__ = "0.1.0"

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "fused_lstm", "fused_gru", "fused_rnn",
           "fused_lstm_cell", "fused_gru_cell", "fused_rnn_cell", "convert", "revert", "get_backend", "set_backend",
           "use_backend", "get_kernel", "set_kernel", "use_kernel", "is_fused", "__version__"]
