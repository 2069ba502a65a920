"""Drop-in replacements for torch.nn's LSTM, GRU, RNN, LSTMCell, GRUCell and RNNCell.

Same constructor (positional order included), attributes, parameter names, shapes, registration order,
initialisation and state_dict as torch.nn. LSTM, GRU and RNN derive from ``torch.nn.modules.rnn.RNNBase``,
whose ``__init__`` builds the parameters, and validate inputs with its own checks, so errors read the same.
They derive from RNNBase rather than from nn.LSTM/GRU/RNN because torch.compile refuses to trace instances of
those three classes, so ``isinstance(m, torch.nn.LSTM)`` is False for a fusedrnn.LSTM (likewise GRU and RNN): check
``isinstance(m, torch.nn.modules.rnn.RNNBase)`` (true for both) or ``fusedrnn.is_fused(m)``. The Cells derive from
torch's Cells themselves. ``print(model)`` names fused modules ``fusedrnn.LSTM(...)`` etc.

torch's own classes are held from import on (``_TORCH``): a program may swap ``torch.nn.LSTM = fusedrnn.LSTM``
(as patching libraries swap classes for a whole program), and fusedrnn's modules still reach torch's checks.

Shapes (T time, B batch, I input_size, H hidden_size, P proj_size or H, L num_layers, D = 2 if bidirectional):
    input   [T, B, I] ([B, T, I] with batch_first), unbatched [T, I], or a PackedSequence
    h0 [L*D, B, P], c0 [L*D, B, H], or [L*D, P] / [L*D, H] for unbatched input; None means zeros
    output  [T, B, D*P] ([B, T, D*P] with batch_first), [T, D*P], or a PackedSequence
    h_n, c_n as h0, c0
    reset   (keyword, optional) bool [T, B] ([B, T] with batch_first), [T] for unbatched input, or [N] aligned
            with a PackedSequence's data: where True, that row starts afresh at that step (its state entering the
            step is zero in every layer, as at the start of a new sequence; no gradient crosses it).
            ``fusedrnn.functional`` says how bidirectional layers read it.
Cells: input [B, I] or [I]; h, c [B, H] or [H].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import functional

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "is_fused"]

#: torch.nn's own recurrent classes, as they were when fusedrnn was imported (before any swap by a user).
_TORCH = {name: getattr(nn.modules.rnn, name) for name in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")}


class _Fused:
    """Mixin of every fusedrnn module: its repr says that it is fused."""

    def _get_name(self) -> str:
        return "fusedrnn." + type(self).__name__


def is_fused(module: nn.Module) -> bool:
    """Whether ``module`` is one of fusedrnn's modules (LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell or a subclass)."""
    return isinstance(module, _Fused)


class _FusedRNNBase(_Fused, nn.modules.rnn.RNNBase):
    def flatten_parameters(self) -> None:
        """No-op: fusedrnn keeps no cuDNN flat weight buffer and reads each parameter where it lies."""

    def _weights(self) -> list[Tensor]:
        # Read by name on every call, so reassigned or tied weights, parametrizations and
        # torch.func.functional_call all see what the module holds now.
        return [getattr(self, name) for name in self._flat_weights_names]

    def _batch(self, input: Tensor, name: str) -> tuple[Tensor, bool]:
        """torch.nn's check of the input's rank; unbatched input gains a batch of 1. Returns (input, is_batched)."""
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D "
                             f"{'tensor instead' if name == 'RNN' else 'instead'}")
        is_batched = input.dim() == 3
        if not is_batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
        return input, is_batched

    def _zeros(self, input: Tensor, batch: int, size: int) -> Tensor:
        return torch.zeros(self.num_layers * (2 if self.bidirectional else 1), batch, size, dtype=input.dtype,
                           device=input.device)

    def _common(self, batch_sizes, reset) -> dict:
        return dict(bias=self.bias, num_layers=self.num_layers, dropout=float(self.dropout), training=self.training,
                    bidirectional=self.bidirectional, batch_first=self.batch_first, batch_sizes=batch_sizes,
                    reset=reset)

    def _unbatched_reset(self, reset):
        """``reset`` of unbatched input ([T]) as the batch of 1 the input becomes."""
        if reset is None:
            return None
        if not isinstance(reset, Tensor) or reset.dim() != 1:
            shape = list(reset.shape) if isinstance(reset, Tensor) else type(reset).__name__
            raise ValueError(f"reset must have shape [T] for unbatched input, got {shape}")
        return reset.unsqueeze(0 if self.batch_first else 1)


