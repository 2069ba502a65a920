"""Where launches go, and CUDA graphs.

- Several GPUs: every launch runs on the device of its tensors and that device's current stream (the launchers'
  device guard), not on the current device.
- CUDA graphs: the dense forward and backward capture and replay (no host synchronisation, no host-to-device copy
  from Python lists on that path), also through ``torch.compile(mode="reduce-overhead")``; packed input, whose
  step layout comes from the host, refuses capture with a clear error.

The GPU tests skip without CUDA (or with fewer than two GPUs); the CPU tests prove the wiring under the
interpreter: which calls the dense path makes and which it avoids, the guard's device, the capture refusal.
"""

import contextlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from _helpers import DEVICE, ON_GPU, assert_close, kernels_ran, make_pair
from fusedrnn import launch, schedule

F32 = torch.float32
T, B, I, H = 5, 3, 4, 6
NEEDS_GPU = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
KERNELS = ["step", "tiled"] + (["cooperative"] if ON_GPU else [])


def _run(fused, x, grad=True):
    out, state = fused(x)
    if grad:
        out.sum().backward()
    return out


# ---- several GPUs ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not ON_GPU or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("kernel", KERNELS)
def test_launches_follow_the_tensors_device(kernel):
    """A layer on cuda:1 while cuda:0 is current: same results as torch.nn on cuda:1, current device unchanged."""
    torch.manual_seed(0)
    ref, fused = make_pair("lstm", I, H, num_layers=2)
    dev = torch.device("cuda", 1)
    ref, fused = ref.to(dev), fused.to(dev)
    x = torch.randn(40, B, I, device=dev, requires_grad=True)
    torch.cuda.set_device(0)
    with torch.backends.cudnn.flags(enabled=False):
        want, _ = ref(x)
    with fusedrnn.use_kernel(kernel):
        got, _ = fused(x)
    assert torch.cuda.current_device() == 0
    assert_close("output", want, got, F32)
    gw = torch.autograd.grad(want.sum(), x)[0]
    gg = torch.autograd.grad(got.sum(), x)[0]
    assert_close("dx", gw, gg, F32)


def test_launchers_guard_the_tensors_device(monkeypatch):
    """Each launcher enters ``torch.cuda.device`` of its first tensor before it does anything else."""
    entered = []

    class Stop(Exception):
        pass

    @contextlib.contextmanager
    def recorder(device):
        entered.append(device)
        raise Stop
        yield  # pragma: no cover

    class OnSecondGpu:
        device = torch.device("cuda", 1)

    monkeypatch.setattr(torch.cuda, "device", recorder)
    for fn in (launch.recurrence_fwd, launch.recurrence_bwd, launch.cell_fwd, launch.cell_bwd):
        with pytest.raises(Stop):
            fn("lstm", OnSecondGpu(), None)
    assert entered == [torch.device("cuda", 1)] * 4


# ---- CUDA graphs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["step", "tiled"])
def test_dense_path_copies_nothing_from_the_host(kernel, monkeypatch):
    """What makes a CUDA graph capture fail, proved on any device: the dense forward and backward build no device
    tensor from a Python list (``Schedule._table``) and read no value back to the host (``.item()``, ``.tolist()``)."""
    torch.manual_seed(0)
    ref, fused = make_pair("gru", I, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, requires_grad=True)

    def refuse(*args, **kwargs):
        raise AssertionError("host round trip on the dense path")

    monkeypatch.setattr(launch.Schedule, "_table", refuse)
    monkeypatch.setattr(torch.Tensor, "item", refuse)
    monkeypatch.setattr(torch.Tensor, "tolist", refuse)
    with fusedrnn.use_kernel(kernel), kernels_ran(f"{kernel}_fwd", f"{kernel}_bwd"):
        _run(fused, x)


def test_packed_input_refuses_capture(monkeypatch):
    """Under capture packed input raises a clear error (its layout is copied from the host at every call)."""
    torch.manual_seed(0)
    ref, fused = make_pair("lstm", I, H)
    x = pack_padded_sequence(torch.randn(T, B, I), [T, T - 1, 2])
    monkeypatch.setattr(schedule, "_capturing", lambda device: True)
    with kernels_ran(), pytest.raises(RuntimeError, match="cannot be captured in a CUDA graph"):
        fused(x)


@NEEDS_GPU
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_cuda_graph_capture_and_replay(cell, kernel):
    """Forward and backward of a 2-layer layer captured in a torch.cuda.CUDAGraph, replayed on new input: the
    results are torch.nn's on that input. Host synchronisations on the way are errors (sync debug mode)."""
    torch.manual_seed(0)
    ref, fused = make_pair(cell, I, H, num_layers=2)
    static_x = torch.randn(64, B, I, device=DEVICE, requires_grad=True)
    with fusedrnn.use_kernel(kernel):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (compiles the kernels) off the capture
            for _ in range(2):
                fused.zero_grad(set_to_none=True)
                _run(fused, static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        fused.zero_grad(set_to_none=True)
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.cuda.graph(graph):
                static_out = _run(fused, static_x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    new_x = torch.randn_like(static_x)
    with torch.no_grad():
        static_x.copy_(new_x)
    graph.replay()
    torch.cuda.synchronize()
    x = new_x.detach().requires_grad_()
    with torch.backends.cudnn.flags(enabled=False):
        want = _run(ref, x)
    assert_close("replayed output", want, static_out, F32)
    for (n, p), q in zip(fused.named_parameters(), ref.parameters()):
        assert_close(f"replayed grad of {n}", q.grad, p.grad, F32)


@NEEDS_GPU
def test_packed_input_under_real_capture_raises():
    torch.manual_seed(0)
    _, fused = make_pair("lstm", I, H)
    x = pack_padded_sequence(torch.randn(T, B, I, device=DEVICE), [T, T - 1, 2])
    fused(x)  # warm-up
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="cannot be captured in a CUDA graph"):
        with torch.cuda.graph(graph):
            fused(x)


@NEEDS_GPU
def test_compile_reduce_overhead():
    """torch.compile(mode="reduce-overhead") (inductor with CUDA graphs) of a training step: the same results as
    eager torch.nn on two different inputs."""
    torch.manual_seed(0)
    ref, fused = make_pair("lstm", I, H, num_layers=2, bidirectional=True)

    def step(model, x):
        out, _ = model(x)
        loss = out.square().sum()
        loss.backward()
        return loss.detach()

    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        x = torch.randn(48, B, I, device=DEVICE)
        fused.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)
        got = compiled(fused, x)
        with torch.backends.cudnn.flags(enabled=False):
            want = step(ref, x)
        assert_close("loss", want, got.clone(), F32)
        for (n, p), q in zip(fused.named_parameters(), ref.parameters()):
            assert_close(f"grad of {n}", q.grad, p.grad, F32)
