"""Bad input: fusedrnn must fail like torch.nn (same exception type, and the same message where torch's is
meaningful), on the module and on the functional API, and a failed call must leave the module usable.

Every error case runs under the forced "triton" backend and under the default one (which, on a CPU with
TRITON_INTERPRET=1, also picks the Triton kernels). Shapes are tiny: the interpreter is slow.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import cells, dispatch, launch
from _helpers import DEVICE, assert_close, kernels_ran, make_pair

CELLS = list(cells.CELLS)  # every cell of the table
BACKENDS = ["triton", "default"]
I, H, T, B = 3, 4, 2, 2


# ---------------------------------------------------------------------------------------------------- helpers


def assert_same_error(ref_fn, fused_fn, match_message=True):
    """Run both; both must raise, with the same exception type and (if ``match_message``) the same str().
    Returns (torch's exception, fusedrnn's exception)."""
    with pytest.raises(Exception) as ref_info:
        ref_fn()
    with pytest.raises(Exception) as fused_info:
        fused_fn()
    ref_exc, fused_exc = ref_info.value, fused_info.value
    assert type(fused_exc) is type(ref_exc), (
        f"fusedrnn raised {type(fused_exc).__name__}({fused_exc}), torch.nn raised {type(ref_exc).__name__}({ref_exc})")
    if match_message:
        assert str(fused_exc) == str(ref_exc), f"message differs:\n  fusedrnn: {fused_exc}\n  torch.nn: {ref_exc}"
    return ref_exc, fused_exc


@contextlib.contextmanager
def backend(name: str):
    """The forced "triton" backend, or the default one (left as it is, checked to be "auto")."""
    if name == "default":
        assert fusedrnn.get_backend() == "auto"
        yield
    else:
        with fusedrnn.use_backend(name):
            yield


def functional(m, input, hx):
    """The functional API on the module's own parameters (read by name, as the brief asks)."""
    weights = [getattr(m, n) for n in m._flat_weights_names]
    kw = dict(bias=m.bias, num_layers=m.num_layers, dropout=m.dropout, training=m.training,
              bidirectional=m.bidirectional, batch_first=m.batch_first)
    if isinstance(m, fusedrnn.LSTM):
        return fusedrnn.fused_lstm(input, hx, weights, **kw)
    if isinstance(m, fusedrnn.GRU):
        return fusedrnn.fused_gru(input, hx, weights, **kw)
    return fusedrnn.fused_rnn(input, hx, weights, nonlinearity=m.nonlinearity, **kw)


def states(cell: str, shape, h=None, c=None):
    """hx for ``cell``: a tensor, or (h0, c0) for LSTM; ``h`` / ``c`` override one of the two (LSTM)."""
    h0 = torch.randn(shape) if h is None else h
    if cell != "lstm":
        return h0
    return h0, (torch.randn(shape) if c is None else c)


def _flat(result):
    out, hidden = result
    return [out, *(hidden if isinstance(hidden, tuple) else (hidden,))]


def assert_still_works(ref, fused, name: str):
    """After a failed call: a valid call on the same fused module runs the kernels and matches torch.nn."""
    x = torch.randn(B, T, I) if fused.batch_first else torch.randn(T, B, I)
    before = launch.launch_counts["step_fwd"]
    if name == "triton":
        with kernels_ran("step_fwd"):
            got = fused(x)
    else:
        got = fused(x)
        assert launch.launch_counts["step_fwd"] > before, "the default backend did not run the Triton kernels"
    for i, (r, g) in enumerate(zip(_flat(ref(x)), _flat(got), strict=True)):
        assert_close(f"result {i} after the error", r, g, torch.float32)


def check_fused(ref_fn, fused_module, call, name: str, match_message=True):
    """The fused module's call under backend ``name`` fails as ``ref_fn`` does. Returns fusedrnn's exception."""
    with backend(name):
        _, exc = assert_same_error(ref_fn, lambda: call(fused_module), match_message)
    return exc


# ------------------------------------------------------------------------------------------------------ setup


def test_default_backend_runs_triton_here():
    """The premise of the "default" runs below: on the suite's device (a GPU, else the CPU under the interpreter)
    the default backend picks the kernels."""
    assert fusedrnn.get_backend() == "auto"
    assert dispatch.select(DEVICE) == "triton"


