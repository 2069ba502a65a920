"""Many programs on CPU (issue 20, item 7): the interpreter's grid modes of tests/_grid.py.

Threaded mode: the cooperative kernels (``_coop_*_kernel``), resident and streamed (``RESIDENT`` True and False),
with several hidden slices and batch tiles that meet at their grid barriers, even and uneven, against torch.nn in
float64: dense, packed (unsorted lengths), both directions, two layers; outputs, final states and every gradient.
Under the plain interpreter these grids would wait forever at their first barrier.

Program-order mode: the step kernels and the batch-tiled persistent kernels, run with their programs in grid,
reversed and shuffled order, give bitwise the same results (no race between the programs of a launch).

Each mode is shown to be able to fail: a toy kernel that waits for a counter nobody increments is reported as a
deadlock within its timeout, its threads gone; a toy kernel with a cross-program race differs between orders.

The tests force what the dispatcher would not choose on a CPU: ``fusedrnn.use_kernel("cooperative")``, a
cooperative plan with small tiles (``dispatch.coop_plan`` patched: on a CPU ``coop_config`` plans a single program),
and, for the streamed variant, the SM count ``dispatch.coop_launch_grid`` hands ``coop_grid`` (``dispatch.coop_grid``
patched: it passes 1 SM for non-CUDA devices). ``launch.launch_counts`` proves which kernel ran and the mode's
record of launches that their grids had several programs.
"""

import os
import threading
import time
import warnings

import pytest
import torch
import triton
import triton.language as tl
from torch.nn.utils.rnn import pack_padded_sequence

import _grid
import fusedrnn
from _helpers import assert_close, make_pair
from fusedrnn import dispatch, launch
from fusedrnn.autotune import runtime as autotune_runtime
from fusedrnn.autotune import spaces
from fusedrnn.autotune.spaces import KernelConfig

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="grid modes of the Triton interpreter (a GPU runs the cooperative grids for "
                                       "real: tests/test_persistent.py)")

F64 = torch.float64
KERNELS = {"resident": ("_coop_fwd_kernel", "_coop_bwd_kernel", "resident_fwd", "resident_bwd"),
           "streamed": ("_coop_fwd_kernel", "_coop_bwd_kernel", "streamed_fwd", "streamed_bwd"),
           "tiled": ("_tiled_fwd_kernel", "_tiled_bwd_kernel", "tiled_fwd", "tiled_bwd"),
           "step": ("_step_fwd_kernel", "_step_bwd_kernel", "step_fwd", "step_bwd")}


def _states(s):
    return list(s) if isinstance(s, tuple) else [s]


def _inputs(cell, *, T, B, I, H, layers, lengths, seed=0):
    """(torch.nn module, fused module, x, hx): both directions, float64, random initial states."""
    torch.manual_seed(seed)
    ref, fused = make_pair(cell, I, H, dtype=F64, num_layers=layers, bidirectional=True)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    hx = tuple(torch.randn(2 * layers, B, H, dtype=F64, requires_grad=True)
               for _ in range(2 if cell == "lstm" else 1))
    return ref, fused, x, hx if cell == "lstm" else hx[0]


def _run(module, x, hx, lengths):
    """Outputs, final states and the gradients of x, hx and every parameter of one forward and backward (a fixed
    random weighting of everything the module returns)."""
    sort = lengths is not None and sorted(lengths, reverse=True) == list(lengths)
    inp = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=sort)
    out, states = module(inp, hx)
    out = out if lengths is None else out.data
    g = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for s in _states(states):
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    grads = torch.autograd.grad(loss, [x, *_states(hx), *module.parameters()])
    return out.detach(), [s.detach() for s in _states(states)], list(grads)


def _assert_matches(want, got, names):
    assert_close("output", want[0], got[0], F64)
    for i, (w, g) in enumerate(zip(want[1], got[1])):
        assert_close(f"final state {i}", w, g, F64)
    for name, w, g in zip(names, want[2], got[2]):
        assert_close(f"grad {name}", w, g, F64)


def _grad_names(module, hx):
    return ["x", *[f"hx{i}" for i in range(len(_states(hx)))], *[n for n, _ in module.named_parameters()]]


def _launched(fn):
    """(fn(), {kernel name: launches} during it)."""
    before = dict(launch.launch_counts)
    out = fn()
    return out, {k: v - before.get(k, 0) for k, v in launch.launch_counts.items() if v != before.get(k, 0)}


# ---- threaded: the cooperative kernels with many programs ----------------------------------------------------


