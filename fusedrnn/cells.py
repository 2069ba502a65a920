"""The cell table: the one description of every recurrent cell fusedrnn runs.

Everything that needs to know a cell reads it here: the custom ops (one pair per cell), the launcher and the
kernels (whose constexpr traits derive from it), the autotune spaces and presets, the benchmarks, the static
resource report and the reference. Plain Python data: importing it imports neither torch nor triton, so the
kernels and the tuner's spaces can read it.

Fields (G gates, NS saved values per hidden unit, H hidden):

- ``code``: the ``CELL`` constexpr of the kernels (``kernels/cells.py`` switches its pointwise math on it);
- ``gates``: G, the pre-activation blocks of W_ih / W_hh, in torch.nn's gate order (``gate_names``);
- ``saved``: NS, the values per hidden unit that the forward keeps for the backward (``kernels/cells.py`` says
  which);
- ``has_c``: the cell carries a second state c beside h (LSTM);
- ``reads_h``: the pointwise update reads h_{t-1} itself, not only through the recurrent matmul (GRU's z * h);
- ``split_dx``: the gradients of the input and the recurrent pre-activations differ (GRU: r multiplies the
  recurrent part of n), so the backward writes dXp apart from dHp;
- ``params``: extra per-layer, per-direction parameters beyond torch.nn's ``w_ih, w_hh, b_ih, b_hh``, as
  (name, shape in units of H) pairs; none of the cells here has any;
- ``torch_name``: the torch.nn class (``mode`` of ``torch.nn.RNNBase``: "LSTM", "GRU", "RNN_TANH", "RNN_RELU").

To add a cell: a row here, its math in ``kernels/cells.py`` (``cell_fwd`` / ``cell_bwd`` under its code), its
plain-torch step in ``fusedrnn/reference.py``, and its entry points (CONTRIBUTING.md has the whole recipe).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    name: str
    code: int
    gates: int
    saved: int
    has_c: bool
    reads_h: bool
    split_dx: bool
    gate_names: tuple
    torch_name: str
    params: tuple = ()

    def traits(self) -> dict:
        """The cell's constexprs, by the kernels' names: what every kernel launch of this cell passes."""
        return dict(CELL=self.code, G=self.gates, NS=self.saved, HAS_C=self.has_c, READS_H=self.reads_h,
                    SPLIT_DX=self.split_dx)


CELLS: dict[str, Cell] = {c.name: c for c in (
    Cell("lstm", 0, gates=4, saved=4, has_c=True, reads_h=False, split_dx=False, gate_names=("i", "f", "g", "o"),
         torch_name="LSTM"),
    Cell("gru", 1, gates=3, saved=4, has_c=False, reads_h=True, split_dx=True, gate_names=("r", "z", "n"),
         torch_name="GRU"),
    Cell("rnn_tanh", 2, gates=1, saved=1, has_c=False, reads_h=False, split_dx=False, gate_names=("h",),
         torch_name="RNN_TANH"),
    Cell("rnn_relu", 3, gates=1, saved=1, has_c=False, reads_h=False, split_dx=False, gate_names=("h",),
         torch_name="RNN_RELU"),
)}
#: code -> cell, for the kernels' constexpr functions.
BY_CODE: dict[int, Cell] = {c.code: c for c in CELLS.values()}


def cell(name: str) -> Cell:
    """The cell named ``name``, or a ValueError naming the known ones."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; fusedrnn's cells are {tuple(CELLS)}") from None