# ---------------------------------------------------------------------------------------------------- input


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(I,), (T, B, I, 1)], ids=["1d", "4d"])
def test_input_rank(cell, name, shape):
    ref, fused = make_pair(cell, I, H)
    x = torch.randn(shape)
    check_fused(lambda: ref(x), fused, lambda m: m(x), name)
    check_fused(lambda: ref(x, states(cell, (1, B, H))), fused, lambda m: m(x, states(cell, (1, B, H))), name)
    with backend(name):
        assert_still_works(ref, fused, name)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(T, B, I + 1), (T, I + 1)], ids=["batched", "unbatched"])
def test_feature_size(cell, name, shape):
    ref, fused = make_pair(cell, I, H)
    x = torch.randn(shape)
    check_fused(lambda: ref(x), fused, lambda m: m(x), name)
    with backend(name):
        assert_still_works(ref, fused, name)


@pytest.mark.parametrize("name", [*BACKENDS, "aten"])
@pytest.mark.parametrize("cell", CELLS)
def test_feature_size_functional(cell, name):
    """fused_lstm/gru/rnn with an input of the wrong width name the input, as torch.nn does ("input.size(-1)
    must be equal to input_size. Expected 3, got 4"), not the weights; with a hidden state given or not."""
    ref, fused = make_pair(cell, I, H)
    x = torch.randn(T, B, I + 1)
    for hx in (None, states(cell, (1, B, H))):
        with backend(name):
            _, exc = assert_same_error(lambda: ref(x, hx), lambda: functional(fused, x, hx))
        assert str(exc) == f"input.size(-1) must be equal to input_size. Expected {I}, got {I + 1}"


# ------------------------------------------------------------------------------------------------ hidden state

# (which state is wrong, its shape) for a batched input [T, B, I] into a 1-layer module.
BAD_HIDDEN = {
    "h0_batch": ("h", (1, B + 1, H)),
    "h0_layers": ("h", (2, B, H)),
    "h0_hidden": ("h", (1, B, H + 1)),
    "c0_batch": ("c", (1, B + 1, H)),
    "c0_layers": ("c", (2, B, H)),
    "c0_hidden": ("c", (1, B, H + 1)),
}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell,case", [(cell, case) for cell in CELLS for case in BAD_HIDDEN
                                       if cell == "lstm" or BAD_HIDDEN[case][0] == "h"])  # c0: LSTM only
def test_hidden_shape(cell, name, case):
    which, shape = BAD_HIDDEN[case]
    ref, fused = make_pair(cell, I, H)
    x = torch.randn(T, B, I)
    bad = torch.randn(shape)
    hx = states(cell, (1, B, H), **{which: bad})
    check_fused(lambda: ref(x, hx), fused, lambda m: m(x, hx), name)
    with backend(name):
        assert_same_error(lambda: ref(x, hx), lambda: functional(fused, x, hx))
        assert_still_works(ref, fused, name)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_hidden_shape_unbatched(cell, name):
    """Unbatched input [T, I] with a 2-D hx of the wrong layer count, then of the wrong hidden size."""
    ref, fused = make_pair(cell, I, H)
    x = torch.randn(T, I)
    for shape in [(2, H), (1, H + 1)]:
        hx = states(cell, shape)
        check_fused(lambda: ref(x, hx), fused, lambda m: m(x, hx), name)
    with backend(name):
        assert_still_works(ref, fused, name)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_hidden_rank(cell, name):
    """Batched input with 2-D hx, unbatched input with 3-D hx (and, for LSTM, h0 and c0 of different ranks)."""
    ref, fused = make_pair(cell, I, H)
    x, xu = torch.randn(T, B, I), torch.randn(T, I)
    cases = [(x, states(cell, (1, H))), (xu, states(cell, (1, 1, H)))]
    if cell == "lstm":
        cases += [(x, (torch.randn(1, B, H), torch.randn(1, H))), (xu, (torch.randn(1, 1, H), torch.randn(1, H)))]
    for inp, hx in cases:
        check_fused(lambda: ref(inp, hx), fused, lambda m: m(inp, hx), name)
    with backend(name):
        # The functional API takes no unbatched input: a 2-D hx is just a wrong shape there (type only).
        assert_same_error(lambda: ref(x, states(cell, (1, H))), lambda: functional(fused, x, states(cell, (1, H))),
                          match_message=False)
        assert_still_works(ref, fused, name)


