"""Persistent kernels (issue 4): batch-tiled and cooperative, forward and backward, every cell, against torch.nn
in float64; dispatch and its forcing; launches and memory that do not grow with T; long sequences.

The plain interpreter runs programs one after another, so the cooperative kernel runs here as a single program
(the whole layer in one program: the barrier is passed at once); its multi-program grids run on the CPU in
tests/test_grid_modes.py (the threaded mode of tests/_grid.py) and here on a GPU.
"""

import dataclasses
import os

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import fusedrnn
from _helpers import TOL, assert_close, kernels_ran, make_pair
from fusedrnn import calls, dispatch, launch, settings
from fusedrnn.autotune import runtime as autotune_runtime
from fusedrnn.autotune import spaces
from fusedrnn.autotune.spaces import KNOWN_GPUS, KernelConfig

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
F64 = torch.float64
ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
NEEDS_GPU = pytest.mark.skipif(not ON_GPU, reason="compiled multi-program cooperative grids at GPU sizes (on the CPU: "
                                                  "tests/test_grid_modes.py, the threaded interpreter mode)")
KERNEL_NAMES = {"tiled": ("tiled_fwd", "tiled_bwd"), "cooperative": ("resident_fwd", "resident_bwd"),
                "streamed": ("streamed_fwd", "streamed_bwd")}
#: The streamed cooperative variant under the interpreter: small tiles, so a program walks several hidden chunks
#: and K blocks and a batch has several tiles (each tile's programs meet at their own barrier, which a single
#: hidden program passes at once).
STREAMED = KernelConfig(BLOCK_B=2, BLOCK_H=4, BLOCK_K=4, num_warps=1, num_stages=1, variant="streamed")


@pytest.fixture
def streamed(monkeypatch):
    """Make "cooperative" mean the streamed variant (``STREAMED``) wherever it is asked for."""
    monkeypatch.setattr(dispatch, "coop_plan", lambda *a, **k: (STREAMED, None))


def _forced(kernel):
    """The kernel setting that runs ``kernel`` (a key of KERNEL_NAMES): "streamed" is a cooperative plan."""
    return fusedrnn.use_kernel("cooperative" if kernel == "streamed" else kernel)


def _states(out):
    return list(out) if isinstance(out, tuple) else [out]


def _run(module, x, hx, packed_lengths=None, seed=7):
    """(outputs, final states, gradients of inputs, states and parameters) of one forward+backward."""
    inp = x if packed_lengths is None else pack_padded_sequence(x, packed_lengths, enforce_sorted=False)
    out, states = module(inp, hx)
    out = out if packed_lengths is None else out.data
    g = torch.Generator(device="cpu").manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype, device="cpu").to(out.device)).sum()
    for s in _states(states):
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype, device="cpu").to(s.device)).sum()
    leaves = [x, *(_states(hx) if hx is not None else []), *module.parameters()]
    grads = torch.autograd.grad(loss, leaves)
    return out, _states(states), grads


def _compare(cell, kernel, *, B=3, T=5, I=4, H=6, layers=1, bidirectional=True, lengths=None, dtype=F64,
             device=DEVICE):
    torch.manual_seed(0)
    ref, fused = make_pair(cell, I, H, dtype=dtype, num_layers=layers, bidirectional=bidirectional)
    ref, fused = ref.to(device), fused.to(device)
    n = layers * (2 if bidirectional else 1)
    x = torch.randn(T, B, I, dtype=dtype, device=device, requires_grad=True)
    hx = tuple(torch.randn(n, B, H, dtype=dtype, device=device, requires_grad=True)
               for _ in range(2 if cell == "lstm" else 1))
    hx = hx if cell == "lstm" else hx[0]
    with kernels_ran(*KERNEL_NAMES[kernel]), _forced(kernel):
        got = _run(fused, x, hx, lengths)
    want = _run(ref, x, hx, lengths)
    assert_close("output", want[0], got[0], dtype)
    for i, (w, g) in enumerate(zip(want[1], got[1])):
        assert_close(f"state {i}", w, g, dtype)
    names = ["x", *[f"hx{i}" for i in range(len(_states(hx)))], *[n for n, _ in fused.named_parameters()]]
    for name, w, g in zip(names, want[2], got[2]):
        assert_close(f"grad {name}", w, g, dtype)