def _cooperative_case(monkeypatch, variant, cell, *, H, B, block_h, sms=None, T=4, I=3, layers=1, lengths=None,
                      want_grid):
    """One bidirectional (``layers``-layer) run of ``cell`` through the ``variant`` cooperative kernel in the
    threaded mode, against torch.nn; every launch's grid must be ``want_grid`` (hidden programs, batch tiles)."""
    plan = KernelConfig(BLOCK_B=2, BLOCK_H=block_h, BLOCK_K=triton.next_power_of_2(H), num_warps=1, num_stages=1,
                      variant=variant)
    monkeypatch.setattr(dispatch, "coop_plan", lambda *a, **k: (plan, None))
    if sms is not None:
        real = spaces.coop_grid
        monkeypatch.setattr(dispatch, "coop_grid", lambda cfg, hidden, batch, _sms: real(cfg, hidden, batch, sms))
    ref, fused, x, hx = _inputs(cell, T=T, B=B, I=I, H=H, layers=layers, lengths=lengths)
    fwd, bwd, fwd_count, bwd_count = KERNELS[variant]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the batch-tiled kernel
        with fusedrnn.use_backend("triton"), fusedrnn.use_kernel("cooperative"), _grid.threaded() as mode:
            got, counts = _launched(lambda: _run(fused, x, hx, lengths))
    n = 2 * layers  # launches per pass: one per layer and direction
    assert counts == {fwd_count: n, bwd_count: n}, counts
    assert mode.grids(fwd) == mode.grids(bwd) == [(*want_grid, 1)] * n, mode.launches
    _assert_matches(_run(ref, x, hx, lengths), got, _grad_names(fused, hx))


@pytest.mark.parametrize("cell,H,B,grid", [
    ("lstm", 6, 3, (2, 2)),      # uneven: the last slice has 2 of 4 units, the last batch tile 1 of 2 rows
    ("gru", 6, 3, (2, 2)),
    ("rnn_relu", 12, 4, (3, 2)),  # even: 3 full slices, 2 full tiles
    ("rnn_tanh", 80, 3, (3, 2)),  # K=80 held as one 128-row block, 32-unit slices, the last of 16
    ("lstm", 200, 3, (4, 2)),     # K=200 held as one 256-row block (masked tail), 64-unit slices, the last of 8
    ("gru", 300, 3, (3, 2)),      # K=300 held as two 256-row blocks (not padded to 512 rows of one), the last
                                  # slice 44 of 128 units; the forward's fused-gate dot pads GRU's 3 gates to 4
])
def test_resident_many_programs_dense(cell, H, B, grid, monkeypatch):
    """Resident cooperative kernel: every program keeps its W_hh slice, c and carries for the whole sequence; the
    slices of a batch tile exchange h (forward) and dHp (backward) through memory at every step's barrier."""
    _cooperative_case(monkeypatch, "resident", cell, H=H, B=B, block_h={80: 32, 200: 64, 300: 128}.get(H, 4),
                      want_grid=grid)


@pytest.mark.parametrize("cell,lengths", [("lstm", [3, 5, 1, 4]), ("rnn_tanh", [5, 4, 4, 2])])
def test_resident_many_programs_packed_two_layers(cell, lengths, monkeypatch):
    """Packed, lengths unsorted (lstm) or sorted (rnn_tanh): batch tiles whose rows end at different steps, reverse
    sequences starting at their own last element; two bidirectional layers (the second reads 2H inputs)."""
    _cooperative_case(monkeypatch, "resident", cell, H=6, B=4, block_h=4, T=5, layers=2, lengths=lengths,
                      want_grid=(2, 2))


@pytest.mark.parametrize("cell,H,block_h,sms,grid", [
    ("gru", 6, 2, 4, (2, 2)),       # 3 chunks over 2 programs per batch tile: chunks {0, 2} and {1} (uneven)
    ("rnn_tanh", 5, 2, 6, (3, 2)),  # 3 chunks, one per program, the last with 1 of 2 units
])
def test_streamed_many_programs_dense(cell, H, block_h, sms, grid, monkeypatch):
    """Streamed cooperative variant: each program walks hidden chunks i, i + n_h, ... with the batch-tiled
    kernels' tile code (c in memory), re-reading their W_hh rows every step, and every step ends at the batch
    tile's barrier."""
    _cooperative_case(monkeypatch, "streamed", cell, H=H, B=3, block_h=block_h, sms=sms, want_grid=grid)


def test_streamed_many_programs_packed_two_layers(monkeypatch):
    """Streamed, even (4 chunks, 2 per program), packed with unsorted lengths, two bidirectional layers."""
    _cooperative_case(monkeypatch, "streamed", "lstm", H=8, B=4, block_h=2, sms=4, T=5, layers=2,
                      lengths=[3, 5, 1, 4], want_grid=(2, 2))