class LSTM(_FusedRNNBase):
    r"""Drop-in for :class:`torch.nn.LSTM`, running fused Triton kernels.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None)``.

    ``forward(input, hx=None, *, reset=None) -> (output, (h_n, c_n))``; shapes in the module docstring.
    """

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def get_expected_cell_size(self, input: Tensor, batch_sizes: Tensor | None) -> tuple[int, int, int]:
        return _TORCH["LSTM"].get_expected_cell_size(self, input, batch_sizes)

    def check_forward_args(self, input: Tensor, hidden: tuple[Tensor, Tensor],  # type: ignore[override]
                           batch_sizes: Tensor | None) -> None:
        _TORCH["LSTM"].check_forward_args(self, input, hidden, batch_sizes)

    def permute_hidden(self, hx: tuple[Tensor, Tensor], permutation: Tensor | None):  # type: ignore[override]
        return _TORCH["LSTM"].permute_hidden(self, hx, permutation)

    def forward(self, input, hx=None, *, reset=None):
        self._update_flat_weights()
        real_hidden_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        batch_sizes = sorted_indices = unsorted_indices = None
        is_batched = True
        packed = isinstance(input, PackedSequence)
        if packed:
            input, batch_sizes, sorted_indices, unsorted_indices = input
            if hx is None:
                max_batch = int(batch_sizes[0])
                hx = (self._zeros(input, max_batch, real_hidden_size), self._zeros(input, max_batch, self.hidden_size))
            else:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            input, is_batched = self._batch(input, "LSTM")
            if not is_batched:
                reset = self._unbatched_reset(reset)
            if hx is None:
                batch = input.size(0 if self.batch_first else 1)
                hx = (self._zeros(input, batch, real_hidden_size), self._zeros(input, batch, self.hidden_size))
            else:
                if is_batched:
                    if hx[0].dim() != 3 or hx[1].dim() != 3:
                        raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D but got "
                                           f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                else:
                    if hx[0].dim() != 2 or hx[1].dim() != 2:
                        raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D but got "
                                           f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        self.check_forward_args(input, hx, batch_sizes)
        output, (h_n, c_n) = functional.fused_lstm(input, hx, self._weights(), proj_size=self.proj_size,
                                                   **self._common(batch_sizes, reset))
        if packed:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return output, self.permute_hidden((h_n, c_n), unsorted_indices)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)


class _SingleStateRNN(_FusedRNNBase):
    """GRU and RNN: one state tensor, the same forward around a different functional."""

    _name = ""

    def _run(self, input: Tensor, hx: Tensor, batch_sizes, reset) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, input, hx=None, *, reset=None):
        self._update_flat_weights()
        batch_sizes = sorted_indices = unsorted_indices = None
        is_batched = True
        packed = isinstance(input, PackedSequence)
        if packed:
            input, batch_sizes, sorted_indices, unsorted_indices = input
            if hx is None:
                hx = self._zeros(input, int(batch_sizes[0]), self.hidden_size)
            else:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            input, is_batched = self._batch(input, self._name)
            if not is_batched:
                reset = self._unbatched_reset(reset)
            if hx is not None:
                if is_batched and hx.dim() != 3:
                    raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
                if not is_batched:
                    if hx.dim() != 2:
                        raise RuntimeError(
                            f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
                    hx = hx.unsqueeze(1)
            else:
                hx = self._zeros(input, input.size(0 if self.batch_first else 1), self.hidden_size)
        self.check_forward_args(input, hx, batch_sizes)
        output, h_n = self._run(input, hx, batch_sizes, reset)
        if packed:
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), \
                self.permute_hidden(h_n, unsorted_indices)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n = h_n.squeeze(1)
        return output, h_n


