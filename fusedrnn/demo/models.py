"""The models of the demo: one fusedrnn recurrent layer and a linear read-out.

Cells (``CELLS``):
    rnn_tanh  fusedrnn.RNN(nonlinearity="tanh"), torch's default initialisation
    irnn      fusedrnn.RNN(nonlinearity="relu") with W_hh = identity and zero biases: the IRNN recipe
              (Le, Jaitly & Hinton 2015)
    gru       fusedrnn.GRU
    lstm      fusedrnn.LSTM

Gated cells get, by default, chrono initialisation (Tallec & Ollivier 2018) for the time scale ``t_max``: the
LSTM forget-gate bias b_f ~ log(U(1, t_max - 1)) and the input-gate bias b_i = -b_f; the GRU update-gate bias
b_z ~ log(U(1, t_max - 1)) (z near 1 keeps the state, as torch's h' = (1 - z) * n + z * h). Gates then
start open for memories of up to ~t_max steps instead of halving the state at every step (torch's default
biases put every gate near 0.5). The demo sets ``t_max`` to how far back the task's answer reaches
(tasks.Task.memory_steps: T for the long-memory tasks, a few steps for binary_add and segments).
``gate_init="default"`` keeps torch's initialisation.

Shapes (T time, B batch, F input features, H hidden, C outputs): input x [T, B, F] (time-major).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import fusedrnn

__all__ = ["CELLS", "SeqModel", "build_model"]

CELLS = ("rnn_tanh", "irnn", "gru", "lstm")
GATE_INITS = ("chrono", "default")


class SeqModel(nn.Module):
    """A recurrent layer and a linear head.

    ``forward(x [T, B, F], reset=None)`` (reset [T, B] bool: where the state starts afresh) returns the head applied to the last step's output, [B, C] (``per_step=False``), or
    to every step's output, [T, B, C] (``per_step=True``). ``rnn`` is any module with torch.nn's RNN interface
    (time-major), so a torch.nn twin can be swapped in for comparisons.
    """

    def __init__(self, rnn: nn.Module, head: nn.Linear, per_step: bool):
        super().__init__()
        self.rnn = rnn
        self.head = head
        self.per_step = per_step

    def forward(self, x: Tensor, reset: Tensor | None = None) -> Tensor:
        out, _ = self.rnn(x) if reset is None else self.rnn(x, reset=reset)
        return self.head(out if self.per_step else out[-1])


def _chrono_bias(hidden: int, t_max: int) -> Tensor:
    """[H] biases log(U(1, t_max - 1)), from the global generator."""
    return torch.empty(hidden).uniform_(1.0, max(t_max - 1.0, 1.0)).log_()


def build_model(cell: str, n_in: int, hidden: int, n_out: int, per_step: bool, seed: int, t_max: int = 100,
                gate_init: str = "chrono", device: torch.device | str = "cpu") -> SeqModel:
    """A float32 SeqModel on ``device`` with a fusedrnn ``cell`` (one of CELLS) of ``hidden`` units, ``n_in``
    inputs and ``n_out`` outputs. The same ``seed`` gives the same initial weights; ``t_max`` and ``gate_init``
    as in the module docstring."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose from {', '.join(CELLS)}")
    if gate_init not in GATE_INITS:
        raise ValueError(f"unknown gate_init {gate_init!r}; choose from {', '.join(GATE_INITS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cell == "lstm":
            rnn = fusedrnn.LSTM(n_in, hidden)
        elif cell == "gru":
            rnn = fusedrnn.GRU(n_in, hidden)
        else:
            rnn = fusedrnn.RNN(n_in, hidden, nonlinearity="tanh" if cell == "rnn_tanh" else "relu")
        head = nn.Linear(hidden, n_out)
        chrono = _chrono_bias(hidden, t_max) if gate_init == "chrono" else None
    H = hidden
    with torch.no_grad():
        if cell == "irnn":
            rnn.weight_hh_l0.copy_(torch.eye(H))
            rnn.bias_hh_l0.zero_()
            rnn.bias_ih_l0.zero_()
        elif cell == "lstm" and chrono is not None:  # gates i, f, g, o
            rnn.bias_ih_l0[:2 * H] = torch.cat([-chrono, chrono])
            rnn.bias_hh_l0[:2 * H] = 0.0
        elif cell == "gru" and chrono is not None:  # gates r, z, n
            rnn.bias_ih_l0[H:2 * H] = chrono
            rnn.bias_hh_l0[H:2 * H] = 0.0
    return SeqModel(rnn, head, per_step).to(device)
