"""fusedrnn: fused Triton kernels for LSTM, GRU and RNN, as drop-ins for torch.nn.

    import fusedrnn
    lstm = fusedrnn.LSTM(input_size=512, hidden_size=512, num_layers=2)   # same API as torch.nn.LSTM

Backend choice (see fusedrnn.dispatch): CUDA tensors run the Triton kernels; CPU tensors run them under the
Triton interpreter with ``TRITON_INTERPRET=1`` and torch's own implementation otherwise. Kernel choice
(stepwise, batch-tiled persistent, cooperative persistent): ``fusedrnn.use_kernel`` (see fusedrnn.dispatch).
"""

from .convert import convert, revert
from .dispatch import get_backend, get_kernel, set_backend, set_kernel, use_backend, use_kernel
from .functional import fused_gru, fused_gru_cell, fused_lstm, fused_lstm_cell, fused_rnn, fused_rnn_cell
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "fused_lstm", "fused_gru", "fused_rnn",
           "fused_lstm_cell", "fused_gru_cell", "fused_rnn_cell", "convert", "revert", "get_backend", "set_backend",
           "use_backend", "get_kernel", "set_kernel", "use_kernel", "__version__"]
