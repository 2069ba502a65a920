"""torch.compile of the aten path (torch's own CPU RNN, fusedrnn.aten): one opaque op whatever T is, no
recompile on a second call of the same shape, and a compiled training step that matches eager torch.nn for
every mix of inputs and parameters that do or do not require grad.

The suite runs with TRITON_INTERPRET=1 (conftest.py), where CPU tensors go to the Triton interpreter, so every
test here forces the "aten" backend, except the recompile test, which restores the plain-process setting (no
TRITON_INTERPRET, "auto"). Most tests compile with aot_eager (dynamo and AOTAutograd, which is where the graph
and the autograd of the op are made); the reported crash and one more training step compile with inductor,
whose C++ builds cost most of this file's time. Shapes are tiny.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import settings
from _helpers import assert_close, make_pair, torch_cpu_lstm_bf16_runs

F32 = torch.float32
OP = "fusedrnn.aten_rnn"


@pytest.fixture(autouse=True)
def aten_backend():
    """The aten backend, on the CPU (whatever the suite's default device), each test with dynamo fresh; inductor
    compiles in this process (its pool of compile workers would compete with the suite's own for the cores)."""
    import torch._inductor.config

    torch._dynamo.reset()
    on_cpu = contextlib.nullcontext() if torch.get_default_device().type == "cpu" else torch.device("cpu")
    with fusedrnn.use_backend("aten"), on_cpu, torch._inductor.config.patch(compile_threads=1):
        yield
    torch._dynamo.reset()


def _flat(result):
    out, hidden = result
    out = out.data if hasattr(out, "batch_sizes") else out
    return [out, *(hidden if isinstance(hidden, tuple) else (hidden,))]


def _loss(result):
    """Every output in the loss, each weighted differently, so each gradient path is checked."""
    return sum(((t.float() * (i + 1)).sin()).sum() for i, t in enumerate(_flat(result)))


class GraphCounter:
    """A backend that keeps the FX node count of every forward and backward graph AOTAutograd makes, and runs
    them eagerly."""

    def __init__(self):
        self.forward, self.backward, self.frames, self.targets = [], [], 0, set()

    def _compiler(self, into):
        def compile_(gm, example_inputs):
            into.append(len(gm.graph.nodes))
            self.targets |= {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
            return make_boxed_func(gm)
        return compile_

    def __call__(self, gm, example_inputs):
        self.frames += 1
        return aot_autograd(fw_compiler=self._compiler(self.forward), bw_compiler=self._compiler(self.backward))(
            gm, example_inputs)


def _states(cell, layers, batch, hidden, proj=0):
    h0 = torch.randn(layers, batch, proj or hidden)
    return (h0, torch.randn(layers, batch, hidden)) if cell == "lstm" else h0


# ------------------------------------------------------------------------------------------------ graph size


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_graph_size_does_not_grow_with_t(cell):
    """A 2-layer bidirectional module's forward and backward graphs have as many nodes at T=40 as at T=3 (traced
    step by step they grew with T: ~1,000 forward nodes for the LSTM at T=40), the aten op in both."""
    _, m = make_pair(cell, 3, 4, num_layers=2, bidirectional=True)
    sizes = {}
    for T in (3, 40):
        torch._dynamo.reset()
        counter = GraphCounter()
        f = torch.compile(lambda x: _loss(m(x)), fullgraph=True, backend=counter)
        f(torch.randn(T, 2, 3, requires_grad=True)).backward()
        assert counter.frames == 1
        assert any(OP in t for t in counter.targets), sorted(counter.targets)
        assert any(f"{OP}_backward" in t for t in counter.targets), sorted(counter.targets)
        sizes[T] = (counter.forward, counter.backward)
    assert sizes[3] == sizes[40], f"graph nodes (forward, backward) by T: {sizes}"
    assert sizes[3][0][0] < 100, sizes


# ------------------------------------------------------------------------------------------------- recompiles


def test_new_length_compiles_once():
    """A new sequence length recompiles once, with T symbolic (dynamo's automatic dynamic shapes); every
    later length reuses that graph."""
    _, m = make_pair("gru", 3, 4, num_layers=2, bidirectional=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    f = torch.compile(lambda x: m(x)[0].sum(), fullgraph=True, backend=counter)
    for T in (3, 40):
        f(torch.randn(T, 2, 3)).backward()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for T in (17, 100):
            f(torch.randn(T, 2, 3)).backward()
    assert counter.frame_count == 2


def test_no_recompile_on_second_call(monkeypatch):
    """As in a plain CPU process (no TRITON_INTERPRET, backend "auto", interpreter setting not yet read): the
    first call reads settings.interpreting() while dynamo traces; the second call of the same shape must not
    recompile (the lazily read setting is a constant to dynamo, not a guarded global)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(settings.SETTINGS, "_interpreting", None)
    _, m = make_pair("lstm", 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    with fusedrnn.use_backend("auto"):
        counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
        f = torch.compile(lambda x: m(x)[0].sum(), fullgraph=True, backend=counter)
        f(x).backward()
        assert settings.SETTINGS._interpreting is False
        with torch._dynamo.config.patch(error_on_recompile=True):
            f(x).backward()
            f(x).backward()
    assert counter.frame_count == 1


# ------------------------------------------------------------------------------------------- training steps


def _training_case(cell, compiled_fn, x_grad, frozen, with_hx, **kw):
    """A training step, compiled and eager (torch.nn, same weights): outputs and every gradient equal."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    ref, m = make_pair(cell, 3, 4, **kw)
    for p in (*ref.parameters(), *m.parameters()):
        p.requires_grad_(not frozen)
    layers = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    x = torch.randn(2, 5, 3) if kw.get("batch_first") else torch.randn(5, 2, 3)
    hx = _states(cell, layers, 2, 4, kw.get("proj_size", 0)) if with_hx else None

    def leaves():
        hs = None if hx is None else tuple(h.clone().requires_grad_() for h in (hx if cell == "lstm" else (hx,)))
        return x.clone().requires_grad_(x_grad), hs

    x1, h1 = leaves()
    x2, h2 = leaves()
    arg = lambda h: h if h is None or cell == "lstm" else h[0]  # noqa: E731
    expected = ref(x1, arg(h1))
    got = compiled_fn(m)(x2, arg(h2))
    for i, (e, g) in enumerate(zip(_flat(expected), _flat(got), strict=True)):
        assert g.dtype == e.dtype and g.shape == e.shape and g.stride() == e.stride(), f"result {i}"
        assert_close(f"result {i}", e, g, F32)
    if not any(t.requires_grad for t in _flat(got)):
        return
    _loss(expected).backward()
    _loss(got).backward()
    pairs = [(f"grad of {n}", p.grad, q.grad) for (n, p), q in zip(ref.named_parameters(), m.parameters())]
    pairs += [("grad of input", x1.grad, x2.grad)] + [(f"grad of hx[{i}]", a.grad, b.grad)
                                                       for i, (a, b) in enumerate(zip(h1 or (), h2 or ()))]
    for name, e, g in pairs:
        assert (e is None) == (g is None), f"{name}: {e is None=} {g is None=}"
        if e is not None:
            assert_close(name, e, g, F32)


def _compiled(backend):
    return lambda m: torch.compile(lambda x, hx: m(x, hx), fullgraph=True, backend=backend)


GRAD_CASES = list(itertools.product([False, True], [False, True], [False, True]))  # x_grad, frozen, with_hx


@pytest.mark.parametrize("cell,kw", [("lstm", dict(bidirectional=True, batch_first=True)),
                                     ("lstm", dict(proj_size=2)), ("gru", {}), ("rnn_tanh", {}),
                                     ("rnn_relu", dict(num_layers=2))], ids=["lstm", "lstm_proj", "gru", "rnn_tanh",
                                                                             "rnn_relu"])
def test_training_step_aot_eager(cell, kw):
    """Input requiring grad or not, parameters frozen or not, hx given or None: all 8 mixes."""
    for x_grad, frozen, with_hx in GRAD_CASES:
        _training_case(cell, _compiled("aot_eager"), x_grad, frozen, with_hx, **kw)


@pytest.mark.parametrize("cell,x_grad,frozen,with_hx", [("lstm", False, False, False), ("gru", True, True, True)])
def test_training_step_inductor(cell, x_grad, frozen, with_hx):
    """The reported crash (inductor, an input that does not require grad: ``mkldnn_rnn_layer``'s traced backward),
    and the opposite mix, through inductor's code generation."""
    _training_case(cell, _compiled("inductor"), x_grad, frozen, with_hx, num_layers=2, bidirectional=True)


def test_training_step_dropout():
    """Dropout in training: the op draws its masks from the global generator as eager torch does, and the
    backward replays them (compiled equals eager torch.nn with the same seed, gradients included); the generator
    ends where eager leaves it."""
    ref, m = make_pair("lstm", 3, 4, num_layers=3, dropout=0.5)
    x = torch.randn(5, 2, 3)
    f = torch.compile(lambda x: m(x), fullgraph=True, backend="aot_eager")
    results = []
    for fn, module in ((ref, ref), (f, m)):
        torch.manual_seed(1)
        out = fn(x)
        _loss(out).backward()
        results.append((out, [p.grad for p in module.parameters()], torch.rand(4)))
    (e, e_grads, e_next), (g, g_grads, g_next) = results
    for i, (a, b) in enumerate(zip(_flat(e), _flat(g), strict=True)):
        assert_close(f"result {i}", a, b, F32)
    for i, (a, b) in enumerate(zip(e_grads, g_grads, strict=True)):
        assert_close(f"grad {i}", a, b, F32)
    assert torch.equal(e_next, g_next), "the generator's state after the call differs from eager's"


def test_training_step_packed():
    """A PackedSequence: torch.nn's own check reads batch_sizes[0] (data-dependent), so fullgraph=True fails
    in dynamo with its message; with graph breaks the compiled step equals eager."""
    ref, m = make_pair("gru", 3, 4)
    packed = pack_padded_sequence(torch.randn(5, 2, 3), torch.tensor([5, 3]))
    with pytest.raises(torch._dynamo.exc.UserError, match="data-dependent"):
        torch.compile(lambda p: m(p), fullgraph=True, backend="aot_eager")(packed)
    torch._dynamo.reset()
    counter = GraphCounter()
    got = torch.compile(lambda p: m(p), backend=counter)(packed)
    assert any(OP in t for t in counter.targets), sorted(counter.targets)
    expected = ref(packed)
    _loss(expected).backward()
    _loss(got).backward()
    for i, (a, b) in enumerate(zip(_flat(expected), _flat(got), strict=True)):
        assert_close(f"result {i}", a, b, F32)
    for (n, p), q in zip(ref.named_parameters(), m.parameters()):
        assert_close(f"grad of {n}", p.grad, q.grad, F32)


def test_packed_functional_op():
    """The op's packed form (fused_lstm with batch_sizes), traced with the batch sizes as a graph input;
    gradients as torch.nn's."""
    ref, m = make_pair("lstm", 3, 4, bidirectional=True)
    packed = pack_padded_sequence(torch.randn(5, 2, 3), torch.tensor([5, 3]))
    weights = [getattr(m, n) for n in m._flat_weights_names]
    hx = _states("lstm", 2, 2, 4)
    counter = GraphCounter()
    f = torch.compile(lambda d, b, hx: fusedrnn.fused_lstm(d, hx, weights, bidirectional=True, batch_sizes=b),
                      backend=counter)
    got = f(packed.data, packed.batch_sizes, hx)
    assert any(OP in t for t in counter.targets), sorted(counter.targets)
    expected = ref(packed, hx)
    for i, (a, b) in enumerate(zip(_flat(expected), _flat(got), strict=True)):
        assert_close(f"result {i}", a, b, F32)
    _loss(expected).backward()
    _loss(got).backward()
    for (n, p), q in zip(ref.named_parameters(), m.parameters()):
        assert_close(f"grad of {n}", p.grad, q.grad, F32)


# ----------------------------------------------------------------------------------------- autocast, double bwd


@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("lstm", dict(proj_size=2)), ("gru", {}), ("rnn_tanh", {})],
                         ids=["lstm", "lstm_proj", "gru", "rnn_tanh"])
def test_autocast_bf16(cell, kw):
    """CPU autocast to bf16 inside the compiled function: the dtypes torch's RNN policy gives (everything bf16 for
    a dense LSTM, the state kept in fp32 for GRU and a projected LSTM's c), the same values and gradients as
    eager."""
    if cell == "lstm" and not kw and not torch_cpu_lstm_bf16_runs():
        pytest.skip("torch's own CPU LSTM (eager, the reference here) cannot run bf16 autocast on this CPU")
    _, m = make_pair(cell, 3, 4, num_layers=2, **kw)
    x = torch.randn(5, 2, 3, requires_grad=True)

    def step(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(x)

    results = []
    for fn in (step, torch.compile(step, fullgraph=True, backend="aot_eager")):
        out = fn(x)
        _loss(out).backward()
        results.append((_flat(out), x.grad))
        x.grad = None
    (e, e_grad), (g, g_grad) = results
    assert [t.dtype for t in g] == [t.dtype for t in e], ([t.dtype for t in e], [t.dtype for t in g])
    for i, (a, b) in enumerate(zip(e, g, strict=True)):
        assert torch.equal(a, b), f"result {i}"
    assert_close("grad of input", e_grad, g_grad, F32)


def test_double_backward():
    """Double backward through a compiled graph: AOTAutograd refuses it, clearly; where dynamo's graph runs
    without AOTAutograd (backend="eager"), the op's backward recomputes differentiably: torch.nn's second
    derivatives (eager itself is torch's own)."""
    ref, m = make_pair("gru", 3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    y = torch.compile(lambda x: m(x)[0].pow(2).sum(), fullgraph=True, backend="aot_eager")(x)
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()

    torch._dynamo.reset()
    grads = []
    for fn, module in ((lambda x: ref(x)[0].pow(2).sum(), ref),
                       (torch.compile(lambda x: m(x)[0].pow(2).sum(), fullgraph=True, backend="eager"), m)):
        (g,) = torch.autograd.grad(fn(x), x, create_graph=True)
        g.pow(2).sum().backward()
        grads.append([g, *(p.grad for p in module.parameters())])
    for i, (a, b) in enumerate(zip(*grads, strict=True)):
        assert_close(f"gradient {i}", a, b, F32)


def test_eager_calls_torch_directly():
    """Eager runs torch's function itself (its autograd node, no recomputation); the op is for compile only."""
    _, m = make_pair("lstm", 3, 4)
    out, _ = m(torch.randn(5, 2, 3))
    assert "Generated" not in type(out.grad_fn).__name__ and "fusedrnn" not in type(out.grad_fn).__name__
