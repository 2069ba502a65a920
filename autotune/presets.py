"""Shape presets of the tuning CLI: the benchmark shape sets, as tuning problems (one per key).

The benchmark's shape sets live in ``bench/registry.py`` (not installed). In a checkout (an editable install) that
file is loaded by path and its sets are the presets, exactly; an installed fusedrnn uses the copy in ``MIRROR``
(the sets as of the benchmark suite's first version; ``tests/test_autotune.py`` checks that they agree).

A benchmark case maps to kernels by mode: "fwd" (a sequence, T > 1) to step_fwd with I=0 and tiled_fwd with
I = the input size (inference fuses the input projection into the batch-tiled kernel), "fwdbwd" to step_fwd and
step_bwd (K = G*H) and their tiled twins (I=0), "decode" (one step, the input projection fused) to step_fwd with
I = the input size. The
sequence length, the layer count and the direction never enter a key; batches map to buckets
(``keys.batch_bucket``), so B=1..16 are one key.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .keys import batch_bucket
from .spaces import CELL_SHAPES, Problem

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
#: Dtypes of explicit shapes when none are given: the benchmark's (fp32 with TF32 off, torch's default).
DTYPES = ("float16", "bfloat16", "float32")
DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32",
                 "tf32": "float32-tf32", "fp32-tf32": "float32-tf32", "fp64": "float64", "double": "float64"}
MODES = ("fwd", "bwd", "decode")
_ALL = ("fp32", "tf32", "fp16", "bf16")
_LOW = ("fp32", "fp16", "bf16")


def _lstm(B, H, cell="lstm"):
    return (cell, B, H, H)  # (cell, B, I, H)


#: name -> (description, shapes (cell, B, I, H), benchmark dtypes, benchmark modes); bench/registry.py's sets.
MIRROR = {
    "fastrnns": ("fastrnns default: T=100, B=64, I=H=512", (_lstm(64, 512),), _ALL, ("fwd", "fwdbwd", "decode")),
    "persistent": ("the Persistent-RNN case: B=16, T=1024, I=H=768", (_lstm(16, 768),), _ALL,
                   ("fwd", "fwdbwd", "decode")),
    "small_batch": ("small-batch inference: B in 1..8, H in 256..1024",
                    tuple(_lstm(B, H) for H in (256, 512, 1024) for B in (1, 2, 4, 8)), _LOW, ("fwd", "decode")),
    "gru_rnn": ("GRU and tanh-RNN at the fastrnns and persistent shapes",
                tuple(_lstm(B, H, c) for c in ("gru", "rnn_tanh") for B, H in ((64, 512), (16, 768))), _ALL,
                ("fwd", "fwdbwd", "decode")),
    "deep_bidir": ("2-layer bidirectional LSTM at the fastrnns shape", (_lstm(64, 512),), _ALL, ("fwd", "fwdbwd")),
    "h_sweep": ("hidden-size sweep: H from 64 to 2048 at B=32", tuple(_lstm(32, 64 * 2 ** k) for k in range(6)),
                _LOW, ("fwd", "fwdbwd")),
    "b_sweep": ("batch sweep: B from 1 to 256 at H=512", tuple(_lstm(2 ** k, 512) for k in range(9)), _LOW,
                ("fwd", "fwdbwd")),
    "long_seq": ("long sequences: T from 1k to 64k, B=4, H=512", (_lstm(4, 512),), ("fp16", "bf16"),
                 ("fwd", "fwdbwd")),
}
#: Presets of this module only: a quick check of the tuner on a GPU (four keys: step and tiled, fwd and bwd).
EXTRA = {"smoke": ("one LSTM shape, fp16, B=64, H=512: a quick check of the tuner", (_lstm(64, 512),), ("fp16",),
                   ("fwdbwd",))}
_BENCH_DTYPES = {"fp32": "float32", "tf32": "float32-tf32", "fp16": "float16", "bf16": "bfloat16"}
_registry = None


def bench_registry():
    """bench/registry.py of the checkout this package runs from (loaded by path), or None."""
    global _registry
    if _registry is None:
        path = Path(__file__).resolve().parent.parent / "bench" / "registry.py"
        _registry = False
        if path.is_file():
            try:
                spec = importlib.util.spec_from_file_location("_fusedrnn_bench_registry", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module  # dataclasses need their module registered
                spec.loader.exec_module(module)
                if hasattr(module, "SETS") and hasattr(module, "cases"):
                    _registry = module
            except Exception:  # noqa: BLE001 - a broken checkout: the mirror still works
                _registry = False
    return _registry or None


def shape_sets() -> dict:
    """name -> (description, [(cell, B, I, H, bench dtype, mode)]) of the benchmark sets, in priority order."""
    reg = bench_registry()
    out = {}
    if reg is not None:
        for name, s in reg.SETS.items():
            out[name] = (s.description, [(c.cell, c.B, c.I, c.H, c.dtype, c.mode) for c in reg.cases((name,))])
    else:
        for name, (doc, shapes, dtypes, modes) in MIRROR.items():
            out[name] = (doc, [(cell, B, I, H, d, m) for cell, B, I, H in shapes for d in dtypes for m in modes])
    for name, (doc, shapes, dtypes, modes) in EXTRA.items():
        out[name] = (doc, [(cell, B, I, H, d, m) for cell, B, I, H in shapes for d in dtypes for m in modes])
    return out


def dtype_name(text: str) -> str:
    name = DTYPE_ALIASES.get(text.lower(), text.lower())
    if name not in ("float16", "bfloat16", "float32", "float32-tf32", "float64"):
        raise ValueError(f"unknown dtype {text!r}")
    return name


def problems_of(cell: str, dtype: str, H: int, B: int, modes, I: int = 0) -> list:  # noqa: E741
    """The tuning problems (one per key) of one layer shape; modes "fwd", "bwd", "fwdbwd", "decode"."""
    G = CELL_SHAPES[cell][0]
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
    sets = shape_sets()
    order = []
    for name in names:
        order.extend([n for n in sets if n not in EXTRA] if name == "bench" else [name])
    out, seen = [], set()
    for name in order:
        if name not in sets:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(['bench', *sets])}")
        for cell, B, I, H, bench_dtype, mode in sets[name][1]:  # noqa: E741
            dtype = _BENCH_DTYPES[bench_dtype]
            if (cells and cell not in cells) or (dtypes and dtype not in dtypes):
                continue
            for p in problems_of(cell, dtype, H, B, (mode,), I):
                if p not in seen:
                    seen.add(p)
                    out.append(p)
    return out
