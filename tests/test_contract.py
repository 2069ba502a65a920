"""The rest of the torch.nn contract: fusedrnn.convert/revert, serialization, dtype moves, flatten_parameters,
parametrizations, torch.func.functional_call, repr, reassigned and tied weights, and torch.compile.

Every fused forward here runs the Triton kernels (under the interpreter on CPU); ``kernels_ran`` proves it."""

import copy
import io
import os
import pickle
import warnings

import pytest
import torch
import torch._dynamo.testing
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

import fusedrnn
from fusedrnn.convert import convert, revert
from _helpers import DEVICE, assert_close, kernels_ran, make_pair

# One cell per module class; RNN with relu, the non-default nonlinearity, so a dropped attribute would show.
CELLS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn_relu"}
F32, F64 = torch.float32, torch.float64


def _flat(result):
    """(output, h_n) or (output, (h_n, c_n)) -> [output, h_n(, c_n)]."""
    out, h = result
    return [out, *h] if isinstance(h, tuple) else [out, h]


def _compare(name, ref_result, fused_result, dtype=F32):
    for i, (r, f) in enumerate(zip(_flat(ref_result), _flat(fused_result), strict=True)):
        assert_close(f"{name}[{i}]", r, f, dtype)


def _loss(result):
    """A scalar that reaches every output, with different weights so that no gradient cancels."""
    return sum((t * (i + 1)).sum() for i, t in enumerate(_flat(result)))


def _grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


def _compare_grads(name, ref, fused, dtype=F32):
    r, f = _grads(ref), _grads(fused)
    assert list(r) == list(f)
    for n in r:
        assert r[n] is not None and f[n] is not None, f"{name}: no gradient for {n}"
        assert_close(f"{name}: grad of {n}", r[n], f[n], dtype)


# ---------------------------------------------------------------------------------------------- convert


