"""Fused modules against torch.nn with copied weights: outputs, final states and every gradient."""

import itertools

import pytest
import torch

from _helpers import assert_close, kernels_ran, make_pair

from fusedrnn import cells

CELLS = list(cells.CELLS)  # every cell of the table
INPUT, HIDDEN = 5, 6  # input_size != hidden_size, hidden not a power of two


def run_and_grad(module, x, hx, cell):
    """Forward, then backward of a loss that touches output and every final state with distinct weights."""
    out, hn = module(x, hx)
    states = list(hn) if cell == "lstm" else [hn]
    torch.manual_seed(1234)
    loss = (out * torch.randn(out.shape)).sum() + sum((s * torch.randn(s.shape)).sum() for s in states)
    inputs = [x] + ([t for t in hx] if isinstance(hx, tuple) else [hx] if hx is not None else [])
    grads = torch.autograd.grad(loss, inputs + list(module.parameters()))
    return out, states, grads


def compare(cell, layers, bidirectional, batch_first, bias, batch, seq, dtype=torch.float32, give_hx=True, seed=0):
    torch.manual_seed(seed)
    ref, fused = make_pair(cell, INPUT, HIDDEN, dtype=dtype, num_layers=layers, bidirectional=bidirectional,
                           batch_first=batch_first, bias=bias)
    shape = (batch, seq, INPUT) if batch_first else (seq, batch, INPUT)
    x = torch.randn(shape, dtype=dtype)
    states = layers * (2 if bidirectional else 1)
    hx = None
    if give_hx:
        hx = tuple(torch.randn(states, batch, HIDDEN, dtype=dtype) for _ in range(2 if cell == "lstm" else 1))
        hx = hx if cell == "lstm" else hx[0]

    def leaf(t):
        return t.detach().clone().requires_grad_()

    rx, fx = leaf(x), leaf(x)
    rh = fh = None
    if hx is not None:
        rh = tuple(leaf(t) for t in hx) if cell == "lstm" else leaf(hx)
        fh = tuple(leaf(t) for t in hx) if cell == "lstm" else leaf(hx)
    r_out, r_states, r_grads = run_and_grad(ref, rx, rh, cell)
    with kernels_ran("step_fwd", "step_bwd"):
        f_out, f_states, f_grads = run_and_grad(fused, fx, fh, cell)

    assert_close("output", r_out, f_out, dtype)
    for i, (r, f) in enumerate(zip(r_states, f_states)):
        assert_close(f"state[{i}]", r, f, dtype)
    names = ["input"] + ([f"hx[{i}]" for i in range(len(r_states))] if hx is not None else [])
    names += [n for n, _ in ref.named_parameters()]
    assert len(r_grads) == len(f_grads) == len(names)
    for name, r, f in zip(names, r_grads, f_grads):
        assert_close(f"grad {name}", r, f, dtype)


MATRIX = list(itertools.product(CELLS, [1, 2], [False, True], [False, True], [True, False], [1, 3], [1, 7]))


@pytest.mark.parametrize("cell,layers,bidirectional,batch_first,bias,batch,seq", MATRIX)
def test_matches_torch_nn(cell, layers, bidirectional, batch_first, bias, batch, seq):
    compare(cell, layers, bidirectional, batch_first, bias, batch, seq)


@pytest.mark.parametrize("cell", CELLS)
def test_hx_none(cell):
    compare(cell, 2, True, False, True, 3, 5, give_hx=False)


@pytest.mark.parametrize("cell", CELLS)
def test_float64(cell):
    compare(cell, 2, True, True, True, 3, 4, dtype=torch.float64)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched(cell, batch_first):
    torch.manual_seed(0)
    ref, fused = make_pair(cell, INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(4, INPUT)
    h = torch.randn(4, HIDDEN)
    hx = (h, torch.randn(4, HIDDEN)) if cell == "lstm" else h
    for state in (None, hx):
        r_out, r_hn = ref(x, state)
        with kernels_ran("step_fwd"):
            f_out, f_hn = fused(x, state)
        assert_close("output", r_out, f_out, torch.float32)
        for r, f in zip(r_hn if cell == "lstm" else [r_hn], f_hn if cell == "lstm" else [f_hn]):
            assert_close("state", r, f, torch.float32)


@pytest.mark.parametrize("cell", CELLS)
def test_inference_saves_nothing(cell):
    """Under no_grad the forward keeps no per-step activations but gives the same numbers."""
    torch.manual_seed(0)
    ref, fused = make_pair(cell, INPUT, HIDDEN, num_layers=2)
    x = torch.randn(7, 3, INPUT)
    with torch.no_grad():
        r_out, _ = ref(x)
        with kernels_ran("step_fwd"):
            f_out, _ = fused(x)
    assert not f_out.requires_grad
    assert_close("output", r_out, f_out, torch.float32)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_strides_match_torch(cell, bidirectional):
    """batch_first output is a time-major view in torch.nn; a drop-in gives the same strides."""
    ref, fused = make_pair(cell, INPUT, HIDDEN, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(3, 4, INPUT)
    with torch.no_grad():
        assert fused(x)[0].stride() == ref(x)[0].stride()