def test_resident_many_programs_inference(monkeypatch):
    """Without grad the resident forward fuses the input projection (x_t @ W_ih^T inside, in BLOCK_K blocks)."""
    plan = KernelConfig(BLOCK_B=2, BLOCK_H=4, BLOCK_K=2, num_warps=1, num_stages=1, variant="resident")
    monkeypatch.setattr(dispatch, "coop_plan", lambda *a, **k: (plan, None))
    ref, fused, x, hx = _inputs("lstm", T=4, B=3, I=5, H=6, layers=1, lengths=None)
    with torch.no_grad(), fusedrnn.use_backend("triton"), fusedrnn.use_kernel("cooperative"), \
            _grid.threaded() as mode:
        (out, states), counts = _launched(lambda: fused(x, hx))
        want_out, want_states = ref(x, hx)
    assert counts == {"resident_fwd": 2} and mode.grids("_coop_fwd_kernel") == [(2, 2, 1)] * 2, mode.launches
    assert_close("output", want_out, out, F64)
    for w, g in zip(want_states, states):
        assert_close("final state", w, g, F64)


# ---- program order: the step and batch-tiled kernels ---------------------------------------------------------


def _order_case(kernel, cell, cfg, *, T, B, H, layers, lengths, want_programs):
    """The run in grid, reversed and shuffled program order: bitwise equal, and (grid order) torch.nn's."""
    ref, fused, x, hx = _inputs(cell, T=T, B=B, I=3, H=H, layers=layers, lengths=lengths)
    fwd, bwd, fwd_count, bwd_count = KERNELS[kernel]

    def compute():
        with fusedrnn.use_backend("triton"), fusedrnn.use_kernel(kernel), autotune_runtime.forced(cfg):
            got, counts = _launched(lambda: _run(fused, x, hx, lengths))
        assert set(counts) == {fwd_count, bwd_count}, counts
        return got

    results = _grid.results_in_orders(compute)
    for order in ("reversed", "shuffled"):
        _grid.assert_same_bits(f"{order} vs grid order", results["grid"], results[order])
    launches = results["modes"]["grid"].launches
    assert {name for name, _ in launches} == {fwd, bwd}, launches
    most = max(x * y * z for _, (x, y, z) in launches)
    assert most >= want_programs, f"at most {most} programs per launch: {launches}"
    _assert_matches(_run(ref, x, hx, lengths), results["grid"], _grad_names(fused, hx))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_kernels_program_order(cell):
    """Step kernels, packed with unsorted lengths, both directions: 2 x 2 programs per step (row tiles x slices)."""
    cfg = KernelConfig(BLOCK_B=2, BLOCK_H=4, BLOCK_K=4, num_warps=1, num_stages=1, variant="step")
    _order_case("step", cell, cfg, T=3, B=4, H=6, layers=1, lengths=[2, 3, 1, 3], want_programs=4)


def test_tiled_kernels_program_order():
    """Batch-tiled persistent kernels: one program per row, both directions, packed, unsorted."""
    cfg = KernelConfig(BLOCK_B=1, BLOCK_H=8, BLOCK_K=8, num_warps=1, num_stages=1, variant="tiled")
    _order_case("tiled", "gru", cfg, T=4, B=4, H=5, layers=1, lengths=[3, 4, 1, 2], want_programs=4)


# ---- each mode can fail ---------------------------------------------------------------------------------------