# ------------------------------------------------------------------------------------------------------ dtype


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_input_weight_dtype(cell, name):
    """float64 input into a float32 module: torch.nn's ValueError, word for word, with or without hx."""
    ref, fused = make_pair(cell, I, H)
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx64 = states(cell, (1, B, H), h=torch.randn(1, B, H, dtype=torch.float64),
                  c=torch.randn(1, B, H, dtype=torch.float64))
    for hx in (None, hx64):
        check_fused(lambda: ref(x, hx), fused, lambda m: m(x, hx), name)
        with backend(name):
            assert_same_error(lambda: ref(x, hx), lambda: functional(fused, x, hx))
    xu = torch.randn(T, I, dtype=torch.float64)
    check_fused(lambda: ref(xu), fused, lambda m: m(xu), name)
    with backend(name):
        assert_still_works(ref, fused, name)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["f64", "f16"])
def test_hidden_dtype(cell, name, dtype):
    """hx of another dtype than the input. torch raises a RuntimeError whose text is implementation-specific
    on CPU ("get_mkldnn_dtype: ...", "mat1 and mat2 must have the same dtype ..."): compare the type, and
    require our message to name both dtypes."""
    ref, fused = make_pair(cell, I, H)
    x = torch.randn(T, B, I)
    cases = [states(cell, (1, B, H), h=torch.randn(1, B, H, dtype=dtype))]
    if cell == "lstm":
        cases.append(states(cell, (1, B, H), c=torch.randn(1, B, H, dtype=dtype)))
    for hx in cases:
        exc = check_fused(lambda: ref(x, hx), fused, lambda m: m(x, hx), name, match_message=False)
        with backend(name):
            _, exc_f = assert_same_error(lambda: ref(x, hx), lambda: functional(fused, x, hx), match_message=False)
        for e in (exc, exc_f):
            assert str(torch.float32) in str(e) and str(dtype) in str(e), f"unclear message: {e}"
    with backend(name):
        assert_still_works(ref, fused, name)


# ----------------------------------------------------------------------------------------------------- device


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_hidden_device(cell, name):
    """hx (h0, or c0 of an LSTM) on 'meta' with a cpu input and module: torch's message, word for word."""
    ref, fused = make_pair(cell, I, H)
    x = torch.randn(T, B, I)
    meta = torch.randn(1, B, H, device="meta")
    cases = [states(cell, (1, B, H), h=meta)]
    if cell == "lstm":
        cases.append(states(cell, (1, B, H), c=meta))
        # A device error wins over a dtype error, as in aten (devices are checked before anything runs).
        cases.append((torch.randn(1, B, H, dtype=torch.float64), meta))
    for hx in cases:
        exc = check_fused(lambda: ref(x, hx), fused, lambda m: m(x, hx), name)
        assert str(exc) == ("Input and hidden tensors are not at the same device, found input tensor at cpu and "
                            "hidden tensor at meta")
        with backend(name):
            assert_same_error(lambda: ref(x, hx), lambda: functional(fused, x, hx))
    with backend(name):
        assert_still_works(ref, fused, name)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_input_device(cell, name):
    """Input on 'meta' into a cpu module: without hx (the zeros follow the input), the parameters are on the
    wrong device; with a cpu hx, the hidden state is, and torch reports that first."""
    ref, fused = make_pair(cell, I, H)
    x = torch.randn(T, B, I, device="meta")
    for hx, who in [(None, "parameter"), (states(cell, (1, B, H)), "hidden")]:
        exc = check_fused(lambda: ref(x, hx), fused, lambda m: m(x, hx), name)
        assert str(exc) == (f"Input and {who} tensors are not at the same device, found input tensor at meta and "
                            f"{who} tensor at cpu")
        with backend(name):
            assert_same_error(lambda: ref(x, hx), lambda: functional(fused, x, hx))
    with backend(name):
        assert_still_works(ref, fused, name)