class GRU(_SingleStateRNN):
    r"""Drop-in for :class:`torch.nn.GRU`, running fused Triton kernels.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None)``.

    ``forward(input, hx=None, *, reset=None) -> (output, h_n)``; shapes in the module docstring.
    """

    _name = "GRU"

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def _run(self, input, hx, batch_sizes, reset):
        return functional.fused_gru(input, hx, self._weights(), **self._common(batch_sizes, reset))


class RNN(_SingleStateRNN):
    r"""Drop-in for :class:`torch.nn.RNN`, running fused Triton kernels.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None)``: as in torch.nn, ``nonlinearity`` is the
    4th positional argument.

    ``forward(input, hx=None, *, reset=None) -> (output, h_n)``; shapes in the module docstring.
    """

    _name = "RNN"

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)

    def _run(self, input, hx, batch_sizes, reset):
        return functional.fused_rnn(input, hx, self._weights(), nonlinearity=self.nonlinearity,
                                    **self._common(batch_sizes, reset))


# ---- cells ------------------------------------------------------------------------------------------------


def _cell_input(name: str, input: Tensor, hx, n_states: int):
    """torch's rank checks and unbatched handling; returns (input [B, I], [h, (c)] each [B, H], is_batched)."""
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if hx is not None:
        states = list(hx) if n_states == 2 else [hx]
        for idx, value in enumerate(states):
            if value.dim() not in (1, 2):
                what = f"hx[{idx}]" if n_states == 2 else "hidden"
                raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {value.dim()}D instead")
    is_batched = input.dim() == 2
    if not is_batched:
        input = input.unsqueeze(0)
    return input, is_batched


def _single_state_cell(cell: nn.Module, name: str, input: Tensor, hx: Tensor | None, fn, **kwargs) -> Tensor:
    """GRUCell's and RNNCell's forward: torch's input handling around one fused step ``fn``."""
    input, is_batched = _cell_input(name, input, hx, 1)
    if hx is None:
        hx = torch.zeros(input.size(0), cell.hidden_size, dtype=input.dtype, device=input.device)
    else:
        hx = hx.unsqueeze(0) if not is_batched else hx
    h = fn(input, hx, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, **kwargs)
    return h if is_batched else h.squeeze(0)


class LSTMCell(_Fused, _TORCH["LSTMCell"]):
    r"""Drop-in for :class:`torch.nn.LSTMCell`: one fused launch per call (a decode step).

    ``forward(input [B, I] or [I], hx=(h, c) each [B, H] or [H], or None) -> (h', c')``.
    """

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        input, is_batched = _cell_input("LSTMCell", input, hx, 2)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            hx = (zeros, zeros)
        else:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if not is_batched else hx
        h, c = functional.fused_lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_Fused, _TORCH["GRUCell"]):
    r"""Drop-in for :class:`torch.nn.GRUCell`: one fused launch per call (a decode step).

    ``forward(input [B, I] or [I], hx [B, H] or [H] or None) -> h'``.
    """

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return _single_state_cell(self, "GRUCell", input, hx, functional.fused_gru_cell)


class RNNCell(_Fused, _TORCH["RNNCell"]):
    r"""Drop-in for :class:`torch.nn.RNNCell`: one fused launch per call (a decode step).

    ``RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh', device=None, dtype=None)``;
    ``forward(input [B, I] or [I], hx [B, H] or [H] or None) -> h'``.
    """

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return _single_state_cell(self, "RNNCell", input, hx, functional.fused_rnn_cell,
                                  nonlinearity=self.nonlinearity)
