"""Test setup: one device for every kernel test, poisoned allocations, helpers importable.

Where CUDA exists the kernels run compiled on CUDA tensors; elsewhere they run on CPU tensors under the Triton
interpreter (``TRITON_INTERPRET=1``, set here before triton is imported). Every test runs inside
``torch.device(DEVICE)`` (``_helpers.DEVICE``), so the tensors and modules it makes without naming a device are on
that device: the same test is a compiled GPU test on a GPU machine and an interpreter test elsewhere. Tests about
the CPU path or the interpreter themselves are marked ``@pytest.mark.cpu_only("why")`` and skip on a GPU machine;
GPU-only tests skip elsewhere with their reason. The helpers (tests/ only) are importable; fusedrnn itself comes
from the installed package."""

import os
import sys

import torch

if not torch.cuda.is_available():
    # Must happen before triton is first imported (it decides at @jit time); importing torch does not import it.
    assert "triton" not in sys.modules, "triton was imported before tests/conftest.py could set TRITON_INTERPRET"
    os.environ["TRITON_INTERPRET"] = "1"

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

from _helpers import DEVICE  # noqa: E402

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


@pytest.fixture(autouse=True)
def on_device(request):
    """Run the test with torch's default device set to DEVICE (CPU tests: skipped where CUDA exists)."""
    marker = request.node.get_closest_marker("cpu_only")
    if marker is not None and DEVICE.type != "cpu":
        pytest.skip(f"about the CPU path or the interpreter: {marker.args[0] if marker.args else ''}")
    if DEVICE.type == "cpu":
        yield  # already torch's default; a device context would intercept every torch call (slower)
        return
    with torch.device(DEVICE):
        yield


@pytest.fixture
def device():
    """The device of the kernel tests: cuda (compiled kernels) where it exists, else cpu (interpreter)."""
    return DEVICE


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu_only(reason): about the CPU path or the Triton interpreter; skipped "
                                       "where CUDA exists")


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run first: pytest-xdist hands tests out in collection order, so the longest ones
    overlap with everything else instead of trailing at the end of the run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