# ---- parity -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["tiled", "cooperative"])
@pytest.mark.parametrize("cell", CELLS)
def test_parity_dense_bidirectional(cell, kernel):
    _compare(cell, kernel)


@pytest.mark.parametrize("cell", CELLS)
def test_parity_streamed(cell, streamed):
    """The streamed cooperative variant: 2 batch tiles, 2 hidden chunks and K blocks per program, both directions."""
    _compare(cell, "streamed")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_parity_streamed_packed(cell, streamed):
    _compare(cell, "streamed", B=4, T=5, I=3, H=10, lengths=[3, 5, 1, 4])


@pytest.mark.parametrize("kernel", ["tiled", "cooperative"])
@pytest.mark.parametrize("cell", CELLS)
def test_parity_packed_unsorted_two_layers(cell, kernel):
    """Packed, unsorted lengths, both directions (reverse sequences start at their own last element), 2 layers."""
    _compare(cell, kernel, B=4, T=5, layers=2, lengths=[3, 5, 1, 4])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_tiled_many_programs_chunks_and_k_blocks(cell):
    """Several batch tiles, hidden chunks and K blocks per program (forced small tiles), odd sizes."""
    tiles = KernelConfig(BLOCK_B=2, BLOCK_H=4, BLOCK_K=4, num_warps=1, num_stages=1, variant="tiled")
    with autotune_runtime.forced(tiles):
        _compare(cell, "tiled", B=5, T=4, I=3, H=10, bidirectional=False, lengths=[4, 2, 4, 1, 3])


@pytest.mark.parametrize("kernel", ["tiled", "cooperative", "streamed"])
@pytest.mark.parametrize("cell", CELLS)
def test_inference_fuses_the_input_projection(cell, kernel, monkeypatch):
    """Without grad the persistent kernels compute x_t @ W_ih^T inside (no [T, B, G*H] buffer): same values."""
    if kernel == "streamed":
        monkeypatch.setattr(dispatch, "coop_plan", lambda *a, **k: (STREAMED, None))
    torch.manual_seed(1)
    ref, fused = make_pair(cell, 5, 7, dtype=F64, bidirectional=True)
    x = torch.randn(6, 3, 5, dtype=F64)
    with torch.no_grad(), kernels_ran(KERNEL_NAMES[kernel][0]), _forced(kernel):
        out, states = fused(x)
    with torch.no_grad():
        ref_out, ref_states = ref(x)
    assert_close("output", ref_out, out, F64)
    for w, g in zip(_states(ref_states), _states(states)):
        assert_close("state", w, g, F64)