class Block(nn.Module):
    """Recurrent modules inside a Sequential (used as a container) inside a custom Module."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.LSTM(3, 4, batch_first=True),
                                 nn.GRU(4, 3, num_layers=2, bidirectional=True, batch_first=True, dropout=0.5))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        y, _ = self.seq[0](x)
        y, h = self.seq[1](y)
        return self.head(y), h


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block()])
        self.rnns = nn.ModuleDict({"relu": nn.RNN(3, 4, nonlinearity="relu", batch_first=True)})
        self.alias = self.blocks[0].seq[0]  # one module reachable at two places

    def forward(self, x):
        y, h_gru = self.blocks[0](x)
        out, h_rnn = self.rnns["relu"](y)
        return out, (h_gru, h_rnn)


RNN_CLASSES = {"LSTM": (nn.LSTM, fusedrnn.LSTM), "GRU": (nn.GRU, fusedrnn.GRU), "RNN": (nn.RNN, fusedrnn.RNN)}


def _recurrent(model):
    return {n: m for n, m in model.named_modules(remove_duplicate=False)
            if isinstance(m, (nn.modules.rnn.RNNBase, nn.RNNCellBase))}


def _same_parameters(model, params):
    now = dict(model.named_parameters())
    assert list(now) == list(params) and all(now[n] is params[n] for n in params), "parameters are not the same objects"


def test_convert_nested_model_and_revert():
    torch.manual_seed(0)
    model = Net().double()
    model.blocks[0].seq[0].weight_hh_l0.requires_grad_(False)
    model.blocks[0].seq[1].eval()  # has dropout=0.5: losing eval mode would change the output
    ref = copy.deepcopy(model)  # stays torch.nn
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)  # built before the conversion
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5, momentum=0.9)
    params = dict(model.named_parameters())
    x = torch.randn(2, 3, 3, dtype=F64)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every module here is convertible: no warning
        assert convert(model) is model
    names = _recurrent(model)
    assert set(names) == {"blocks.0.seq.0", "blocks.0.seq.1", "rnns.relu", "alias"}
    for name, m in names.items():
        assert type(m) is RNN_CLASSES[type(m).__name__][1], name
        r = ref.get_submodule(name)
        for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                     "bidirectional", "proj_size", "training", "_flat_weights_names", "_all_weights"):
            assert getattr(m, attr) == getattr(r, attr), (name, attr)
        assert all(w is getattr(m, n) for w, n in zip(m._flat_weights, m._flat_weights_names, strict=True))
    assert model.rnns["relu"].nonlinearity == "relu" and model.rnns["relu"].mode == "RNN_RELU"
    assert model.alias is model.blocks[0].seq[0], "a shared module must stay shared"
    assert not model.blocks[0].seq[1].training and model.rnns["relu"].training
    _same_parameters(model, params)
    assert all(p.dtype == F64 and p.device.type == DEVICE.type for p in model.parameters())
    assert not model.blocks[0].seq[0].weight_hh_l0.requires_grad

    with kernels_ran("step_fwd", "step_bwd"):
        result = model(x)
        _loss(result).backward()
    ref_result = ref(x)
    _loss(ref_result).backward()
    _compare("converted", ref_result, result, F64)
    assert model.blocks[0].seq[0].weight_hh_l0.grad is None
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            assert_close(f"grad of {n}", q.grad, p.grad, F64)
    # The optimizer built before the conversion updates the fused modules' weights.
    before = {n: p.detach().clone() for n, p in params.items()}
    opt.step(), ref_opt.step()
    assert not torch.equal(before["rnns.relu.weight_ih_l0"], params["rnns.relu.weight_ih_l0"])
    assert torch.equal(before["blocks.0.seq.0.weight_hh_l0"], params["blocks.0.seq.0.weight_hh_l0"])
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        assert_close(f"{n} after the step", q, p, F64)

    assert revert(model) is model
    for name, m in _recurrent(model).items():
        assert type(m) is RNN_CLASSES[type(m).__name__][0], name
        assert m.training == ref.get_submodule(name).training
    _same_parameters(model, params)
    assert model.alias is model.blocks[0].seq[0]
    with torch.no_grad():
        _compare("reverted", ref(x), model(x), F64)


def test_convert_bare_module():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="dropout"):
        ref = nn.GRU(3, 4, bias=False, dropout=0.25)  # torch warns: dropout with one layer
    params = list(ref.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # convert and revert do not repeat that warning
        fused = convert(copy.deepcopy(ref))  # a copy, so ref stays torch.nn
        fused_params = list(fused.parameters())
        assert type(fused) is fusedrnn.GRU and fused.dropout == 0.25 and fused.bias is False
        back = revert(fused)
    assert type(back) is nn.GRU and [id(p) for p in back.parameters()] == [id(p) for p in fused_params]
    model = convert(ref)
    assert type(model) is fusedrnn.GRU and all(p is q for p, q in zip(model.parameters(), params, strict=True))
    assert not any(p.is_meta for p in model.parameters())
    ref = revert(copy.deepcopy(model))
    model.eval(), ref.eval()
    x = torch.randn(2, 2, 3)
    with torch.no_grad(), kernels_ran("step_fwd"):
        _compare("bare", ref(x), model(x))


class OwnForward(nn.LSTM):
    def forward(self, input, hx=None):
        out, state = super().forward(input, hx)
        return out * 2, state


def test_convert_leaves_what_it_cannot_convert_and_warns():
    model = nn.Module()
    model.odd = nn.ModuleList([OwnForward(3, 4)])
    model.hooked = nn.GRU(3, 4)
    model.hooked.register_forward_hook(lambda *args: None)
    model.normed = nn.RNN(3, 4)
    weight_norm(model.normed, name="weight_hh_l0")
    model.compiled = nn.GRU(3, 4)
    model.compiled.compile()
    model.plain = nn.LSTM(3, 4)
    model.plain.note = "kept"  # an attribute set on the instance moves with it
    odd, hooked, normed, compiled = model.odd[0], model.hooked, model.normed, model.compiled

    with pytest.warns(UserWarning) as record:
        assert convert(model) is model
    messages = [str(w.message) for w in record]
    assert len(messages) == 4, messages
    assert "'odd.0'" in messages[0] and "OwnForward" in messages[0] and "subclass" in messages[0]
    assert "'hooked'" in messages[1] and "torch.nn.modules.rnn.GRU" in messages[1] and "hook" in messages[1]
    assert "'normed'" in messages[2] and "parametrization" in messages[2] and "weight_hh_l0" in messages[2]
    assert "'compiled'" in messages[3] and "compile" in messages[3]
    assert all(w.filename == __file__ for w in record), "the warning must point at the caller of convert"
    assert model.odd[0] is odd and model.hooked is hooked and model.normed is normed and model.compiled is compiled
    assert type(model.plain) is fusedrnn.LSTM and model.plain.note == "kept"

    with pytest.warns(UserWarning, match="the model itself.*OwnForward"):
        assert convert(odd) is odd


def test_convert_warns_on_what_fusedrnn_lacks(monkeypatch):
    """A configuration the fused class refuses (its constructor raises), or a class fusedrnn does not have."""

    class Refusing(fusedrnn.GRU):
        def __init__(self, *args, **kwargs):
            raise NotImplementedError("fusedrnn.GRU does not support this yet")

    monkeypatch.setattr(fusedrnn.modules, "GRU", Refusing)
    monkeypatch.delattr(fusedrnn.modules, "RNNCell")
    model = nn.Sequential(nn.GRU(3, 4), nn.RNNCell(3, 4), nn.LSTM(3, 4))
    gru, cell = model[0], model[1]
    with pytest.warns(UserWarning) as record:
        convert(model)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2, messages
    assert "'0'" in messages[0] and "NotImplementedError" in messages[0] and "does not support this" in messages[0]
    assert "'1'" in messages[1] and "no RNNCell" in messages[1]
    assert model[0] is gru and model[1] is cell and type(model[2]) is fusedrnn.LSTM


def test_convert_proj_size_and_cells():
    torch.manual_seed(0)
    model = nn.ModuleDict({"proj": nn.LSTM(3, 4, proj_size=2, bidirectional=True), "lstm_cell": nn.LSTMCell(3, 4),
                           "gru_cell": nn.GRUCell(3, 4, bias=False), "rnn_cell": nn.RNNCell(3, 4, nonlinearity="relu")})
    ref = copy.deepcopy(model)
    params = {name: list(m.parameters()) for name, m in model.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert(model)
    x = torch.randn(2, 2, 3)
    expected_types = {"proj": fusedrnn.LSTM, "lstm_cell": fusedrnn.LSTMCell, "gru_cell": fusedrnn.GRUCell,
                      "rnn_cell": fusedrnn.RNNCell}
    for name, m in model.items():
        assert type(m) is expected_types[name], name
        assert all(p is q for p, q in zip(m.parameters(), params[name], strict=True)), name
        for attr in ("input_size", "hidden_size", "bias", "nonlinearity", "proj_size"):
            assert getattr(m, attr, None) == getattr(ref[name], attr, None), (name, attr)
        with torch.no_grad(), kernels_ran("step_fwd"):
            r, f = ref[name](x if name == "proj" else x[0]), m(x if name == "proj" else x[0])
        r = _flat(r) if name == "proj" else (list(r) if isinstance(r, tuple) else [r])
        f = _flat(f) if name == "proj" else (list(f) if isinstance(f, tuple) else [f])
        for i, (a, b) in enumerate(zip(r, f, strict=True)):
            assert_close(f"{name}[{i}]", a, b, F32)
    # fusedrnn's cells derive from torch.nn's: convert leaves them alone, revert turns them back
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert convert(model)["lstm_cell"] is model["lstm_cell"]
        revert(model)
    for name, m in model.items():
        assert type(m) is type(ref[name]), name
        assert all(p is q for p, q in zip(m.parameters(), params[name], strict=True)), name


# ---------------------------------------------------------------------------------------------- plumbing


@pytest.fixture(params=list(CELLS))
def pair(request):
    """(torch.nn module, fusedrnn module): bidirectional, identical weights."""
    torch.manual_seed(0)
    return make_pair(CELLS[request.param], 3, 4, bidirectional=True)


X = (2, 2, 3)  # T, B, I: every fused step is a kernel launch, slow under the interpreter


def _run_both(ref, fused, x, name, dtype=F32):
    """Forward and backward of both modules (the fused one on the kernels); compares outputs and gradients."""
    with kernels_ran("step_fwd", "step_bwd"):
        result = fused(x)
        _loss(result).backward()
    ref_result = ref(x.to(dtype) if x.dtype != dtype else x)
    _loss(ref_result).backward()
    _compare(name, ref_result, result, dtype)
    _compare_grads(name, ref, fused, dtype)
    return ref_result, result


def test_pickle_save_load_deepcopy(pair):
    ref, fused = pair
    x = torch.randn(*X)
    buf = io.BytesIO()
    torch.save(fused, buf)
    # torch >= 2.6 loads with weights_only=True by default, which refuses whole modules: they need
    # weights_only=False (trusted files only); a state_dict loads with weights_only=True.
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buf)
    buf.seek(0)
    clones = {"torch.load": torch.load(buf, weights_only=False), "pickle": pickle.loads(pickle.dumps(fused)),
              "deepcopy": copy.deepcopy(fused)}
    buf = io.BytesIO()
    torch.save(fused.state_dict(), buf)
    buf.seek(0)
    fresh = type(fused)(3, 4, bidirectional=True,
                        **({"nonlinearity": fused.nonlinearity} if isinstance(fused, fusedrnn.RNN) else {}))
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    clones["state_dict"] = fresh
    with torch.no_grad(), kernels_ran("step_fwd"):
        expected = fused(x)
        _compare("torch.nn", ref(x), expected)
        for how, clone in clones.items():
            assert type(clone) is type(fused) and repr(clone) == repr(fused), how
            assert all(w is getattr(clone, n) for w, n in zip(clone._flat_weights, clone._flat_weights_names,
                                                              strict=True)), how
            assert not any(p is q for p, q in zip(clone.parameters(), fused.parameters())), how
            _compare(how, expected, clone(x))
    clones["deepcopy"].weight_hh_l0.data.zero_()  # a clone is independent of the original
    assert torch.equal(fused.weight_hh_l0, ref.weight_hh_l0)


def test_to_float64_and_double(pair):
    ref, fused = pair
    doubled = copy.deepcopy(fused).double()
    fused = fused.to(torch.float64)
    for m in (fused, doubled):
        assert all(p.dtype == F64 for p in m.parameters())
        assert all(w is getattr(m, n) for w, n in zip(m._flat_weights, m._flat_weights_names, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(fused.parameters(), doubled.parameters(), strict=True))
    _run_both(ref.double(), fused, torch.randn(*X, dtype=F64), "float64", F64)


def test_half(pair):
    ref, fused = pair
    fused.half()
    assert all(p.dtype == torch.float16 for p in fused.parameters())
    # Reference: an fp32 run of the same fp16-rounded weights and input.
    ref.load_state_dict({k: v.float() for k, v in fused.state_dict().items()})
    x = torch.randn(*X).half()
    with kernels_ran("step_fwd", "step_bwd"):
        result = fused(x)
        _loss(result).backward()
    ref_result = ref(x.float())
    _loss(ref_result).backward()
    assert all(t.dtype == torch.float16 for t in _flat(result))
    _compare("float16", ref_result, result, torch.float16)
    _compare_grads("float16", ref, fused, torch.float16)
    assert all(p.grad.dtype == torch.float16 for p in fused.parameters())
    fused.float()
    assert all(p.dtype == F32 for p in fused.parameters())


def test_flatten_parameters_is_a_no_op(pair):
    ref, fused = pair
    before = [(p, p.data_ptr(), p.detach().clone()) for p in fused.parameters()]
    assert fused.flatten_parameters() is None
    for (p, ptr, value), q in zip(before, fused.parameters(), strict=True):
        assert p is q and q.data_ptr() == ptr and torch.equal(q, value)
    x = torch.randn(*X)
    with torch.no_grad(), kernels_ran("step_fwd"):
        _compare("after flatten_parameters", ref(x), fused(x))


def test_weight_norm(pair):
    ref, fused = pair
    for m in (ref, fused):
        for name in ("weight_hh_l0", "weight_ih_l0"):
            weight_norm(m, name=name)
    assert parametrize.is_parametrized(fused, "weight_hh_l0") and parametrize.is_parametrized(fused, "weight_ih_l0")
    _run_both(ref, fused, torch.randn(*X), "weight_norm")
    for name in ("weight_hh_l0", "weight_ih_l0"):
        for orig in ("original0", "original1"):  # g and v
            r = getattr(getattr(ref.parametrizations, name), orig)
            f = getattr(getattr(fused.parametrizations, name), orig)
            assert f.grad is not None, f"no gradient reached {name}.{orig}"
            assert_close(f"grad of {name}.{orig}", r.grad, f.grad, F32)


def test_functional_call(pair):
    ref, fused = pair
    torch.manual_seed(1)
    params = {n: (torch.randn_like(p) * 0.4).requires_grad_() for n, p in fused.named_parameters()}
    x = torch.randn(*X)
    with kernels_ran("step_fwd", "step_bwd"):
        result = torch.func.functional_call(fused, params, (x,))
        grads = torch.autograd.grad(_loss(result), list(params.values()))
    ref_result = torch.func.functional_call(ref, params, (x,))
    ref_grads = torch.autograd.grad(_loss(ref_result), list(params.values()))
    _compare("functional_call", ref_result, result)
    for n, r, f in zip(params, ref_grads, grads, strict=True):
        assert_close(f"functional_call: grad of {n}", r, f, F32)
    with torch.no_grad(), kernels_ran("step_fwd"):
        own = fused(x)  # afterwards the module uses its own parameters again
        _compare("own parameters after functional_call", ref(x), own)
    assert not torch.allclose(own[0], result[0])


@pytest.mark.parametrize("kwargs", [{}, dict(num_layers=2, bias=False, batch_first=True, dropout=0.5,
                                            bidirectional=True)])
@pytest.mark.parametrize("cls", list(CELLS))
def test_repr(cls, kwargs):
    torch_cls, fused_cls = RNN_CLASSES[cls]
    extra = {"nonlinearity": "relu"} if cls == "RNN" else {}
    ref, fused = torch_cls(3, 4, **kwargs, **extra), fused_cls(3, 4, **kwargs, **extra)
    # print(model) names fused modules: "fusedrnn.LSTM(3, 4)" where torch.nn prints "LSTM(3, 4)".
    assert repr(fused) == "fusedrnn." + repr(ref)
    name = torch_cls.__name__
    assert repr(nn.Sequential(fused)) == repr(nn.Sequential(ref)).replace(f"{name}(", f"fusedrnn.{name}(")
    assert fusedrnn.is_fused(fused) and not fusedrnn.is_fused(ref)


def test_reassigned_weights(pair):
    ref, fused = pair
    torch.manual_seed(1)
    new_hh = torch.randn_like(fused.weight_hh_l0) * 0.5
    new_bias = torch.randn_like(fused.bias_ih_l0_reverse) * 0.5
    for m in (ref, fused):
        m.weight_hh_l0 = nn.Parameter(new_hh.clone())
        m.bias_ih_l0_reverse = nn.Parameter(new_bias.clone())
    _run_both(ref, fused, torch.randn(*X), "reassigned")
    assert fused.weight_hh_l0.grad is not None and fused.bias_ih_l0_reverse.grad is not None


def test_tied_weights(pair):
    ref, fused = pair
    for m in (ref, fused):
        m.weight_hh_l0_reverse = m.weight_hh_l0  # tied across directions
        m.weight_ih_l0_reverse = m.weight_ih_l0
    assert len(list(fused.parameters())) == len(list(ref.parameters())) == 6
    # the gradient of a tied weight sums the contributions of both directions
    _run_both(ref, fused, torch.randn(*X), "tied")


def test_weight_shared_between_modules():
    torch.manual_seed(0)
    ref_a, fused_a = make_pair("gru", 3, 3)
    ref_b, fused_b = make_pair("gru", 3, 3)
    for a, b in ((ref_a, ref_b), (fused_a, fused_b)):
        b.weight_hh_l0 = a.weight_hh_l0
        b.weight_ih_l0 = a.weight_hh_l0  # tied across the input and the recurrent weight too
    x = torch.randn(*X[:2], 3)
    with kernels_ran("step_fwd", "step_bwd"):
        result = fused_b(fused_a(x)[0])
        _loss(result).backward()
    ref_result = ref_b(ref_a(x)[0])
    _loss(ref_result).backward()
    _compare("shared", ref_result, result)
    _compare_grads("shared a", ref_a, fused_a)
    _compare_grads("shared b", ref_b, fused_b)


# ---------------------------------------------------------------------------------------------- compile


class Tagger(nn.Module):
    def __init__(self, cls):
        super().__init__()
        extra = {"nonlinearity": "relu"} if cls is nn.RNN else {}
        self.rnn = cls(3, 4, bidirectional=True, batch_first=True, **extra)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        out, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        return self.head(out), h


# inductor, torch.compile's default, by default. On CPU its C++ builds cost most of this group's time (about
# 45 s of CPU, most of it once per process); FUSEDRNN_TEST_COMPILE_BACKEND=aot_eager (about 10 s) still traces
# everything through dynamo and AOTAutograd, and only skips inductor's lowering and code generation.
COMPILE_BACKEND = os.environ.get("FUSEDRNN_TEST_COMPILE_BACKEND", "inductor")


@pytest.mark.parametrize("cls", list(CELLS))
def test_compile_fullgraph(cls):
    """torch.compile(fullgraph=True) of a converted model: one graph (no break), the fused custom op inside it,
    and the outputs and gradients of eager. (Dynamo refuses torch.nn.LSTM/GRU/RNN themselves unless
    torch._dynamo.config.allow_rnn is set, so the converted model is also the one that compiles whole.)"""
    torch.manual_seed(0)
    model = convert(Tagger(RNN_CLASSES[cls][0]))  # a torch.nn model, converted: what users will compile
    assert type(model.rnn) is RNN_CLASSES[cls][1]
    x = torch.randn(2, 2, 3)
    with kernels_ran("step_fwd", "step_bwd"):
        eager = model(x)
        _loss(eager).backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend(COMPILE_BACKEND)
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    with kernels_ran("step_fwd", "step_bwd"):
        result = compiled(x)
        _loss(result).backward()
    assert counter.frame_count == 1, f"{counter.frame_count} graphs: a graph break"
    op = f"fusedrnn.{CELLS[cls]}_layer"
    targets = {str(node.target) for node in counter.graphs[0].graph.nodes if node.op == "call_function"}
    assert any(op in t for t in targets), f"{op} not in the graph: {sorted(targets)}"
    _compare("compiled", eager, result)
    for n, p in model.named_parameters():
        assert_close(f"compiled: grad of {n}", eager_grads[n], p.grad, F32)
    with kernels_ran("step_fwd"):
        _compare("compiled, second call", eager, compiled(x))
    assert counter.frame_count == 1, "recompiled on the second call"
    with torch.no_grad(), kernels_ran("step_fwd"):  # inference: a graph of its own (grad mode is guarded)
        _compare("compiled, no_grad", eager, compiled(x))
    assert counter.frame_count == 2
