"""The benchmark cases: shape sets x dtypes x modes, and the FLOP count of one case.

A case is one cell, shape, precision and mode. Cases come from named shape sets; each set lists its shapes
and the dtypes and modes it runs by default (the command line can name others). The sets are
``fusedrnn.autotune.presets.SETS``, the one description of the benchmark shapes, which the tuning CLI's presets
read too (the package is installed, bench/ is not); ``SMOKE`` is the benchmark's own. A shape that appears in
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

from fusedrnn.autotune.presets import SET_DTYPES as DTYPES  # noqa: F401 - the bench's vocabulary (CLI, report)
from fusedrnn.autotune.presets import SET_MODES as MODES
from fusedrnn.autotune.presets import SETS, Shape, ShapeSet
from fusedrnn.cells import CELLS


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
    #: The mean episode length of the resets inside each row (presets.Shape.episode); 0: none. Keyword only.
    episode: int = field(default=0, kw_only=True)

    @property
    def D(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def shape_label(self) -> str:
        """"T100 B64 I512 H512" (+ " L2" / " bidir" / " episodes~100" where they apply)."""
        s = f"T{self.T} B{self.B} I{self.I} H{self.H}"
        return (s + (f" L{self.L}" if self.L > 1 else "") + (" bidir" if self.bidirectional else "")
                + (f" episodes~{self.episode}" if self.episode else ""))

    @property
    def key(self) -> str:
        """Stable identity in the results: "lstm/T100-B64-I512-H512-L1-D1/fp16/fwd" ("-E100" after D1 with
        resets, episodes of mean length 100)."""
        return (f"{self.cell}/T{self.T}-B{self.B}-I{self.I}-H{self.H}-L{self.L}-D{self.D}"
                f"{f'-E{self.episode}' if self.episode else ''}/{self.dtype}/{self.mode}")

    @property
    def tokens(self) -> int:
        """Tokens (time steps x sequences) processed by one call."""
        return self.T * self.B


#: The --smoke case: tiny, so the Triton interpreter runs it in seconds.
SMOKE = ShapeSet("smoke", "one tiny LSTM, end to end (timings mean nothing under the interpreter)",
                 (Shape("lstm", 4, 2, 16, 16),), dtypes=("fp32",), modes=MODES, peers=False)

ALL_SETS = {**SETS, SMOKE.name: SMOKE}


def cases(sets=tuple(SETS), dtypes=None, modes=None, cells=None) -> list[Case]:
    """Every case of the named sets, in set order, de-duplicated (a case in two sets lists both).

    ``dtypes`` / ``modes`` replace each set's defaults when given; ``cells`` filters. A decode case is the
    shape at T=1; a 2-layer or bidirectional shape has no decode step and is left out of that mode.
    """
    out: dict[Case, Case] = {}
    for name in sets:
        for shape, dtype, mode in ALL_SETS[name].runs(dtypes, modes, cells):
            c = Case(shape.cell, 1 if mode == "decode" else shape.T, shape.B, shape.I, shape.H, shape.L,
                     shape.bidirectional, dtype, mode, (name,), episode=shape.episode)
            out[c] = replace(out[c], sets=out[c].sets + (name,)) if c in out else c
    return list(out.values())


def gemm_flops(case: Case) -> int:
    """GEMM FLOPs of one call of ``case``: the number behind "achieved TFLOP/s".

    Per layer l and direction, forward: the input projection ``X @ W_ih^T`` (2*T*B*I_l*G*H, with I_0 = I and
    I_l = D*H after) plus the recurrent matmul ``h @ W_hh^T`` at every step (2*T*B*H*G*H). Pointwise gate
    math, bias adds and the reductions of the bias gradients are not counted. Forward+backward counts the
    backward as twice the forward (one GEMM for the data gradients, one for the weight gradients), so
    3x in all. A decode case is its forward at T=1. Resets change no matmul: a case with them counts the same.
    """
    G = CELLS[case.cell].gates
    flops = 0
    for layer in range(case.L):
        in_size = case.I if layer == 0 else case.D * case.H
        flops += case.D * 2 * case.T * case.B * G * case.H * (in_size + case.H)
    return 3 * flops if case.mode == "fwdbwd" else flops