@pytest.mark.parametrize("cell", CELLS)
def test_persistent_and_stepwise_mix(cell):
    """A persistent forward with a stepwise backward and the reverse: the saved tensors are the same layout."""
    torch.manual_seed(2)
    ref, fused = make_pair(cell, 3, 5, dtype=F64)
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    want = torch.autograd.grad(ref(x)[0].sum(), [x, *ref.parameters()])
    for first, second in (("tiled", "step"), ("step", "tiled")):
        with fusedrnn.use_backend("triton"), fusedrnn.use_kernel(first):
            out = fused(x)[0].sum()
        with fusedrnn.use_backend("triton"), fusedrnn.use_kernel(second):
            got = torch.autograd.grad(out, [x, *fused.parameters()])
        for w, g in zip(want, got):
            assert_close(f"{first} forward, {second} backward", w, g, F64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_tiled(dtype):
    """bf16/fp16 through the batch-tiled kernel, against an fp32 run of the same rounded weights."""
    torch.manual_seed(3)
    ref, fused = make_pair("lstm", 8, 16, dtype=torch.float32)
    fused = fused.to(dtype)
    ref.load_state_dict({k: v.to(dtype).float() for k, v in ref.state_dict().items()})
    x = torch.randn(12, 3, 8).to(dtype)
    with torch.no_grad(), kernels_ran("tiled_fwd"), fusedrnn.use_kernel("tiled"):
        out, (h, c) = fused(x)
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = ref(x.float())
    assert out.dtype == dtype and h.dtype == dtype and c.dtype == dtype
    for name, w, g in (("output", ref_out, out), ("h_n", ref_h, h), ("c_n", ref_c, c)):
        assert_close(name, w, g, dtype)


# ---- dispatch -------------------------------------------------------------------------------------------------


def test_kernel_setting_is_validated_and_scoped():
    assert fusedrnn.get_kernel() == "auto"
    with fusedrnn.use_kernel("tiled"):
        assert fusedrnn.get_kernel() == "tiled"
    assert fusedrnn.get_kernel() == "auto"
    with pytest.raises(ValueError, match="kernel must be one of"):
        fusedrnn.set_kernel("persistent")


def test_forcing_a_persistent_kernel_with_a_projection_is_an_error():
    m = fusedrnn.LSTM(3, 4, proj_size=2)
    with fusedrnn.use_backend("triton"), fusedrnn.use_kernel("tiled"), pytest.raises(ValueError, match="proj"):
        m(torch.randn(3, 2, 3))


def test_auto_heuristic():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    h100 = KNOWN_GPUS["H100"]
    pick = dispatch.choose_kernel
    assert pick("lstm", torch.float32, cpu, 255, 4, 8, False) == "step"
    assert pick("lstm", torch.float32, cpu, 256, 4, 8, False) == "tiled"
    assert pick("lstm", torch.float32, cpu, 10_000, 4, 8, True) == "step"  # projections: step only
    assert pick("gru", torch.bfloat16, cuda, 1, 16, 128, False, h100) == "step"
    assert pick("gru", torch.bfloat16, cuda, 1024, 16, 128, False, h100) == "cooperative"
    assert pick("lstm", torch.bfloat16, cuda, 16, 16, 768, False, h100) == "step"
    assert pick("rnn_tanh", torch.float16, cuda, 64, 8, 256, False, h100) == "cooperative"
    # The resident variant where the W_hh slice fits on chip (the headline shape, B=16 H=768: 96 programs of 8
    # units; B=64 at H=1024: 64 slices x 2 tiles of 32 rows), the streamed one beyond (B=64 at H=1536: 96 slices x 2
    # tiles would not fit the SMs, 64-row tiles spill); no
    # cooperative grid with so many batch tiles that the batch-tiled kernel fills the GPU alone.
    assert dispatch.choose("gru", torch.bfloat16, cuda, 1024, 16, 128, False, h100)[1].variant == "resident"
    kernel, plan = dispatch.choose("lstm", torch.bfloat16, cuda, 1024, 16, 768, False, h100)
    assert kernel == "cooperative" and plan.variant == "resident" and (plan.BLOCK_B, plan.BLOCK_H) == (16, 8)
    assert spaces.coop_grid(plan, 768, 16, h100.sms) == (96, 1)
    kernel, plan = dispatch.choose("lstm", torch.bfloat16, cuda, 1024, 64, 1024, False, h100)
    assert kernel == "cooperative" and plan.variant == "resident" and (plan.BLOCK_B, plan.BLOCK_H) == (32, 16)
    kernel, plan = dispatch.choose("lstm", torch.bfloat16, cuda, 1024, 64, 1536, False, h100)
    assert kernel == "cooperative" and plan.variant == "streamed"
    assert pick("lstm", torch.bfloat16, cuda, 1024, 10_000, 768, False, h100) == "tiled"
    assert pick("lstm", torch.bfloat16, cuda, 100, 10_000, 768, False, h100) == "step"


def test_inference_fuses_the_input_projection_except_in_tall_resident_tiles():
    """Inference (no saved activations) fuses the input projection into the persistent kernels, except in the
    resident kernel's 32-row batch tiles (B=64 at H=768 and 1024 on an H100), which read precomputed input gates;
    training never fuses it."""
    cuda = torch.device("cuda")
    with dispatch.planning_for(KNOWN_GPUS["H100"]):
        for B, H, fused, rows in ((16, 768, True, 16), (64, 512, True, 16), (64, 768, False, 32),
                                  (64, 1024, False, 32), (64, 1536, True, 64)):
            plan = dispatch.plan_layer("lstm", torch.bfloat16, cuda, 1024, B, H, False, save=False)
            assert plan.kernel == "cooperative" and plan.coop.BLOCK_B == rows and plan.fuse_input == fused, (B, H)
            assert not dispatch.plan_layer("lstm", torch.bfloat16, cuda, 1024, B, H, False, save=True).fuse_input
        assert dispatch.plan_layer("lstm", torch.bfloat16, cuda, 1, 64, 768, False, save=False).fuse_input  # a step


def test_coop_plan_refuses_what_cannot_be_resident(monkeypatch):
    cuda = torch.device("cuda")
    few = dataclasses.replace(KNOWN_GPUS["H100"], sms=8)
    plan, why = dispatch.coop_plan("rnn_tanh", torch.float16, cuda, 128, 16, few)  # 8 slices of 16: resident
    assert plan.variant == "resident" and spaces.coop_grid(plan, 128, 16, few.sms) == (8, 1)
    plan, why = dispatch.coop_plan("rnn_tanh", torch.float16, cuda, 256, 16, few)  # too many slices: streamed
    assert plan.variant == "streamed" and spaces.coop_grid(plan, 256, 16, few.sms) == (8, 1)
    plan, why = dispatch.coop_plan("rnn_tanh", torch.float16, cuda, 256, 257, few)  # 5 batch tiles of 64
    assert plan is None and "batch tiles" in why
    # Streamed where the resident grid would not fit the SMs (B=64 at H=1536: 16- and 32-row tiles) or the slice
    # would not fit shared memory (H=4096), and for fp32 slices over RESIDENT_W_BYTES_WIDE.
    for H, B, grid, dtype in ((1536, 64, (96, 1), torch.bfloat16), (4096, 16, (128, 1), torch.bfloat16),
                              (1024, 256, (32, 4), torch.bfloat16), (768, 16, (48, 1), torch.float32)):
        plan, why = dispatch.coop_plan("lstm", dtype, cuda, H, B, KNOWN_GPUS["H100"])
        assert plan.variant == "streamed" and spaces.coop_grid(plan, H, B, 132) == grid, (H, B)
    # Resident: narrow slices spread the layer over the GPU, 16-row batch tiles (32 where 16 would not fit: B=64
    # from H=768), the 8-unit slices above H=512.
    for H, B, grid in ((768, 16, (96, 1)), (512, 64, (32, 4)), (1536, 8, (96, 1)), (512, 16, (32, 1)),
                       (256, 1, (16, 1)), (768, 64, (48, 2)), (1024, 64, (64, 2)), (768, 20, (48, 2))):
        plan, why = dispatch.coop_plan("lstm", torch.bfloat16, cuda, H, B, KNOWN_GPUS["H100"])
        assert plan.variant == "resident" and spaces.coop_grid(plan, H, B, 132) == grid, (H, B)
        assert spaces.resident_slice_bytes(4, 2, H, plan.BLOCK_H, plan.BLOCK_B) <= spaces.RESIDENT_W_BYTES
    monkeypatch.setenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "50")
    monkeypatch.setattr(settings.SETTINGS, "_mps", None)  # read once per process: read it again
    plan, why = dispatch.coop_plan("rnn_tanh", torch.float16, cuda, 128, 16, KNOWN_GPUS["H100"])
    assert plan is None and "MPS" in why


