"""Precision: fp16/bf16 against an fp32 reference, float64 gradcheck, and tilings with many programs."""

import pytest
import torch

import fusedrnn
from fusedrnn import dispatch
from fusedrnn.autotune import KernelConfig
from _helpers import assert_close, kernels_ran, make_pair
from test_parity import CELLS, HIDDEN, INPUT, compare


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_against_fp32(cell, dtype):
    """A half-precision run stays within the documented bound of an fp32 run of the same rounded numbers."""
    torch.manual_seed(0)
    ref, fused = make_pair(cell, INPUT, HIDDEN, num_layers=2, bidirectional=True)
    fused = fused.to(dtype)
    ref.load_state_dict({k: v.to(dtype).float() for k, v in ref.state_dict().items()})
    x = torch.randn(7, 3, INPUT).to(dtype)
    h = torch.randn(4, 3, HIDDEN).to(dtype)
    hx = (h, torch.randn(4, 3, HIDDEN).to(dtype)) if cell == "lstm" else h
    rx = x.float().requires_grad_()
    fx = x.clone().requires_grad_()
    r_out, r_hn = ref(rx, tuple(t.float() for t in hx) if cell == "lstm" else hx.float())
    with kernels_ran("step_fwd", "step_bwd"):
        f_out, f_hn = fused(fx, hx)
        assert f_out.dtype == dtype
        dy = torch.randn(r_out.shape)
        r_grads = torch.autograd.grad((r_out * dy).sum(), [rx, *ref.parameters()])
        f_grads = torch.autograd.grad((f_out * dy.to(dtype)).sum(), [fx, *fused.parameters()])
    assert_close("output", r_out, f_out, dtype)
    for r, f in zip(r_hn if cell == "lstm" else [r_hn], f_hn if cell == "lstm" else [f_hn]):
        assert_close("state", r, f, dtype)
    for name, r, f in zip(["input"] + [n for n, _ in ref.named_parameters()], r_grads, f_grads):
        assert f.dtype == dtype
        assert_close(f"grad {name}", r, f, dtype)


def _functional(cell, **kwargs):
    """The functional entry point of ``cell`` as f(x, h0, c0, *weights) -> tuple of tensors."""

    def run(x, h0, c0, *ws):
        if cell == "lstm":
            out, (h, c) = fusedrnn.fused_lstm(x, (h0, c0), ws, **kwargs)
            return out, h, c
        if cell == "gru":
            return fusedrnn.fused_gru(x, h0, ws, **kwargs)
        return fusedrnn.fused_rnn(x, h0, ws, nonlinearity=cell[4:], **kwargs)

    return run


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,bidirectional,fast", [(1, False, False), (2, True, True)])
def test_gradcheck_float64(cell, layers, bidirectional, fast):
    """Analytical gradients of the fused kernels equal finite differences, for every input at once: in full on
    one small layer, and by random projections (fast_mode) on a deep bidirectional net."""
    torch.manual_seed(0)
    hidden, size = (4, 3) if fast else (2, 2)
    _, fused = make_pair(cell, size, hidden, dtype=torch.float64, num_layers=layers, bidirectional=bidirectional)
    states = layers * (2 if bidirectional else 1)
    x = torch.randn(3, 2, size, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(states, 2, hidden, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(states, 2, hidden, dtype=torch.float64, requires_grad=True)
    weights = [getattr(fused, n).detach().clone().requires_grad_() for n in fused._flat_weights_names]
    run = _functional(cell, num_layers=layers, bidirectional=bidirectional)
    with kernels_ran("step_fwd", "step_bwd"):
        assert torch.autograd.gradcheck(run, (x, h0, c0, *weights), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("config", [KernelConfig(BLOCK_B=2, BLOCK_H=4, BLOCK_K=4), KernelConfig(4, 8, 2)])
def test_many_programs_and_k_tiles(cell, config, monkeypatch):
    """Blocks smaller than the problem (B=5, H=6): several programs per step, several K iterations, masked
    tails in every dimension."""
    monkeypatch.setattr(dispatch, "kernel_config", lambda *args, **kwargs: config)
    compare(cell, 1, True, False, True, 5, 3, seed=1)


@pytest.mark.parametrize("cell", CELLS)
def test_naive_reference_agrees(cell):
    """The naive reference loop (oracle for what torch.nn cannot check) equals torch.nn itself."""
    from fusedrnn import reference

    torch.manual_seed(0)
    ref, _ = make_pair(cell, INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 5, INPUT)
    h0 = torch.randn(4, 3, HIDDEN)
    c0 = torch.randn(4, 3, HIDDEN) if cell == "lstm" else None
    out, h, c = reference.rnn(cell, x, h0, c0, list(ref.parameters()), num_layers=2, bidirectional=True,
                              batch_first=True)
    r_out, r_hn = ref(x, (h0, c0) if cell == "lstm" else h0)
    assert_close("output", r_out, out, torch.float32)
    assert_close("h_n", r_hn[0] if cell == "lstm" else r_hn, h, torch.float32)
    if cell == "lstm":
        assert_close("c_n", r_hn[1], c, torch.float32)
