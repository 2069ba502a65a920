"""fusedrnn.demo: the task generators, the CLI end to end, and training with fusedrnn against torch.nn.

The convergence test trains a demo model whose recurrent layer runs the fused Triton kernels (under the
interpreter on a CPU-only machine, as tests/conftest.py arranges) and its torch.nn twin, from the same
state_dict on the same batches, and compares the loss of every step.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from _helpers import kernels_ran

import fusedrnn
from fusedrnn.demo import tasks
from fusedrnn.demo.__main__ import main
from fusedrnn.demo.models import CELLS, build_model
from fusedrnn.demo.runner import run_all
from fusedrnn.demo.train import TrainConfig, train

def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- convergence: fusedrnn (Triton kernels) and torch.nn train alike ---------------------------------------------

# Tiny on purpose: under the interpreter every training step launches 2*SEQ interpreted kernels (forward and
# backward) at ~30-60 ms of CPU each, so these four tests cost about 45 s of CPU together.
SEQ, BATCH, HIDDEN, STEPS = 3, 4, 8, 50
# The fused model runs where the kernels run compiled if there is a GPU; its torch.nn twin always on the CPU
# (aten), so the reference is the same everywhere.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Tolerance of the per-step losses. The runs differ only in float32 summation order inside the recurrence (the
# kernels accumulate h @ W_hh^T and the weight-gradient sums in their own order), ~1e-7 relative per operation,
# which 50 Adam steps carry into the weights. Measured worst relative difference of a loss under the
# interpreter: 2.8e-7 (lstm), 4.9e-7 (gru), 3.7e-7 (rnn_tanh), 4.3e-7 (irnn). rtol 1e-5 leaves a 20x margin
# and still catches small real errors: scaling W_hh by 1.001 moves these losses by 1.2e-4 to 9.2e-4.
RTOL, ATOL = 1e-5, 0.0


def _torch_twin(model):
    """The same model on the CPU with its fusedrnn layer replaced by the torch.nn class, same weights."""
    rnn = model.rnn
    kwargs = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, fusedrnn.RNN) else {}
    ref_rnn = getattr(torch.nn, type(rnn).__name__)(rnn.input_size, rnn.hidden_size, **kwargs)
    ref_rnn.load_state_dict(rnn.state_dict())
    twin = copy.deepcopy(model).cpu()
    twin.rnn = ref_rnn
    return twin


@pytest.mark.parametrize("cell", CELLS)
def test_training_matches_torch_nn(cell):
    # segments: a target at every step (SEQ x BATCH per batch), so even this tiny model learns visibly in 50 steps.
    task = tasks.TASKS["segments"]
    cfg = TrainConfig(hidden=HIDDEN, steps=STEPS, batch=BATCH, lr=3e-2, clip=1.0)
    fused = build_model(cell, task.n_in, HIDDEN, task.n_out, True, seed=1, t_max=task.memory_steps(SEQ),
                        device=DEVICE)
    ref = _torch_twin(fused)
    assert type(ref.rnn) in (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)
    with kernels_ran("step_fwd", "step_bwd"):
        got = torch.tensor(train(fused, task, SEQ, cfg, data_seed=2))
    want = torch.tensor(train(ref, task, SEQ, cfg, data_seed=2))
    assert got.shape == want.shape == (STEPS,)
    assert want[-10:].mean() < 0.6 * want[:10].mean(), "the model did not learn: a weak comparison"
    err = ((got - want).abs() / want.abs()).max().item()
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL, msg=lambda m: f"{cell}: max rel err {err:.2e}\n{m}")


# --- task generators --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_generator_shapes_and_seed(name):
    task = tasks.TASKS[name]
    x, y = task.generate(3, 7, _gen(0))
    assert x.shape == (7, 3, task.n_in) and x.dtype == torch.float32
    if task.kind == "steps":
        assert y.shape == (7, 3) and y.dtype == torch.int64
    else:
        assert y.shape == (3,) and y.dtype == (torch.float32 if task.kind == "value" else torch.int64)
    if task.kind != "value":
        assert 0 <= y.min() and y.max() < task.n_out
    x2, y2 = task.generate(3, 7, _gen(0))
    assert torch.equal(x, x2) and torch.equal(y, y2), "same seed, different data"
    x3, _ = task.generate(3, 7, _gen(1))
    assert not torch.equal(x, x3), "different seeds, same data"


def test_first_token_labels():
    x, y = tasks.first_token(64, 9, _gen(0))
    tokens = x.argmax(-1)
    assert torch.equal(y, tokens[0])
    assert (y < tasks.FIRST_TOKEN_VALUES).all() and (tokens[1:] >= tasks.FIRST_TOKEN_VALUES).all()
    assert (x.sum(-1) == 1).all()


def test_adding_labels():
    x, y = tasks.adding(64, 10, _gen(0))
    values, markers = x[..., 0], x[..., 1]
    assert (markers.sum(0) == 2).all()
    assert (markers[:5].sum(0) == 1).all() and (markers[5:].sum(0) == 1).all(), "one marker in each half"
    torch.testing.assert_close(y, (values * markers).sum(0))
    assert ((values >= 0) & (values < 1)).all()


def test_binary_add_labels():
    # Hand-checked: 6 + 7 = 13 in 4 bits, least significant first: 0110 + 1110 -> 1011.
    T = 4
    a, b = [0, 1, 1, 0], [1, 1, 1, 0]
    assert sum(bit << i for i, bit in enumerate(a)) == 6 and sum(bit << i for i, bit in enumerate(b)) == 7
    x, y = tasks.binary_add(256, T, _gen(0))
    assert (x.sum(-1) == 1).all()
    pair = x.argmax(-1)  # 2 a_t + b_t
    bits_a, bits_b = pair // 2, pair % 2
    rows = [i for i in range(256) if bits_a[:, i].tolist() == a and bits_b[:, i].tolist() == b]
    assert rows, "the generator never drew 6 + 7 in 256 samples of 4 bits"
    assert y[:, rows[0]].tolist() == [1, 0, 1, 1]
    # Every sample: the bits of y are those of (a + b) mod 2**T.
    weights = 2 ** torch.arange(T)[:, None]
    assert torch.equal((y * weights).sum(0), ((bits_a * weights).sum(0) + (bits_b * weights).sum(0)) % 2 ** T)


def test_distractors_labels():
    T, S, D = 20, tasks.SIGNAL_SYMBOLS, tasks.DISTRACTOR_SYMBOLS
    x, y = tasks.distractors(64, T, _gen(0))
    tokens = x.argmax(-1)
    for i in range(64):
        where = (tokens[:, i] >= D).nonzero().flatten().tolist()
        assert len(where) == 2 and 2 <= where[0] <= 4 and 10 <= where[1] <= 12
        first, second = (tokens[t, i].item() - D for t in where)
        assert y[i].item() == S * first + second


def test_segments_labels():
    x, y = tasks.segments(64, 40, _gen(0))
    tokens = x.argmax(-1)
    assert (tokens[0] == 0).all(), "every sequence opens with a boundary"
    for i in range(64):
        count = body = 0
        for t in range(40):
            if tokens[t, i] == 0:
                count = body = 0
            else:
                body += 1
                count += int(tokens[t, i] == 2)
            assert body <= tasks.SEGMENT_MAX
            assert y[t, i].item() == count
    assert (tokens[1:] == 0).any() and (y > 1).any(), "no segment structure drawn"


def test_segments_hand_checked():
    # boundary, 1, 1, 0, boundary, 1  ->  counts 0, 1, 2, 2, 0, 1
    tokens = torch.tensor([0, 2, 2, 1, 0, 2])
    gen = _gen(0)
    for _ in range(2000):
        x, y = tasks.segments(64, 6, gen)
        hits = (x.argmax(-1) == tokens[:, None]).all(0).nonzero().flatten()
        if len(hits):
            break
    else:
        pytest.fail("the pattern was never drawn")
    assert y[:, hits[0]].tolist() == [0, 1, 2, 2, 0, 1]


# --- the CLI ----------------------------------------------------------------------------------------------------

def test_cli_smoke(tmp_path, capsys):
    with fusedrnn.use_backend("aten"):
        assert main(["--quick", "--steps", "3", "--lengths", "5", "--workers", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fusedrnn backend: aten" in out
    for name in tasks.TASKS:
        assert f"{name}: " in out
    for cell in CELLS:
        assert cell in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["runs"]) == len(tasks.TASKS) * len(CELLS)
    run = data["runs"][0]
    assert len(run["losses"]) == 3 and len(run["grad_init"]) == 5 and 0 <= run["accuracy"] <= 1
    assert (tmp_path / "table.txt").read_text().strip() in out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "plots: skipped, matplotlib is not installed (pip install matplotlib)" in out
    else:
        assert (tmp_path / "accuracy.png").stat().st_size > 0
        assert all((tmp_path / f"{name}.png").exists() for name in tasks.TASKS)


def test_workers_give_the_same_results():
    # Worker processes (the default on a multi-core CPU) get this process's backend setting, and every run seeds
    # its own data and weights: the results do not depend on where a run ran.
    cfg = TrainConfig(hidden=8, steps=3, batch=4, eval_batch=16, probe_batch=16)
    with fusedrnn.use_backend("aten"):
        here = run_all(["first_token"], ["lstm", "irnn"], [5], cfg)
        there = run_all(["first_token"], ["lstm", "irnn"], [5], cfg, workers=2)
    assert [(r.cell, r.losses, r.accuracy, r.grad_end) for r in here] == \
           [(r.cell, r.losses, r.accuracy, r.grad_end) for r in there]


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--full" in capsys.readouterr().out