def test_forced_cooperative_falls_back_to_tiled_when_refused(monkeypatch):
    monkeypatch.setattr(dispatch, "coop_plan", lambda *a, **k: (None, "a test says no"))
    torch.manual_seed(4)
    ref, fused = make_pair("gru", 3, 4, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    with kernels_ran("tiled_fwd"), fusedrnn.use_kernel("cooperative"), torch.no_grad(), \
            pytest.warns(RuntimeWarning, match="a test says no"):
        out, _ = fused(x)
    assert_close("output", ref(x)[0].detach(), out, F64)


class _RefusedLaunch:
    """Stands in for a cooperative kernel: every launch fails as the driver fails a cooperative launch it cannot
    start all at once (or with ``message``)."""

    def __init__(self, message="Triton Error [CUDA]: too many blocks in cooperative launch"):
        self.message = message

    def __getitem__(self, grid):
        def refuse(*args, **kwargs):
            assert kwargs["launch_cooperative_grid"] is True  # the driver is asked to start the grid at once
            raise RuntimeError(self.message)
        return refuse


def test_cooperative_launch_the_driver_refuses_falls_back_to_tiled(monkeypatch):
    """The launcher asks for a cooperative launch; a grid the driver will not start all at once (other work
    holds SMs, say) runs batch-tiled with a warning, forward and backward, and gives torch.nn's results. Any other
    launch error propagates."""
    monkeypatch.setitem(calls.KERNELS, "resident_fwd", _RefusedLaunch())
    monkeypatch.setitem(calls.KERNELS, "resident_bwd", _RefusedLaunch())
    torch.manual_seed(4)
    ref, fused = make_pair("lstm", 3, 4, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    with kernels_ran("tiled_fwd", "tiled_bwd"), fusedrnn.use_kernel("cooperative"), \
            pytest.warns(RuntimeWarning, match="too many blocks in cooperative launch"):
        got = _run(fused, x, None)
    want = _run(ref, x, None)
    assert_close("output", want[0], got[0], F64)
    for name, a, b in [*zip(("h", "c"), want[1], got[1]), *zip(("dx", "dW_ih", "dW_hh"), want[2], got[2])]:
        assert_close(name, a, b, F64)
    monkeypatch.setitem(calls.KERNELS, "resident_fwd", _RefusedLaunch("Triton Error [CUDA]: an illegal memory access"))
    with fusedrnn.use_backend("triton"), fusedrnn.use_kernel("cooperative"), torch.no_grad(), \
            pytest.raises(RuntimeError, match="illegal memory"):
        fused(x)


# ---- launches and memory independent of T ---------------------------------------------------------------------


def _launches(fn):
    before = dict(launch.launch_counts)
    fn()
    return {k: v - before.get(k, 0) for k, v in launch.launch_counts.items() if v != before.get(k, 0)}


@pytest.mark.slow
def test_long_forward_launches_do_not_grow_with_T():
    """Default settings, T >= 256: one kernel launch per layer and direction, whatever T."""
    m = fusedrnn.GRU(2, 3)
    counts = {}
    for T in (256, 257):
        x = torch.randn(T, 1, 2)
        with fusedrnn.use_backend("triton"), torch.no_grad():
            counts[T] = _launches(lambda: m(x))
    assert counts[256] == counts[257] == {"tiled_fwd": 1}


class _Allocations(TorchDispatchMode):
    """Sizes (numel) of every tensor a torch op creates."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out, )):
            if isinstance(t, torch.Tensor) and not func._schema.is_mutable:
                self.sizes.append(t.numel())
        return out


@pytest.mark.parametrize("kernel", ["tiled", "cooperative", "streamed"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_inference_memory_does_not_grow_with_T(cell, kernel, monkeypatch):
    """Without grad, the launcher allocates nothing that grows with T except the output itself."""
    spec = launch.CELLS[cell]
    H, I, B = 3, 2, 2
    w_ih, w_hh = torch.randn(spec.gates * H, I), torch.randn(spec.gates * H, H)
    b_ih, b_hh = torch.randn(spec.gates * H), torch.randn(spec.gates * H)
    if kernel == "streamed":
        monkeypatch.setattr(dispatch, "coop_plan", lambda *a, **k: (STREAMED, None))
    sizes = {}
    for T in (6, 12):
        x = torch.randn(T, B, I)
        h0, c0 = torch.randn(B, H), torch.randn(B, H) if cell == "lstm" else None
        with _forced(kernel), kernels_ran(KERNEL_NAMES[kernel][0]), _Allocations() as rec:
            y, *_ = launch.recurrence_fwd(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, None, False, False)
        sizes[T] = sorted(n for n in rec.sizes if n != y.numel())
    assert sizes[6] == sizes[12], f"allocations that grow with T: {sizes}"


def test_training_saves_only_what_the_backward_reads():
    """The forward's saved tensors: y (the output), the activations (NS per unit and step) and, LSTM, c."""
    cell, H, I, B, T = "lstm", 3, 2, 2, 7
    spec = launch.CELLS[cell]
    args = (torch.randn(T, B, I), torch.randn(B, H), torch.randn(B, H), torch.randn(4 * H, I), torch.randn(4 * H, H),
            None, None, None, None, False, True)
    with fusedrnn.use_kernel("tiled"):
        y, h_n, c_n, saved, cs, hr = launch.recurrence_fwd(cell, *args)
    assert saved.shape == (T, B, spec.saved * H) and cs.shape == (T + 1, B, H) and hr.numel() == 0


# ---- long sequences ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_long_sequence_against_torch():
    """T = 1,500 through the default (persistent) path: outputs and state against torch.nn."""
    torch.manual_seed(5)
    ref, fused = make_pair("rnn_tanh", 2, 4, dtype=F64)
    x = torch.randn(1500, 2, 2, dtype=F64)
    with torch.no_grad(), kernels_ran("tiled_fwd"):
        out, h = fused(x)
    with torch.no_grad():
        ref_out, ref_h = ref(x)
    assert_close("output", ref_out, out, F64)
    assert_close("h_n", ref_h, h, F64)


LONG = pytest.mark.skipif(os.environ.get("FUSEDRNN_LONG_TESTS") != "1",
                          reason="T=100,000 takes ~20 min under the interpreter (about 11 ms per step); "
                                 "FUSEDRNN_LONG_TESTS=1 runs it")


@LONG
def test_hundred_thousand_steps():
    """T = 100,000 at B=2 (int64 offsets, one launch): against torch.nn."""
    torch.manual_seed(6)
    ref, fused = make_pair("rnn_tanh", 2, 4, dtype=torch.float32)
    x = torch.randn(100_000, 2, 2)
    with torch.no_grad(), kernels_ran("tiled_fwd"):
        out, h = fused(x)
    with torch.no_grad():
        ref_out, ref_h = ref(x)
    assert_close("output", ref_out, out, torch.float32)
    assert_close("h_n", ref_h, h, torch.float32)


GPU_LONG = pytest.mark.skipif(not ON_GPU, reason="T=100,000 at B=64 is the GPU half of the length requirement (the "
                                                 "interpreter's half: test_hundred_thousand_steps)")


@GPU_LONG
@pytest.mark.parametrize("kernel", ["cooperative", "tiled"])
def test_hundred_thousand_steps_gpu(kernel):
    """T = 100,000 at B=64 on a GPU, forward and backward in one launch each: outputs, final states and every
    gradient against torch.nn in float64."""
    torch.manual_seed(6)
    ref, fused = make_pair("lstm", 8, 32, dtype=F64)
    ref, fused = ref.cuda(), fused.cuda()
    x = torch.randn(100_000, 64, 8, dtype=F64, device="cuda", requires_grad=True)
    ran = []
    with kernels_ran(*KERNEL_NAMES[kernel]), fusedrnn.use_kernel(kernel):
        launches = _launches(lambda: ran.append(_run(fused, x, None)))
    assert sum(launches.values()) == 2  # forward, backward
    out, states, grads = ran[0]
    ref_out, ref_states, ref_grads = _run(ref, x, None)
    assert_close("output", ref_out, out, F64)
    for name, want, got in [*zip(("h_n", "c_n"), ref_states, states),
                            *zip(("dx", "dW_ih", "dW_hh", "db_ih", "db_hh"), ref_grads, grads)]:
        assert_close(name, want, got, F64)


@GPU_LONG
def test_hundred_thousand_steps_past_int32_offsets_gpu():
    """T = 100,000, B=64, H=384: the output holds 2.46e9 elements, past what int32 offsets reach. One launch (the
    dispatch's own choice) against torch.nn run in slices of 10,000 steps (carrying h and c), float32 without
    TF32 on both sides."""
    torch.manual_seed(7)
    T, B, H, I, chunk = 100_000, 64, 384, 8, 10_000
    ref, fused = make_pair("lstm", I, H)
    ref, fused = ref.cuda(), fused.cuda()
    x = torch.randn(T, B, I, device="cuda")
    allow = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        ran = []
        with torch.no_grad(), fusedrnn.use_backend("triton"):
            assert sum(_launches(lambda: ran.append(fused(x))).values()) == 1
        out, (h, c) = ran[0]
        assert out.numel() > 2**31
        state = None
        with torch.no_grad():
            for t0 in range(0, T, chunk):
                want, state = ref(x[t0:t0 + chunk], state)
                torch.testing.assert_close(out[t0:t0 + chunk], want, atol=1e-4, rtol=1e-4, msg=f"steps {t0}+")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = allow
    torch.testing.assert_close(h, state[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(c, state[1], atol=1e-4, rtol=1e-4)


# ---- the cooperative kernel on a GPU ----------------------------------------------------------------------------


def _gpu_against_torch(cell, H, B, names, T=40, I=8):
    """A bidirectional layer in float32 on the GPU, forward and backward, against torch.nn (IEEE fp32 both sides)."""
    torch.manual_seed(0)
    ref, fused = make_pair(cell, I, H, dtype=torch.float32, bidirectional=True)
    ref, fused = ref.cuda(), fused.cuda()
    x = torch.randn(T, B, I, device="cuda", requires_grad=True)
    allow = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with kernels_ran(*names), fusedrnn.use_kernel("cooperative"):
            out, _, grads = _run(fused, x, None)
        ref_out, _, ref_grads = _run(ref, x, None)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = allow
    tol = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out, ref_out, **tol)
    for g, w in zip(grads, ref_grads):
        torch.testing.assert_close(g, w, **tol)


@NEEDS_GPU
@pytest.mark.parametrize("cell", CELLS)
def test_cooperative_multi_program_gpu(cell):
    """Many resident programs (hidden slices x batch tiles) meeting at the grid barrier."""
    H, B = 64, 40  # 4 hidden slices of 16 x 3 batch tiles of 16 rows (the last with 8)
    plan, why = dispatch.coop_plan(cell, torch.float32, torch.device("cuda"), H, B)
    if plan is None or plan.variant != "resident":
        pytest.skip(why or f"{cell} H={H} runs {plan.variant}")
    _gpu_against_torch(cell, H, B, KERNEL_NAMES["cooperative"])


@NEEDS_GPU
@pytest.mark.parametrize("H, B, rows", [(768, 16, 16), (1024, 64, 32)])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resident_target_shapes_bf16_gpu(cell, H, B, rows):
    """The resident plans dispatch picks at the target shapes, in bf16: B=16 H=768 (16-row tiles, K in three
    256-row blocks, the input projection fused in inference) and B=64 H=1024 (32-row tiles, K in eight 128-row
    blocks, precomputed input gates), training and inference, against torch.nn in float32 with the same
    (bf16-rounded) weights, input and output gradient: outputs within bf16's tolerance, the gradients of the input
    and every parameter within 2% (relative norm)."""
    plan, why = dispatch.coop_plan(cell, torch.bfloat16, torch.device("cuda"), H, B)
    if plan is None or plan.variant != "resident":  # a GPU with fewer SMs than an H100's 132
        pytest.skip(why or f"{cell} H={H} B={B} runs {plan.variant} here")
    assert plan.BLOCK_B == rows, plan
    torch.manual_seed(0)
    ref, fused = make_pair(cell, 32, H, dtype=torch.float32)
    fused = fused.cuda().to(torch.bfloat16)
    ref.load_state_dict({k: v.float() for k, v in fused.state_dict().items()})
    ref = ref.cuda()
    x = torch.randn(32, B, 32, device="cuda").to(torch.bfloat16)
    dy = torch.randn(32, B, H, device="cuda").to(torch.bfloat16).float()

    def run(module, inp):
        out, _ = module(inp)
        return out.float(), torch.autograd.grad((out.float() * dy).sum(), [inp, *module.parameters()])

    allow = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        want, want_grads = run(ref, x.float().requires_grad_())
        with kernels_ran(*KERNEL_NAMES["cooperative"]), fusedrnn.use_kernel("cooperative"):
            got, got_grads = run(fused, x.clone().requires_grad_())
            with torch.no_grad():
                inferred, _ = fused(x)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = allow
    torch.testing.assert_close(got, want, **TOL[torch.bfloat16])
    torch.testing.assert_close(inferred.float(), want, **TOL[torch.bfloat16])
    for g, w in zip(got_grads, want_grads):
        assert ((g.float() - w).norm() / w.norm()).item() < 2e-2


@NEEDS_GPU
@pytest.mark.parametrize("sms", [None, 8])
@pytest.mark.parametrize("cell", CELLS)
def test_streamed_multi_program_gpu(cell, sms, monkeypatch):
    """The streamed variant: 13 chunks of 16 units (H=200: the last one partial) x 3 batch tiles, one chunk per
    program, or (a GPU of 8 SMs, pretended) 2 programs per batch tile walking 6-7 chunks each."""
    H, B = 200, 40
    plan = KernelConfig(BLOCK_B=16, BLOCK_H=16, BLOCK_K=64, num_warps=4, num_stages=3, variant="streamed")
    monkeypatch.setattr(dispatch, "coop_plan", lambda *a, **k: (plan, None))
    if sms is not None:
        real = dispatch.device_limits
        monkeypatch.setattr(dispatch, "device_limits", lambda d: dataclasses.replace(real(d), sms=sms))
    _gpu_against_torch(cell, H, B, KERNEL_NAMES["streamed"])


@NEEDS_GPU
def test_cooperative_packed_gpu():
    _compare("lstm", "cooperative", B=40, T=9, I=8, H=32, layers=2, lengths=list(range(9, 0, -1)) * 4 + [3] * 4,
             dtype=torch.float64, device="cuda")


@NEEDS_GPU
def test_streamed_packed_gpu(monkeypatch):
    """Packed, both directions, 2 layers, through the streamed variant chosen by dispatch itself (H=768: the
    resident slice would not fit), in float64."""
    plan, why = dispatch.coop_plan("gru", torch.float64, torch.device("cuda"), 768, 40)
    assert plan is not None and plan.variant == "streamed", why
    _compare("gru", "streamed", B=40, T=9, I=8, H=768, layers=2, lengths=list(range(9, 0, -1)) * 4 + [3] * 4,
             dtype=torch.float64, device="cuda")


def test_tolerances_cover_persistent_dtypes():
    assert set(TOL) >= {torch.float64, torch.float32, torch.float16, torch.bfloat16}