# ------------------------------------------------------------------------------------------------ empty input

SEQ_LEN_0 = "Expected sequence length to be larger than 0 in RNN"


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
def test_zero_length(cell, name, batch_first):
    ref, fused = make_pair(cell, I, H, batch_first=batch_first)
    x = torch.randn((B, 0, I) if batch_first else (0, B, I))
    xu = torch.randn(0, I)
    for inp, hx in [(x, None), (x, states(cell, (1, B, H))), (xu, None), (xu, states(cell, (1, H)))]:
        exc = check_fused(lambda: ref(inp, hx), fused, lambda m: m(inp, hx), name)
        assert str(exc) == SEQ_LEN_0
    with backend(name):
        for hx in (None, states(cell, (1, B, H))):
            assert_same_error(lambda: ref(x, hx), lambda: functional(fused, x, hx))
        # An empty sequence with hx on another device: torch reports the device first.
        hx_meta = states(cell, (1, B, H), h=torch.randn(1, B, H, device="meta"))
        assert_same_error(lambda: ref(x, hx_meta), lambda: fused(x, hx_meta))
        assert_same_error(lambda: ref(x, hx_meta), lambda: functional(fused, x, hx_meta))
        assert_still_works(ref, fused, name)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no_hx", "hx"])
def test_zero_batch(cell, name, batch_first, with_hx, monkeypatch):
    """Batch size 0 is valid: forward and backward equal torch.nn's (shapes; weight gradients all zero)."""
    ref, fused = make_pair(cell, I, H, batch_first=batch_first)
    x = torch.randn((0, T, I) if batch_first else (T, 0, I))
    hx = states(cell, (1, 0, H)) if with_hx else None

    calls = []  # proof that the Triton path ran: no kernel launches with B=0, but its launchers are called
    for fn in ("recurrence_fwd", "recurrence_bwd"):
        original = getattr(launch, fn)
        monkeypatch.setattr(launch, fn, lambda *a, _f=original, _n=fn, **k: (calls.append(_n), _f(*a, **k))[1])

    results, grads = [], []
    for m in (ref, fused):
        xi = x.clone().requires_grad_()
        hi = None if hx is None else (tuple(t.clone().requires_grad_() for t in hx) if cell == "lstm"
                                     else hx.clone().requires_grad_())
        with backend(name) if m is fused else contextlib.nullcontext():
            res = _flat(m(xi, hi))
            sum(r.sum() for r in res).backward()
        results.append(res)
        extra = [] if hi is None else list(hi if cell == "lstm" else (hi,))
        grads.append([xi.grad, *(t.grad for t in extra), *(p.grad for _, p in m.named_parameters())])
    assert calls.count("recurrence_fwd") >= 1 and calls.count("recurrence_bwd") >= 1, calls
    for i, (r, g) in enumerate(zip(*results, strict=True)):
        assert g.shape == r.shape, f"result {i}: shape {tuple(g.shape)} != torch's {tuple(r.shape)}"
        assert g.dtype == r.dtype
    state_names = (["h0", "c0"] if cell == "lstm" else ["h0"]) if with_hx else []
    names = ["input", *state_names, *(n for n, _ in fused.named_parameters())]
    for n, r, g in zip(names, *grads, strict=True):
        assert (r is None) == (g is None), f"grad of {n}: {g} vs torch's {r}"
        if r is not None:
            assert g.shape == r.shape, f"grad of {n}: shape {tuple(g.shape)} != torch's {tuple(r.shape)}"
            assert torch.equal(g, r), f"grad of {n} differs from torch's (expected zeros): {g}"


# ------------------------------------------------------------------------------------------ not supported (yet)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_packed_sequence_bad_hidden(cell, name):
    """PackedSequence input: hx whose batch is not the packed batch fails as in torch.nn (after permutation).

    torch.nn.LSTM does not validate hx for packed input (GRU and RNN do): the error comes from inside aten
    ("The size of tensor a ..."), so for LSTM only the type is matched and fusedrnn gives the validation
    message torch.nn gives everywhere else."""
    ref, fused = make_pair(cell, I, H)
    packed = pack_padded_sequence(torch.randn(T, B, I), [T, T - 1])
    bad = torch.zeros(1, B + 1, H)
    hx = (bad, bad) if cell == "lstm" else bad
    with backend(name):
        exc, fused_exc = assert_same_error(lambda: ref(packed, hx), lambda: fused(packed, hx),
                                           match_message=cell != "lstm")
        if cell == "lstm":
            assert "Expected hidden[0] size" in str(fused_exc)
        assert_still_works(ref, fused, name)


