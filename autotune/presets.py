"""The benchmark shape sets, and the tuning problems (one per key) of the tuning CLI's presets.

``SETS`` is the one description of the shapes the benchmarks measure. It lives here, in the installed package,
because ``python -m fusedrnn.autotune --preset fastrnns`` must work after ``pip install fusedrnn`` (bench/ is not
installed); ``bench/registry.py`` builds its cases from these sets (bench imports the package, never the other
way). Cells come from ``fusedrnn.cells``.

Legend: T time steps, B batch, I input size, H hidden size, L layers. A set's dtypes are the benchmark's names
(``SET_DTYPES``: "fp32" with TF32 off, "tf32", "fp16", "bf16"), its modes the benchmark's (``SET_MODES``: "fwd",
"fwdbwd", "decode" = one step, T=1).

A benchmark case maps to kernels by mode: "fwd" (a sequence, T > 1) to step_fwd with I=0 and tiled_fwd with
I = the input size (inference fuses the input projection into the batch-tiled kernel), "fwdbwd" to step_fwd and
step_bwd (K = G*H) and their tiled twins (I=0), "decode" (one step, the input projection fused) to step_fwd with
I = the input size. The sequence length, the layer count and the direction never enter a key; batches map to
buckets (``keys.batch_bucket``), so B=1..16 are one key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fusedrnn.cells import CELLS as _CELL_TABLE

from .keys import batch_bucket
from .spaces import Problem

#: The dtypes and modes a shape set names (the benchmark's vocabulary).
SET_DTYPES = ("fp32", "tf32", "fp16", "bf16")
SET_MODES = ("fwd", "fwdbwd", "decode")
#: Benchmark dtype -> key dtype.
KEY_DTYPES = {"fp32": "float32", "tf32": "float32-tf32", "fp16": "float16", "bf16": "bfloat16"}

CELLS = tuple(_CELL_TABLE)
#: Dtypes of explicit shapes when none are given: the benchmark's (fp32 with TF32 off, torch's default).
DTYPES = ("float16", "bfloat16", "float32")
DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32",
                 "tf32": "float32-tf32", "fp32-tf32": "float32-tf32", "fp64": "float64", "double": "float64"}
#: Modes of explicit shapes on the tuning command line.
MODES = ("fwd", "bwd", "decode")


@dataclass(frozen=True)
class Shape:
    cell: str
    T: int
    B: int
    I: int  # noqa: E741 - the legend's name
    H: int
    L: int = 1
    bidirectional: bool = False
    #: Benchmarks only: the mean length of the episodes inside each row, whose starts are given as ``reset=``
    #: (lengths drawn geometrically: bench/measure.py ``episode_starts``); 0, no resets.
    episode: int = 0

    @property
    def has_decode(self) -> bool:
        """A decode step is one step of one layer in one direction: deep or bidirectional shapes, and shapes with
        resets inside the sequence, have none."""
        return self.L == 1 and not self.bidirectional and not self.episode


@dataclass(frozen=True)
class ShapeSet:
    name: str
    description: str
    shapes: tuple[Shape, ...]
    dtypes: tuple[str, ...] = SET_DTYPES
    modes: tuple[str, ...] = SET_MODES
    #: Benchmarks only: whether the peer providers (torch.nn without cuDNN, torch.compile, FlashRNN, haste) run
    #: here by default. The sweeps compare fusedrnn with cuDNN only, to keep the full suite inside a GPU session.
    peers: bool = True
    x: str = "shape"  # benchmarks only: the swept quantity, for plots: "T", "B", "H" or "shape"

    def runs(self, dtypes=None, modes=None, cells=None):
        """(shape, dtype, mode) of the set, in order: ``dtypes`` / ``modes`` replace the set's own when given,
        ``cells`` filters; a shape without a decode step (``Shape.has_decode``) is left out of that mode."""
        for shape in self.shapes:
            if cells is not None and shape.cell not in cells:
                continue
            for dtype in (dtypes or self.dtypes):
                for mode in (modes or self.modes):
                    if mode != "decode" or shape.has_decode:
                        yield shape, dtype, mode


def _lstm(T, B, H, I=None, **kw):  # noqa: E741
    return Shape("lstm", T, B, H if I is None else I, H, **kw)


FASTRNNS = _lstm(100, 64, 512)
PERSISTENT = _lstm(1024, 16, 768)
ROLLOUT = _lstm(1024, 64, 512)  # a reinforcement-learning rollout: 64 environments x 1024 steps

#: The benchmark's shape sets, in priority order: a run cut short by --max-minutes has the first sets (the sweeps
#: and the long sequences, the most expensive, come last).
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
    ShapeSet("resets", "RL rollouts: B=64, T=1024, H=512 with episodes of geometric length (mean 100) inside each "
             "row, given to fusedrnn as reset= and to torch.nn as the split segments, packed (what its users do); "
             "the same shape without resets is the cost of the flag",
             (replace(ROLLOUT, episode=100), ROLLOUT), dtypes=("bf16", "fp16"), modes=("fwd", "fwdbwd"),
             peers=False),
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

#: The tuning presets: the benchmark's sets, and a quick check of the tuner on a GPU (four keys: step and tiled,
#: fwd and bwd). Not the benchmark's "smoke" set (bench/registry.py), a tiny shape for the interpreter.
PRESETS: dict[str, ShapeSet] = {**SETS, "smoke": ShapeSet(
    "smoke", "one LSTM shape, fp16, B=64, H=512: a quick check of the tuner", (FASTRNNS,), dtypes=("fp16",),
    modes=("fwdbwd",), peers=False)}


def dtype_name(text: str) -> str:
    name = DTYPE_ALIASES.get(text.lower(), text.lower())
    if name not in ("float16", "bfloat16", "float32", "float32-tf32", "float64"):
        raise ValueError(f"unknown dtype {text!r}")
    return name


def problems_of(cell: str, dtype: str, H: int, B: int, modes, I: int = 0) -> list:  # noqa: E741
    """The tuning problems (one per key) of one layer shape; modes "fwd", "bwd", "fwdbwd", "decode"."""
    G = _CELL_TABLE[cell].gates
    bucket = batch_bucket(B)
    out = []
    for mode in modes:
        if mode in ("fwd", "fwdbwd"):
            out.append(Problem("step_fwd", cell, dtype, H, H, bucket))
        if mode == "fwd":
            out.append(Problem("tiled_fwd", cell, dtype, H, H, bucket, I or H))
        if mode == "fwdbwd":
            out.append(Problem("tiled_fwd", cell, dtype, H, H, bucket))
        if mode in ("bwd", "fwdbwd"):
            out.append(Problem("step_bwd", cell, dtype, H, G * H, bucket))
            out.append(Problem("tiled_bwd", cell, dtype, H, G * H, bucket))
        if mode == "decode":
            out.append(Problem("step_fwd", cell, dtype, H, H, bucket, I or H))
        if mode not in ("fwd", "bwd", "fwdbwd", "decode"):
            raise ValueError(f"unknown mode {mode!r}; modes are {MODES}")
    return out


def expand(names, cells=None, dtypes=None) -> list:
    """Problems of presets (``names``; "bench" is every benchmark set), deduplicated, in the sets' priority
    order. ``cells`` and ``dtypes`` (key dtype names) filter."""
    order = []
    for name in names:
        order.extend(SETS if name == "bench" else [name])
    out, seen = [], set()
    for name in order:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(['bench', *PRESETS])}")
        for shape, set_dtype, mode in PRESETS[name].runs(cells=cells):
            dtype = KEY_DTYPES[set_dtype]
            if dtypes and dtype not in dtypes:
                continue
            for p in problems_of(shape.cell, dtype, shape.H, shape.B, (mode,), shape.I):
                if p not in seen:
                    seen.add(p)
                    out.append(p)
    return out
