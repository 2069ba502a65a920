"""Shared test helpers: tolerances, comparison, module pairs, proof that the kernels ran."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
from pathlib import Path

import torch

import fusedrnn
from fusedrnn import launch

# Absolute and relative tolerance per dtype of the fused run. fp32 and fp64 are compared with torch.nn in the
# same dtype; fp16/bf16 runs are compared with an fp32 run of the same (rounded) weights and inputs, so the
# bound covers the rounding of h, of the stored gradients and of the GEMM outputs to 8 (bf16) or 11 (fp16)
# mantissa bits over T steps and L layers. Documented in the README.
TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=2e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=6e-2, rtol=4e-2),
}

MODULES = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


@functools.lru_cache(maxsize=None)
def torch_cpu_lstm_bf16_runs() -> bool:
    """Whether torch's own dense CPU LSTM runs under torch.autocast("cpu", bfloat16): it takes oneDNN's bf16 LSTM
    there, which fails on CPUs without bf16 support ("could not create a primitive descriptor for the LSTM forward
    propagation primitive"; seen on an AMD EPYC without AVX-512). Tests that compare with it skip there."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        try:
            torch.nn.LSTM(2, 2)(torch.randn(2, 1, 2))
        except RuntimeError as e:
            if "primitive descriptor" in str(e):
                return False
            raise
    return True

#: Where the kernel tests run (conftest.py makes it torch's default device in every test): CUDA with compiled
#: kernels where it exists, else the CPU under the Triton interpreter.
ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, dtype: torch.dtype) -> None:
    """Compare ``out`` (any dtype) with ``ref`` under the tolerance of ``dtype``, saying where they differ."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    out, ref = out.detach().to(torch.float64), ref.detach().to(torch.float64)
    assert not torch.isnan(out).any(), f"{name}: NaN in the result (unwritten memory read?)"
    tol = TOL[dtype]
    bad = (out - ref).abs() > tol["atol"] + tol["rtol"] * ref.abs()
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        err = (out - ref).abs().max().item()
        raise AssertionError(f"{name}: {int(bad.sum())}/{bad.numel()} elements differ beyond {tol} (max abs err "
                             f"{err:.3e}); first at {idx}: got {out[idx].item():.6g}, expected {ref[idx].item():.6g}")


def make_pair(cell: str, input_size: int, hidden_size: int, dtype=torch.float32, **kwargs):
    """(torch.nn module, fusedrnn module) of the same cell with identical weights."""
    if cell.startswith("rnn_"):
        kwargs["nonlinearity"] = cell[len("rnn_"):]
    ref = getattr(torch.nn, MODULES[cell])(input_size, hidden_size, dtype=dtype, **kwargs)
    fused = getattr(fusedrnn, MODULES[cell])(input_size, hidden_size, dtype=dtype, **kwargs)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


@contextlib.contextmanager
def kernels_ran(*names: str):
    """Run the body on the Triton backend and fail unless each named kernel launched in it."""
    before = {n: launch.launch_counts[n] for n in names}
    with fusedrnn.use_backend("triton"):
        yield
    for n in names:
        assert launch.launch_counts[n] > before[n], f"Triton kernel {n} did not run (silent fallback?)"


def load_bench():
    """bench/ is not installed and the tests import with --import-mode=importlib: load it by path."""
    if "bench" not in sys.modules:
        root = Path(__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location("bench", root / "bench" / "__init__.py",
                                                      submodule_search_locations=[str(root / "bench")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = module
        spec.loader.exec_module(module)