def test_lstm_proj_size():
    """Invalid proj_size values and hidden states of the wrong width fail as in torch.nn."""
    for bad in (-1, H):
        assert_same_error(lambda: torch.nn.LSTM(I, H, proj_size=bad), lambda: fusedrnn.LSTM(I, H, proj_size=bad))
    ref, fused = make_pair("lstm", I, H, proj_size=2)
    x = torch.randn(T, B, I)
    for h0, c0 in [(torch.zeros(1, B, H), torch.zeros(1, B, H)), (torch.zeros(1, B, 2), torch.zeros(1, B, 2))]:
        assert_same_error(lambda: ref(x, (h0, c0)), lambda: fused(x, (h0, c0)))


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_proj_size_not_lstm(cell, proj_size):
    name = "GRU" if cell == "gru" else "RNN"
    kw = {} if cell == "gru" else {"nonlinearity": cell[len("rnn_"):]}
    exc, _ = assert_same_error(lambda: getattr(torch.nn, name)(I, H, proj_size=proj_size, **kw),
                               lambda: getattr(fusedrnn, name)(I, H, proj_size=proj_size, **kw))
    assert type(exc) is ValueError


def test_rnn_bad_nonlinearity():
    for args, kw in [((I, H), {"nonlinearity": "sigmoid"}), ((I, H, 1, "sigmoid"), {})]:
        exc, _ = assert_same_error(lambda: torch.nn.RNN(*args, **kw), lambda: fusedrnn.RNN(*args, **kw))
        assert type(exc) is ValueError
    # The functional API says the same.
    ref = torch.nn.RNN(I, H)
    weights = list(ref._flat_weights)
    assert_same_error(lambda: torch.nn.RNN(I, H, nonlinearity="sigmoid"),
                      lambda: fusedrnn.fused_rnn(torch.randn(T, B, I), None, weights, nonlinearity="sigmoid"))


CONSTRUCTOR_CASES = [
    ((I, H), dict(dropout=1.5)), ((I, H), dict(dropout=-0.1)), ((I, H), dict(dropout="a")),
    ((I, H), dict(dropout=True)), ((I, H), dict(dropout=None)), ((I, 4.0), {}), ((I, 0), {}), ((I, -2), {}),
    ((4.0, H), {}), ((0, H), {}), ((I, H), dict(num_layers=0)), ((I, H), dict(num_layers=-1)),
    ((I, H), dict(bias=1)), ((I, H), dict(batch_first="yes")), ((I, H, 1, True, False, 0.0, False, 0, None, None, 1), {}),
]


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("case", range(len(CONSTRUCTOR_CASES)))
def test_constructor_validation(name, case):
    """Bad constructor arguments raise torch.nn's exception, message included (warnings too)."""
    args, kwargs = CONSTRUCTOR_CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same_error(lambda: getattr(torch.nn, name)(*args, **kwargs),
                          lambda: getattr(fusedrnn, name)(*args, **kwargs))


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_constructor_validation(cls):
    for args, kwargs in [((I, -1), {}), ((I, H), {"device": "nope"})]:
        assert_same_error(lambda: getattr(torch.nn, cls)(*args, **kwargs),
                          lambda: getattr(fusedrnn, cls)(*args, **kwargs))
    assert_same_error(lambda: torch.nn.RNNCell(I, H, nonlinearity="x")(torch.randn(2, I)),
                      lambda: fusedrnn.RNNCell(I, H, nonlinearity="x")(torch.randn(2, I)))


def test_dropout_warning_matches_torch():
    with pytest.warns(UserWarning) as ref:
        torch.nn.LSTM(I, H, dropout=0.5)
    with pytest.warns(UserWarning) as fused:
        fusedrnn.LSTM(I, H, dropout=0.5)
    assert [str(w.message) for w in ref] == [str(w.message) for w in fused]
