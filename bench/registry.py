"""The benchmark cases: shape sets x dtypes x modes, and the FLOP count of one case.

A case is one cell, shape, precision and mode. Cases come from named shape sets; each set lists its shapes
and the dtypes and modes it runs by default (the command line can name others). A shape that appears in
several sets (a decode step at B=64, H=512 comes from "fastrnns" and from "b_sweep") is one case that
belongs to both sets: it is measured once and shows up in both sets' tables and plots.

Legend: T time steps, B batch, I input size, H hidden size, L layers, D directions (2 if bidirectional).

Dtypes: "fp32" (TF32 off everywhere), "tf32" (fp32 tensors, TF32 allowed in matmuls and in cuDNN),
"fp16", "bf16". Modes: "fwd" (forward under torch.no_grad, module in eval mode), "fwdbwd" (forward,
then the gradients of input, h0, c0 and every weight), "decode" (one time step, T=1, with hx given, no grad:
a decode step is exactly that; a Cell provider becomes one more registry entry once fusedrnn has Cells).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

DTYPES = ("fp32", "tf32", "fp16", "bf16")
MODES = ("fwd", "fwdbwd", "decode")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@dataclass(frozen=True)
class Shape:
    cell: str
    T: int
    B: int
    I: int  # noqa: E741 - the legend's name
    H: int
    L: int = 1
    bidirectional: bool = False


@dataclass(frozen=True)
class Case:
    """One thing to measure. ``sets`` (the shape sets it belongs to) is not part of its identity."""

    cell: str
    T: int
    B: int
    I: int  # noqa: E741
    H: int
    L: int
    bidirectional: bool
    dtype: str
    mode: str
    sets: tuple[str, ...] = field(default=(), compare=False)

    @property
    def D(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def shape_label(self) -> str:
        """"T100 B64 I512 H512" (+ " L2" / " bidir" where they apply)."""
        s = f"T{self.T} B{self.B} I{self.I} H{self.H}"
        return s + (f" L{self.L}" if self.L > 1 else "") + (" bidir" if self.bidirectional else "")

    @property
    def key(self) -> str:
        """Stable identity in the results: "lstm/T100-B64-I512-H512-L1-D1/fp16/fwd"."""
        return (f"{self.cell}/T{self.T}-B{self.B}-I{self.I}-H{self.H}-L{self.L}-D{self.D}/"
                f"{self.dtype}/{self.mode}")

    @property
    def tokens(self) -> int:
        """Tokens (time steps x sequences) processed by one call."""
        return self.T * self.B


@dataclass(frozen=True)
class ShapeSet:
    name: str
    description: str
    shapes: tuple[Shape, ...]
    dtypes: tuple[str, ...] = DTYPES
    modes: tuple[str, ...] = MODES
    #: Whether the peer providers (torch.nn without cuDNN, torch.compile, FlashRNN, haste) run here by
    #: default. The sweeps compare fusedrnn with cuDNN only, to keep the full suite inside a GPU session.
    peers: bool = True
    x: str = "shape"  # the swept quantity, for plots: "T", "B", "H" or "shape"


def _lstm(T, B, H, I=None, **kw):  # noqa: E741
    return Shape("lstm", T, B, H if I is None else I, H, **kw)


FASTRNNS = _lstm(100, 64, 512)
PERSISTENT = _lstm(1024, 16, 768)

#: In priority order: a run cut short by --max-minutes has the first sets (the sweeps and the long sequences,
#: the most expensive, come last).
SETS: dict[str, ShapeSet] = {s.name: s for s in (
    ShapeSet("fastrnns", "fastrnns default: T=100, B=64, I=H=512, 1 layer", (FASTRNNS,)),
    ShapeSet("persistent", "the Persistent-RNN case: B=16, T=1024, I=H=768", (PERSISTENT,)),
    ShapeSet("small_batch", "small-batch inference: B in 1..8, H in 256..1024, T=1024",
             tuple(_lstm(1024, B, H) for H in (256, 512, 1024) for B in (1, 2, 4, 8)),
             dtypes=("fp32", "fp16", "bf16"), modes=("fwd", "decode"), peers=False),
    ShapeSet("gru_rnn", "GRU and tanh-RNN at the fastrnns and persistent shapes",
             tuple(replace(s, cell=c) for c in ("gru", "rnn_tanh") for s in (FASTRNNS, PERSISTENT))),
    ShapeSet("deep_bidir", "2-layer bidirectional LSTM at the fastrnns shape",
             (_lstm(100, 64, 512, L=2, bidirectional=True),), modes=("fwd", "fwdbwd")),
    ShapeSet("h_sweep", "hidden-size sweep: H from 64 to 2048 at B=32, T=512",
             tuple(_lstm(512, 32, 64 * 2 ** k) for k in range(6)),
             dtypes=("fp32", "fp16", "bf16"), modes=("fwd", "fwdbwd"), peers=False, x="H"),
    ShapeSet("b_sweep", "batch sweep: B from 1 to 256 at H=512, T=512",
             tuple(_lstm(512, 2 ** k, 512) for k in range(9)),
             dtypes=("fp32", "fp16", "bf16"), modes=("fwd", "fwdbwd"), peers=False, x="B"),
    ShapeSet("long_seq", "long sequences: T from 1k to 64k, B=4, H=512",
             tuple(_lstm(1024 * 2 ** k, 4, 512) for k in range(7)),
             dtypes=("fp16", "bf16"), modes=("fwd", "fwdbwd"), peers=False, x="T"),
)}

#: The --smoke case: tiny, so the Triton interpreter runs it in seconds.
SMOKE = ShapeSet("smoke", "one tiny LSTM, end to end (timings mean nothing under the interpreter)",
                 (_lstm(4, 2, 16),), dtypes=("fp32",), modes=MODES, peers=False)

ALL_SETS = {**SETS, SMOKE.name: SMOKE}


def cases(sets=tuple(SETS), dtypes=None, modes=None, cells=None) -> list[Case]:
    """Every case of the named sets, in set order, de-duplicated (a case in two sets lists both).

    ``dtypes`` / ``modes`` replace each set's defaults when given; ``cells`` filters. A decode case is the
    shape at T=1; a 2-layer or bidirectional shape has no decode step and is left out of that mode.
    """
    out: dict[Case, Case] = {}
    for name in sets:
        s = ALL_SETS[name]
        for shape in s.shapes:
            if cells is not None and shape.cell not in cells:
                continue
            for dtype in (dtypes or s.dtypes):
                for mode in (modes or s.modes):
                    if mode == "decode" and (shape.L > 1 or shape.bidirectional):
                        continue
                    c = Case(shape.cell, 1 if mode == "decode" else shape.T, shape.B, shape.I, shape.H, shape.L,
                             shape.bidirectional, dtype, mode, (name,))
                    if c in out:
                        out[c] = replace(out[c], sets=out[c].sets + (name,))
                    else:
                        out[c] = c
    return list(out.values())


def gemm_flops(case: Case) -> int:
    """GEMM FLOPs of one call of ``case``: the number behind "achieved TFLOP/s".

    Per layer l and direction, forward: the input projection ``X @ W_ih^T`` (2*T*B*I_l*G*H, with I_0 = I and
    I_l = D*H after) plus the recurrent matmul ``h @ W_hh^T`` at every step (2*T*B*H*G*H). Pointwise gate
    math, bias adds and the reductions of the bias gradients are not counted. Forward+backward counts the
    backward as twice the forward (one GEMM for the data gradients, one for the weight gradients), so
    3x in all. A decode case is its forward at T=1.
    """
    G = GATES[case.cell]
    flops = 0
    for layer in range(case.L):
        in_size = case.I if layer == 0 else case.D * case.H
        flops += case.D * 2 * case.T * case.B * G * case.H * (in_size + case.H)
    return 3 * flops if case.mode == "fwdbwd" else flops