@triton.jit
def _wait_for(p_counter, target):
    seen = tl.atomic_add(p_counter, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(p_counter, 0, sem="acquire", scope="gpu")


@triton.jit
def _toy_barrier_kernel(p_bar, p_out, ROUNDS: tl.constexpr):
    """Each round every program writes its value, meets the others at a grid barrier and reads its neighbour's."""
    pid = tl.program_id(0)
    n = tl.num_programs(0)
    for r in range(ROUNDS):
        tl.store(p_out + r * n + pid, pid * 10 + r)
        tl.atomic_add(p_bar, 1, sem="release", scope="gpu")
        _wait_for(p_bar, (r + 1) * n)
        tl.store(p_out + (ROUNDS + r) * n + pid, tl.load(p_out + r * n + (pid + 1) % n))


@triton.jit
def _toy_deadlock_kernel(p_counter):
    """Program 1 waits for a counter that nobody increments."""
    if tl.program_id(0) == 1:
        _wait_for(p_counter, 1)


@triton.jit
def _toy_prefix_kernel(p_out, RACY: tl.constexpr):
    """Program i stores 1 + what program i - 1 stored (RACY: read without any ordering), else 1 + i."""
    pid = tl.program_id(0)
    if RACY:
        prev = tl.load(p_out + pid - 1, mask=pid > 0, other=0)
    else:
        prev = pid
    tl.store(p_out + pid, prev + 1)


def _program_threads():
    return [t for t in threading.enumerate() if t.name.startswith("_toy")]


def test_threaded_mode_runs_a_grid_barrier():
    """4 programs, 3 barrier rounds: each sees its neighbour's value of the round (the plain interpreter would
    wait forever in program 0)."""
    n, rounds = 4, 3
    bar, out = torch.zeros(1, dtype=torch.int32), torch.full((2 * rounds * n, ), -1, dtype=torch.int32)
    with _grid.threaded() as mode:
        _toy_barrier_kernel[(n, )](bar, out, ROUNDS=rounds)
    assert mode.launches == [("_toy_barrier_kernel", (n, 1, 1))]
    values = torch.arange(n)[None, :] * 10 + torch.arange(rounds)[:, None]
    assert torch.equal(out.view(2 * rounds, n), torch.cat([values, values.roll(-1, 1)]).int())
    assert bar.item() == rounds * n


def test_threaded_mode_with_the_plain_interpreter(monkeypatch):
    """The mode under the interpreter's own language patching (FUSEDRNN_PLAIN_INTERPRETER=1: re-patched at every
    helper call, from every program thread at once; tests/_interpreter.py's patch_lang bypassed)."""
    from triton.runtime import interpreter

    current = interpreter._patch_lang
    cells = [c.cell_contents for c in (current.__closure__ or ())]
    genuine = next((f for f in [current, *cells] if callable(f) and getattr(f, "__module__", "") ==
                    interpreter.__name__ and f.__name__ == "_patch_lang"), None)
    if genuine is None:
        pytest.skip("the interpreter's own _patch_lang is not reachable")
    monkeypatch.setattr(interpreter, "_patch_lang", genuine)
    test_threaded_mode_runs_a_grid_barrier()


def test_threaded_mode_reports_a_deadlock_within_its_timeout():
    from triton.runtime import interpreter

    call = interpreter.GridExecutor.__call__
    start = time.monotonic()
    with pytest.raises(Exception, match=r"GridDeadlock.*\(1, 0, 0\).*polled unchanged memory"):
        with _grid.threaded(stall_s=0.5):
            _toy_deadlock_kernel[(2, )](torch.zeros(1, dtype=torch.int32))
    assert time.monotonic() - start < 15
    assert not _program_threads(), "the stuck program's thread still runs after the abort"
    assert interpreter.GridExecutor.__call__ is call and type(interpreter.interpreter_builder) is \
        interpreter.InterpreterBuilder, "the mode did not restore the interpreter"


def test_ordered_mode_reports_a_barrier_instead_of_hanging():
    """Run one after another, a program at a grid barrier waits for one that runs after it: reported."""
    with pytest.raises(Exception, match="GridDeadlock.*threaded mode"):
        with _grid.program_order("reversed", stall_s=0.3):
            _toy_barrier_kernel[(2, )](torch.zeros(1, dtype=torch.int32), torch.zeros(8, dtype=torch.int32),
                                       ROUNDS=1)


@pytest.mark.parametrize("racy", [False, True])
def test_ordered_mode_detects_a_race(racy):
    n = 5

    def compute():
        out = torch.zeros(n, dtype=torch.int32)
        _toy_prefix_kernel[(n, )](out, RACY=racy)
        return out

    results = _grid.results_in_orders(compute, seed=3)
    assert torch.equal(results["grid"], torch.arange(1, n + 1, dtype=torch.int32))  # grid order hides the race
    assert [m.launches for m in results["modes"].values()] == [[("_toy_prefix_kernel", (n, 1, 1))]] * 3
    for order in ("reversed", "shuffled"):
        if racy:
            with pytest.raises(AssertionError, match="differ between program orders"):
                _grid.assert_same_bits(order, results["grid"], results[order])
        else:
            _grid.assert_same_bits(order, results["grid"], results[order])


def test_shuffled_order_is_neither_grid_nor_reversed_order():
    programs = [(x, y, 0) for x in range(2) for y in range(3)]
    for seed in range(5):
        order = _grid._permuted(programs, "shuffled", seed)
        assert sorted(order) == programs and order not in (programs, programs[::-1])
    assert _grid._permuted(programs, "reversed", 0) == programs[::-1]
    with pytest.raises(ValueError, match="order must be"):
        _grid.program_order("sideways")


def test_modes_do_not_nest():
    with _grid.program_order("reversed"):
        with pytest.raises(RuntimeError, match="already active"):
            with _grid.threaded():
                pass
