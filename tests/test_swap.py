"""Swapping torch.nn's recurrent classes for fusedrnn's for a whole program (``torch.nn.LSTM = fusedrnn.LSTM``, the
way patching libraries do it): forward, backward and torch.nn's errors still work, for all six classes. Before
fusedrnn held torch's own classes from import on, every LSTM forward after such a swap ended in RecursionError."""

import pytest
import torch
from torch import nn

import fusedrnn
from _helpers import assert_close
from fusedrnn.modules import _TORCH

F64 = torch.float64
T, B, I, H = 3, 2, 5, 4
CLASSES = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")


@pytest.fixture
def swapped(monkeypatch):
    """torch.nn.X and torch.nn.modules.rnn.X are fusedrnn.X for the test."""
    for name in CLASSES:
        monkeypatch.setattr(nn, name, getattr(fusedrnn, name))
        monkeypatch.setattr(nn.modules.rnn, name, getattr(fusedrnn, name))
    yield


def _states(out):
    return [t for t in (out if isinstance(out, tuple) else (out,)) for t in (t if isinstance(t, tuple) else (t,))]


@pytest.mark.parametrize("name", CLASSES)
def test_swapped_class_runs_and_errs_as_torch(name, swapped):
    torch.manual_seed(0)
    model = getattr(nn, name)(I, H, dtype=F64)
    assert type(model) is getattr(fusedrnn, name) and fusedrnn.is_fused(model)
    ref = _TORCH[name](I, H, dtype=F64)
    ref.load_state_dict(model.state_dict())
    x = torch.randn((B, I) if name.endswith("Cell") else (T, B, I), dtype=F64)
    outs, ref_outs = _states(model(x)), _states(ref(x))
    for k, (got, want) in enumerate(zip(outs, ref_outs, strict=True)):
        assert_close(f"{name} output {k}", want, got, F64)
    sum(o.sum() for o in outs).backward()
    sum(o.sum() for o in ref_outs).backward()
    for (n, p), r in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert_close(f"{name} grad of {n}", r.grad, p.grad, F64)
    bad = torch.randn(*x.shape[:-1], I + 1, dtype=F64)
    with pytest.raises(Exception) as want:
        ref(bad)
    with pytest.raises(type(want.value)) as got:
        model(bad)
    assert str(got.value) == str(want.value)
