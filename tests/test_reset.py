"""Resets inside a sequence (``reset=``): the oracle splits every row at its resets and runs torch.nn on each segment
on its own (zero initial state, or hx for the segment a direction starts with), then compares outputs, final
states and every gradient with one fused pass. Every kernel (step, batch-tiled, resident and streamed cooperative,
the latter two with several programs in the threaded interpreter mode), dense, packed and unsorted, bidirectional
with 2 layers, a projection, dropout, low precision, gradcheck and double backward; bad input."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import _grid
import fusedrnn
from _helpers import assert_close, make_pair
from fusedrnn import dispatch, launch
from fusedrnn.autotune.spaces import KernelConfig

F64 = torch.float64
KERNELS = {"step": ("step_fwd", "step_bwd"), "tiled": ("tiled_fwd", "tiled_bwd"),
           "resident": ("resident_fwd", "resident_bwd"), "streamed": ("streamed_fwd", "streamed_bwd")}


def _segments(flags: list) -> list:
    starts = [0] + [t for t in range(1, len(flags)) if flags[t]]
    return list(zip(starts, starts[1:] + [len(flags)]))


def _oracle_row(ref, x, hx, flags, lstm: bool, bidirectional: bool):
    """torch.nn ``ref`` over one row (x [L, I], hx its [LD, H] states, flags [L] bool), segment by segment: the
    forward direction starts from hx in the first segment (zeros if flags[0]), the reverse direction from hx in
    the last; every other start is zeros. Returns (y [L, D*P], final states [LD, .] each)."""
    segs = _segments(flags)
    ys, last, first = [], None, None
    for i, (s, e) in enumerate(segs):
        def init(h):
            h = h.clone()
            for k in range(h.shape[0]):
                forward = k % 2 == 0 or not bidirectional
                if not ((i == 0 and not flags[0]) if forward else i == len(segs) - 1):
                    h[k] = 0
            return h[:, None]
        y, states = ref(x[s:e, None], tuple(map(init, hx)) if lstm else init(hx[0]))
        states = states if lstm else (states, )
        ys.append(y[:, 0])
        last = states if i == len(segs) - 1 else last
        first = states if i == 0 else first
    finals = []
    for a, b in zip(last, first):  # forward parts end in the last segment, reverse parts in the first
        a = a.clone()
        if bidirectional:
            a[1::2] = b[1::2]
        finals.append(a[:, 0])
    return torch.cat(ys), finals


def _oracle(ref, x, hx, reset, lengths=None, bidirectional=True):
    """(output [T, B, .] zero-padded, [h_n (, c_n)]) of torch.nn over every row split at its resets."""
    lstm = isinstance(hx, tuple)
    states = hx if lstm else (hx, )
    T, B = reset.shape
    out = torch.zeros(T, B, (2 if bidirectional else 1) * ref.hidden_size if not getattr(ref, "proj_size", 0)
                      else (2 if bidirectional else 1) * ref.proj_size, dtype=x.dtype)
    finals = [[] for _ in states]
    ys = []
    for b in range(B):
        n = T if lengths is None else lengths[b]
        y, f = _oracle_row(ref, x[:n, b], [h[:, b] for h in states], reset[:n, b].tolist(), lstm, bidirectional)
        ys.append(torch.cat([y, out[n:, b]]) if n < T else y)
        for j, s in enumerate(f):
            finals[j].append(s)
    return torch.stack(ys, 1), [torch.stack(f, 1) for f in finals]


def _weighted(out, finals, seed=5):
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for s in finals:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    return loss


def _resets(T, B, seed=3):
    """Resets at t=0 (row 0), on adjacent steps and at the last step (row 0), one mid-row (row 2), none in row 1."""
    r = torch.zeros(T, B, dtype=torch.bool)
    r[0, 0] = r[2, 0] = r[3, 0] = r[T - 1, 0] = True
    if B > 2:
        r[T // 2, 2] = True
    if B > 3:
        r[1, 3:] = True
    return r


def _case(cell, *, T=5, B=4, I=3, H=5, layers=1, bidirectional=True, lengths=None, reset=None, dtype=F64, **kw):
    torch.manual_seed(0)
    ref, fused = make_pair(cell, I, H, dtype=F64, num_layers=layers, bidirectional=bidirectional, **kw)
    fused = fused.to(dtype)
    D = 2 if bidirectional else 1
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    P = kw.get("proj_size") or H
    hx = [torch.randn(layers * D, B, P, dtype=F64, requires_grad=True)]
    if cell == "lstm":
        hx.append(torch.randn(layers * D, B, H, dtype=F64, requires_grad=True))
    reset = _resets(T, B) if reset is None else reset
    return ref, fused, x, hx, reset


def _fused_run(fused, x, hx, reset, lengths, dtype):
    cast = [h.to(dtype) for h in hx]
    xin = x.to(dtype)
    state = tuple(cast) if len(cast) == 2 else cast[0]
    if lengths is None:
        out, states = fused(xin, state, reset=reset)
    else:
        packed = pack_padded_sequence(xin, lengths, enforce_sorted=False)
        flags = pack_padded_sequence(reset, lengths, enforce_sorted=False).data
        out, states = fused(packed, state, reset=flags)
        out = pad_packed_sequence(out, total_length=x.shape[0])[0]
    return out, list(states) if isinstance(states, tuple) else [states]


def _compare(cell, kernel, *, dtype=F64, tol=F64, **kw):
    ref, fused, x, hx, reset = _case(cell, dtype=dtype, **kw)
    lengths = kw.get("lengths")
    with fusedrnn.use_backend("triton"), fusedrnn.use_kernel("cooperative" if kernel in ("resident", "streamed")
                                                               else kernel):
        before = {n: launch.launch_counts[n] for n in KERNELS[kernel]}
        out, finals = _fused_run(fused, x, hx, reset, lengths, dtype)
        got = torch.autograd.grad(_weighted(out, finals), [x, *hx, *fused.parameters()])
        assert all(launch.launch_counts[n] > before[n] for n in KERNELS[kernel]), "the kernel did not run"
    want_out, want_finals = _oracle(ref, x, tuple(hx) if cell == "lstm" else hx[0], reset, lengths,
                                    kw.get("bidirectional", True))
    want = torch.autograd.grad(_weighted(want_out, want_finals), [x, *hx, *ref.parameters()])
    assert_close("output", want_out, out, tol)
    for i, (w, g) in enumerate(zip(want_finals, finals)):
        assert_close(f"final state {i}", w, g, tol)
    names = ["x", *[f"hx{i}" for i in range(len(hx))], *[n for n, _ in fused.named_parameters()]]
    for name, w, g in zip(names, want, got):
        assert_close(f"grad {name}", w, g, tol)


def _plan(monkeypatch, variant, block_h=2, block_k=8):
    """Plan the cooperative kernel as ``variant`` with small tiles: several programs per batch tile (run in the
    threaded mode) and, streamed, several hidden chunks and K blocks per program."""
    plan = KernelConfig(BLOCK_B=2, BLOCK_H=block_h, BLOCK_K=block_k, num_warps=1, num_stages=1, variant=variant)
    monkeypatch.setattr(dispatch, "coop_plan", lambda *a, **k: (plan, None))


# ---- every kernel, against torch.nn on the segments -------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_step_kernels(cell):
    """Stepwise: a step's flags zero its rows' h_{t-1} and c_{t-1}; the backward passes nothing across them."""
    _compare(cell, "step", bidirectional=False)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_tiled_kernels_bidirectional(cell):
    _compare(cell, "tiled")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resident_kernels_many_programs(cell, monkeypatch):
    """Resident cooperative kernel, 3 hidden slices x 2 batch tiles, each program in a thread of its own."""
    _plan(monkeypatch, "resident", block_k=2)
    with _grid.threaded():
        _compare(cell, "resident", H=5)


def test_streamed_kernels_many_programs(monkeypatch):
    """Streamed cooperative variant: hidden chunks and K blocks per program, several programs per batch tile."""
    _plan(monkeypatch, "streamed", block_k=2)
    monkeypatch.setattr(dispatch, "coop_grid", lambda cfg, hidden, batch, sms: (2, 2))
    with _grid.threaded():
        _compare("rnn_tanh", "streamed", H=6)


def test_packed_unsorted_two_layers():
    """Packed input with unsorted lengths: the flags align with the packed rows; reverse walks each sequence from
    its own last element (never reset there)."""
    _compare("lstm", "tiled", layers=2, lengths=[5, 2, 4, 3])


def test_packed_stepwise_gru():
    _compare("gru", "step", T=4, lengths=[4, 2, 3, 1])


def test_bidirectional_two_layers_resident(monkeypatch):
    _plan(monkeypatch, "resident", block_h=4, block_k=4)
    _compare("gru", "resident", layers=2, B=3, H=4)


def test_every_row_at_once_and_the_last_step():
    reset = torch.zeros(5, 3, dtype=torch.bool)
    reset[2] = reset[4] = True
    _compare("rnn_relu", "tiled", B=3, reset=reset)


def test_projection():
    """LSTM with proj_size (stepwise: the projected h_{t-1} is what a reset zeroes)."""
    _compare("lstm", "step", bidirectional=False, T=4, B=3, proj_size=3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    """bf16 / fp16 weights and inputs against the fp64 oracle of the same (rounded) values."""
    torch.manual_seed(0)
    ref, fused = make_pair("lstm", 3, 5, dtype=F64)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(dtype).to(F64))
    fused.load_state_dict(ref.state_dict())
    fused = fused.to(dtype)
    x = torch.randn(6, 3, 3, dtype=F64).to(dtype).to(F64)
    reset = _resets(6, 3)
    with fusedrnn.use_backend("triton"), fusedrnn.use_kernel("tiled"):
        out, (h, c) = fused(x.to(dtype), reset=reset)
    hx = (torch.zeros(1, 3, 5, dtype=F64), torch.zeros(1, 3, 5, dtype=F64))
    want_out, (want_h, want_c) = _oracle(ref, x, hx, reset, bidirectional=False)
    assert_close("output", want_out, out, dtype)
    assert_close("h_n", want_h, h, dtype)
    assert_close("c_n", want_c, c, dtype)


def test_no_reset_flag_set_is_the_plain_recurrence():
    """An all-False reset gives exactly what reset=None gives."""
    torch.manual_seed(1)
    _, fused = make_pair("gru", 3, 4, dtype=F64)
    x = torch.randn(4, 2, 3, dtype=F64)
    with fusedrnn.use_backend("triton"), fusedrnn.use_kernel("tiled"):
        a = fused(x)
        b = fused(x, reset=torch.zeros(4, 2, dtype=torch.bool))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_batch_first_and_unbatched():
    torch.manual_seed(2)
    ref, fused = make_pair("rnn_tanh", 3, 4, dtype=F64, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=F64)
    reset = _resets(5, 2).t().contiguous()
    with fusedrnn.use_backend("triton"), fusedrnn.use_kernel("tiled"):
        out, h = fused(x, reset=reset)
        out1, h1 = fused(x[1], reset=reset[1])
    _, plain = make_pair("rnn_tanh", 3, 4, dtype=F64)
    plain.load_state_dict(ref.state_dict())
    want_out, (want_h, ) = _oracle(plain, x.transpose(0, 1), torch.zeros(1, 2, 4, dtype=F64), reset.t(),
                                   bidirectional=False)
    assert_close("output", want_out.transpose(0, 1), out, F64)
    assert_close("h_n", want_h, h, F64)
    assert_close("unbatched output", want_out[:, 1], out1, F64)
    assert_close("unbatched h_n", want_h[:, 1], h1, F64)


def test_aten_backend_runs_resets_through_the_reference():
    """On the aten path (torch's RNN has no resets) the reference recurrence runs them, with the same results."""
    ref, fused, x, hx, reset = _case("lstm", layers=2)
    with fusedrnn.use_backend("aten"):
        out, (h, c) = fused(x, tuple(hx), reset=reset)
    want_out, (want_h, want_c) = _oracle(ref, x, tuple(hx), reset)
    assert_close("output", want_out, out, F64)
    assert_close("h_n", want_h, h, F64)
    assert_close("c_n", want_c, c, F64)


def test_dropout_matches_the_reference_path():
    """Training with dropout between layers: the Triton path and the reference path draw the same masks from the
    same seed, so their outputs and gradients agree."""
    torch.manual_seed(4)
    _, fused = make_pair("gru", 3, 4, dtype=F64, num_layers=2, dropout=0.5)
    fused.train()
    x = torch.randn(5, 3, 3, dtype=F64, requires_grad=True)
    reset = _resets(5, 3)
    results = []
    for backend in ("triton", "aten"):
        torch.manual_seed(9)
        with fusedrnn.use_backend(backend), fusedrnn.use_kernel("tiled"):
            out, h = fused(x, reset=reset)
            results.append((out, h, torch.autograd.grad(_weighted(out, [h]), [x, *fused.parameters()])))
    (a, ha, ga), (b, hb, gb) = results
    assert_close("output", b, a, F64)
    assert_close("h_n", hb, ha, F64)
    for i, (u, v) in enumerate(zip(gb, ga)):
        assert_close(f"grad {i}", u, v, F64)


def test_gradcheck_and_double_backward():
    """gradcheck in float64 of x, h0 and W_hh through resets, and a second derivative against the oracle's."""
    torch.manual_seed(5)
    ref, fused = make_pair("rnn_tanh", 2, 2, dtype=F64)
    reset = torch.tensor([[False, True], [True, False], [False, False]])
    x = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(1, 2, 2, dtype=F64, requires_grad=True)
    w = fused.weight_hh_l0.detach().clone().requires_grad_()

    def f(x, h0, w):
        return torch.func.functional_call(fused, {"weight_hh_l0": w}, (x, h0), {"reset": reset})[0]

    with fusedrnn.use_backend("triton"), fusedrnn.use_kernel("tiled"):
        assert torch.autograd.gradcheck(f, (x, h0, w))
        g, = torch.autograd.grad(f(x, h0, w).pow(2).sum(), x, create_graph=True)
        gg, = torch.autograd.grad(g.sum(), x)
    want_out, _ = _oracle(ref, x, h0, reset, bidirectional=False)
    wg, = torch.autograd.grad(want_out.pow(2).sum(), x, create_graph=True)
    wgg, = torch.autograd.grad(wg.sum(), x)
    assert_close("grad", wg, g, F64)
    assert_close("double backward", wgg, gg, F64)


def test_compiles_fullgraph():
    """The ops stay custom ops with ``reset`` an optional tensor: torch.compile(fullgraph=True) traces it."""
    torch.manual_seed(6)
    _, fused = make_pair("gru", 3, 4, dtype=F64)
    x = torch.randn(4, 2, 3, dtype=F64)
    reset = torch.tensor([[False, False], [True, False], [False, True], [False, False]])
    with fusedrnn.use_backend("triton"), fusedrnn.use_kernel("tiled"):
        want = fused(x, reset=reset)[0]
        got = torch.compile(lambda x, r: fused(x, reset=r)[0], fullgraph=True, backend="aot_eager")(x, reset)
    assert_close("compiled", want, got, F64)


# ---- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,error,match", [
    (torch.zeros(4, 3, dtype=torch.bool), ValueError, r"\[T, B\] \(batch_first=False\): \[5, 2\].*got \[4, 3\]"),
    (torch.zeros(5, 2, dtype=torch.uint8), TypeError, "must be a bool tensor"),
    (torch.zeros(5, 2, dtype=torch.bool, device="meta"), RuntimeError, "input's device"),
    ([[False] * 2] * 5, TypeError, "bool tensor or None"),
])
def test_bad_reset_is_refused_before_anything_runs(bad, error, match):
    _, fused = make_pair("lstm", 3, 4)
    x = torch.randn(5, 2, 3)
    before = dict(launch.launch_counts)
    state = {k: v.clone() for k, v in fused.state_dict().items()}
    with fusedrnn.use_backend("triton"), pytest.raises(error, match=match):
        fused(x, reset=bad)
    assert dict(launch.launch_counts) == before
    assert all(torch.equal(v, fused.state_dict()[k]) for k, v in state.items())


def test_bad_reset_shapes_name_the_form():
    _, fused = make_pair("gru", 3, 4, batch_first=True)
    with pytest.raises(ValueError, match=r"\[B, T\] \(batch_first=True\): \[2, 5\]"):
        fused(torch.randn(2, 5, 3), reset=torch.zeros(5, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \[T\] for unbatched input"):
        fused(torch.randn(5, 3), reset=torch.zeros(5, 1, dtype=torch.bool))
    packed = pack_padded_sequence(torch.randn(2, 5, 3), [5, 3], batch_first=True)
    with pytest.raises(ValueError, match=r"\[N\], one flag per row.*\[8\]"):
        fused(packed, reset=torch.zeros(2, 5, dtype=torch.bool))
