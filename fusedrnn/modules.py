"""Drop-in replacements for ``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``.

Same constructor (positional order included), attributes, parameter names, shapes, registration order,
initialisation and state_dict as torch.nn: the classes derive from ``torch.nn.modules.rnn.RNNBase``, whose
``__init__`` builds the parameters, and validate inputs with its own checks, so errors read the same. They
derive from RNNBase rather than from nn.LSTM/GRU/RNN because torch.compile refuses to trace instances of
those three classes.

Shapes (T time, B batch, I input_size, H hidden_size, L num_layers, D = 2 if bidirectional else 1):
    input   [T, B, I] ([B, T, I] with batch_first), or unbatched [T, I]
    h0, c0  [L*D, B, H], or [L*D, H] for unbatched input; None means zeros
    output  [T, B, D*H] ([B, T, D*H] with batch_first), or [T, D*H]
    h_n, c_n as h0, c0
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import functional

__all__ = ["LSTM", "GRU", "RNN"]

_PACKED = ("fusedrnn: PackedSequence input is not supported yet; pad it with "
           "torch.nn.utils.rnn.pad_packed_sequence, or use torch.nn.{}")


class _FusedRNNBase(nn.modules.rnn.RNNBase):
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

    def _zeros(self, input: Tensor, size: int) -> Tensor:
        batch = input.size(0) if self.batch_first else input.size(1)
        return torch.zeros(self.num_layers * (2 if self.bidirectional else 1), batch, size, dtype=input.dtype,
                           device=input.device)

    def _common(self) -> dict:
        return dict(bias=self.bias, num_layers=self.num_layers, dropout=float(self.dropout), training=self.training,
                    bidirectional=self.bidirectional, batch_first=self.batch_first)


class LSTM(_FusedRNNBase):
    r"""Drop-in for :class:`torch.nn.LSTM`, running fused Triton kernels.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None)``. ``proj_size > 0`` is not supported yet.

    ``forward(input, hx=None) -> (output, (h_n, c_n))``; shapes in the module docstring.
    """

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)
        if self.proj_size > 0:
            raise NotImplementedError("fusedrnn.LSTM does not support proj_size > 0 yet; use torch.nn.LSTM")

    def get_expected_cell_size(self, input: Tensor, batch_sizes: Tensor | None) -> tuple[int, int, int]:
        return nn.LSTM.get_expected_cell_size(self, input, batch_sizes)

    def check_forward_args(self, input: Tensor, hidden: tuple[Tensor, Tensor],  # type: ignore[override]
                           batch_sizes: Tensor | None) -> None:
        nn.LSTM.check_forward_args(self, input, hidden, batch_sizes)

    def forward(self, input, hx=None):
        self._update_flat_weights()
        if isinstance(input, PackedSequence):
            raise NotImplementedError(_PACKED.format("LSTM"))
        input, is_batched = self._batch(input, "LSTM")
        if hx is None:
            hx = (self._zeros(input, self.hidden_size), self._zeros(input, self.hidden_size))
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
        self.check_forward_args(input, hx, None)
        output, (h_n, c_n) = functional.fused_lstm(input, hx, self._weights(), **self._common())
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)


class _SingleStateRNN(_FusedRNNBase):
    """GRU and RNN: one state tensor, the same forward around a different functional."""

    _name = ""

    def _run(self, input: Tensor, hx: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, input, hx=None):
        self._update_flat_weights()
        if isinstance(input, PackedSequence):
            raise NotImplementedError(_PACKED.format(self._name))
        input, is_batched = self._batch(input, self._name)
        if hx is not None:
            if is_batched and hx.dim() != 3:
                raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            if not is_batched:
                if hx.dim() != 2:
                    raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
                hx = hx.unsqueeze(1)
        else:
            hx = self._zeros(input, self.hidden_size)
        self.check_forward_args(input, hx, None)
        output, h_n = self._run(input, hx)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n = h_n.squeeze(1)
        return output, h_n


class GRU(_SingleStateRNN):
    r"""Drop-in for :class:`torch.nn.GRU`, running fused Triton kernels.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None)``.

    ``forward(input, hx=None) -> (output, h_n)``; shapes in the module docstring.
    """

    _name = "GRU"

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def _run(self, input, hx):
        return functional.fused_gru(input, hx, self._weights(), **self._common())


class RNN(_SingleStateRNN):
    r"""Drop-in for :class:`torch.nn.RNN`, running fused Triton kernels.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None)``: as in torch.nn, ``nonlinearity`` is the
    4th positional argument.

    ``forward(input, hx=None) -> (output, h_n)``; shapes in the module docstring.
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

    def _run(self, input, hx):
        return functional.fused_rnn(input, hx, self._weights(), nonlinearity=self.nonlinearity, **self._common())
