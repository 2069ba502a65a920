"""Test setup: run the real Triton kernels under the interpreter where there is no GPU, poison fresh
allocations with NaN, and make the test helpers importable (tests/ only: fusedrnn itself must come from the
installed package)."""

import os
import sys

import torch

if not torch.cuda.is_available():
    # Must happen before triton is first imported (it decides at @jit time); importing torch does not import it.
    assert "triton" not in sys.modules, "triton was imported before tests/conftest.py could set TRITON_INTERPRET"
    os.environ["TRITON_INTERPRET"] = "1"

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

if os.environ.get("TRITON_INTERPRET") == "1" and os.environ.get("FUSEDRNN_PLAIN_INTERPRETER") != "1":
    import _interpreter  # noqa: E402

    _interpreter.install()  # the language patched once per launch (tests/_interpreter.py)

_NAN_FACTORIES = ("empty", "empty_like", "empty_strided")


def _poison(t):
    if isinstance(t, torch.Tensor) and t.numel() and t.device.type != "meta":
        with torch.no_grad():
            if t.is_floating_point():
                t.fill_(float("nan"))
            elif not t.is_complex() and t.dtype != torch.bool:
                t.fill_(torch.iinfo(t.dtype).max)
    return t


@pytest.fixture(autouse=True)
def nan_poisoned_allocations(monkeypatch):
    """Every torch.empty* / Tensor.new_empty allocation comes back filled with NaN (ints: their max), so a
    kernel that reads memory nobody wrote produces NaN instead of passing by luck."""
    for name in _NAN_FACTORIES:
        original = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _f=original, **k: _poison(_f(*a, **k)))
    original_new_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: _poison(original_new_empty(self, *a, **k)))
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run first: pytest-xdist hands tests out in collection order, so the longest ones
    overlap with everything else instead of trailing at the end of the run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
