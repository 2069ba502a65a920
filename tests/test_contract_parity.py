"""The torch.nn contract in float64: padded and packed sequences, LSTM projections, every gradient; the
Cells; double backward."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from _helpers import MODULES, assert_close, kernels_ran

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
F64 = torch.float64
I, H, P, B, T = 3, 5, 2, 3, 4
LENGTHS = [2, 4, 1]  # unsorted on purpose; max equals T


def _pair(cell, **kwargs):
    if cell.startswith("rnn_"):
        kwargs["nonlinearity"] = cell[4:]
    ref = getattr(torch.nn, MODULES[cell])(I, H, dtype=F64, **kwargs)
    fused = getattr(fusedrnn, MODULES[cell])(I, H, dtype=F64, **kwargs)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def _states(out):
    return list(out) if isinstance(out, tuple) else [out]


MATRIX = [(c, b, d, bf, L, kind, p)
          for c, b, d, bf, L, kind in itertools.product(CELLS, [True, False], [False, True], [False, True], [1, 2],
                                                        ["padded", "sorted", "unsorted"])
          for p in ([0, P] if c == "lstm" else [0])]


@pytest.mark.parametrize("cell,bias,bidirectional,batch_first,layers,kind,proj", MATRIX)
def test_float64_matrix(cell, bias, bidirectional, batch_first, layers, kind, proj):
    torch.manual_seed(0)
    kwargs = dict(bias=bias, bidirectional=bidirectional, batch_first=batch_first, num_layers=layers)
    if proj:
        kwargs["proj_size"] = proj
    ref, fused = _pair(cell, **kwargs)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=F64, requires_grad=True)
    n = layers * (2 if bidirectional else 1)
    h0 = torch.randn(n, B, proj or H, dtype=F64, requires_grad=True)
    c0 = torch.randn(n, B, H, dtype=F64, requires_grad=True)
    hx = (h0, c0) if cell == "lstm" else h0
    lengths = sorted(LENGTHS, reverse=True) if kind == "sorted" else LENGTHS

    def run(module):
        inp = x if kind == "padded" else pack_padded_sequence(x, lengths, batch_first=batch_first,
                                                              enforce_sorted=kind == "sorted")
        out, states = module(inp, hx)
        out = out if kind == "padded" else out.data
        torch.manual_seed(7)
        loss = (out * torch.randn(out.shape, dtype=F64)).sum()
        loss = loss + sum((s * torch.randn(s.shape, dtype=F64)).sum() for s in _states(states))
        leaves = [x, h0] + ([c0] if cell == "lstm" else []) + list(module.parameters())
        return out, _states(states), torch.autograd.grad(loss, leaves)

    r_out, r_states, r_grads = run(ref)
    with kernels_ran("step_fwd", "step_bwd"):
        f_out, f_states, f_grads = run(fused)
    assert_close("output", r_out, f_out, F64)
    for i, (r, f) in enumerate(zip(r_states, f_states)):
        assert_close(f"state[{i}]", r, f, F64)
    names = ["input", "h0"] + (["c0"] if cell == "lstm" else []) + [n for n, _ in ref.named_parameters()]
    for name, r, f in zip(names, r_grads, f_grads):
        assert_close(f"grad {name}", r, f, F64)


# ---- cells ------------------------------------------------------------------------------------------------

CELL_CLASSES = {"lstm": "LSTMCell", "gru": "GRUCell", "rnn_tanh": "RNNCell", "rnn_relu": "RNNCell"}


def _cell_pair(cell, dtype=F64, hidden=H, **kwargs):
    if cell.startswith("rnn_"):
        kwargs["nonlinearity"] = cell[4:]
    torch.manual_seed(0)
    ref = getattr(torch.nn, CELL_CLASSES[cell])(I, hidden, dtype=dtype, **kwargs)
    torch.manual_seed(0)
    fused = getattr(fusedrnn, CELL_CLASSES[cell])(I, hidden, dtype=dtype, **kwargs)
    return ref, fused


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("given", [True, False])
def test_cell_matches_torch(cell, bias, batched, given):
    ref, fused = _cell_pair(cell, bias=bias)
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in fused.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), fused.parameters())), "initialisation differs"
    assert repr(ref) == repr(fused).replace("fusedrnn.", "")
    shape = (B,) if batched else ()
    x = torch.randn(*shape, I, dtype=F64, requires_grad=True)
    states = [torch.randn(*shape, H, dtype=F64, requires_grad=True) for _ in range(2 if cell == "lstm" else 1)]
    hx = (tuple(states) if cell == "lstm" else states[0]) if given else None

    def run(module):
        out = _states(module(x, hx))
        torch.manual_seed(3)
        loss = sum((o * torch.randn(o.shape, dtype=F64)).sum() for o in out)
        leaves = [x] + (states if given else []) + list(module.parameters())
        return out, torch.autograd.grad(loss, leaves)

    r_out, r_grads = run(ref)
    before = fusedrnn.launch.launch_counts["step_fwd"]
    with kernels_ran("step_fwd", "step_bwd"):
        f_out, f_grads = run(fused)
    assert fusedrnn.launch.launch_counts["step_fwd"] - before == 1, "a cell call must be one kernel launch"
    for i, (r, f) in enumerate(zip(r_out, f_out)):
        assert_close(f"out[{i}]", r, f, F64)
    for i, (r, f) in enumerate(zip(r_grads, f_grads)):
        assert_close(f"grad[{i}]", r, f, F64)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_modes_and_empty(cell):
    """No dependence on train/eval; hidden_size=0 and batch 0 behave as in torch.nn."""
    ref, fused = _cell_pair(cell)
    x = torch.randn(B, I, dtype=F64)
    with torch.no_grad(), kernels_ran("step_fwd"):
        fused.train()
        a = _states(fused(x))
        fused.eval()
        b = _states(fused(x))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    for hidden, batch in ((0, B), (H, 0)):
        ref0, fused0 = _cell_pair(cell, hidden=hidden)
        x0 = torch.randn(batch, I, dtype=F64, requires_grad=True)
        r, f = _states(ref0(x0)), _states(fused0(x0))
        assert [t.shape for t in r] == [t.shape for t in f]
        sum(t.sum() for t in f).backward()
        assert x0.grad.shape == x0.shape


@pytest.mark.parametrize("cell", CELLS)
def test_cell_errors_match_torch(cell):
    ref, fused = _cell_pair(cell)
    two = cell == "lstm"

    def hx(batch, size):
        h = torch.zeros(batch, size, dtype=F64)
        return (h, h) if two else h

    cases = [
        (torch.randn(B, I + 1, dtype=F64), None),          # input size
        (torch.randn(B, I, dtype=F64), hx(B + 1, H)),      # batch
        (torch.randn(B, I, dtype=F64), hx(B, H + 1)),      # hidden size
        (torch.randn(B, I, 1, dtype=F64), None),           # input rank
        (torch.randn(I, dtype=F64), hx(1, H)),             # unbatched input, batched hx
        (torch.randn(B, I, dtype=torch.float32), None),    # dtype
    ]
    for x, h in cases:
        with pytest.raises(Exception) as r:
            ref(x, h)
        with pytest.raises(Exception) as f:
            fused(x, h)
        assert type(f.value) is type(r.value), (x.shape, type(r.value), type(f.value))
        assert str(f.value) == str(r.value)


# ---- double backward --------------------------------------------------------------------------------------

def _fn_module(cell, **kwargs):
    ref, fused = _pair(cell, **kwargs)
    names = fused._flat_weights_names
    lstm = cell == "lstm"

    def fn(x, h0, *ws):
        for n, w in zip(names, ws):
            setattr(fused, n, w)
        hx = (h0, torch.ones_like(h0[..., :1]).expand(*h0.shape[:-1], H).contiguous() * 0.5) if lstm else h0
        out, states = fused(x, hx)
        return (out, *_states(states))

    weights = [getattr(fused, n).detach().clone().requires_grad_() for n in names]
    for n in names:
        delattr(fused, n)
    return fn, weights


# Second derivatives run through the differentiable recomputation (fusedrnn.reference): the forward is the
# fused kernel, the backward of the backward is torch's.
@pytest.mark.parametrize("cell,proj", [("lstm", 0), ("lstm", P), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0)])
def test_gradgradcheck_modules(cell, proj):
    kwargs = {"proj_size": proj} if proj else {}
    fn, weights = _fn_module(cell, **kwargs)
    torch.manual_seed(1)
    x = torch.randn(2, 1, I, dtype=F64, requires_grad=True)
    h0 = torch.randn(1, 1, proj or H, dtype=F64, requires_grad=True)
    with kernels_ran("step_fwd"):
        assert torch.autograd.gradgradcheck(fn, (x, h0, *weights), fast_mode=True)


@pytest.mark.parametrize("cell", CELLS)
def test_gradgradcheck_cells(cell):
    _, fused = _cell_pair(cell)
    weights = [p.detach().clone().requires_grad_() for p in fused.parameters()]
    x = torch.randn(2, I, dtype=F64, requires_grad=True)
    h = torch.randn(2, H, dtype=F64, requires_grad=True)
    if cell == "lstm":
        c = torch.randn(2, H, dtype=F64, requires_grad=True)
        args, fn = (x, h, c, *weights), lambda x, h, c, *w: fusedrnn.fused_lstm_cell(x, (h, c), *w)
    elif cell == "gru":
        args, fn = (x, h, *weights), fusedrnn.fused_gru_cell
    else:
        args, fn = (x, h, *weights), lambda x, h, *w: fusedrnn.fused_rnn_cell(x, h, *w, nonlinearity=cell[4:])
    with kernels_ran("step_fwd"):
        assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)
