"""fusedrnn.demo: the task generators, the verdicts and legend of the report, the CLI end to end (and --plot),
and training with fusedrnn against torch.nn.

The convergence test trains a demo model whose recurrent layer runs the fused Triton kernels (under the
interpreter on a CPU-only machine, as tests/conftest.py arranges) and its torch.nn twin, from the same
state_dict on the same batches, and compares the loss of every step.
"""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import torch
from _helpers import kernels_ran

import fusedrnn
from fusedrnn.demo import report, tasks
from fusedrnn.demo.__main__ import PRESETS, main
from fusedrnn.demo.models import CELLS, build_model
from fusedrnn.demo.runner import run_all
from fusedrnn.demo.train import RunResult, TrainConfig, train
from fusedrnn.demo.train import forward as demo_forward


def _has_matplotlib() -> bool:
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # sys.modules["matplotlib"] is None: blocked on purpose
        return False


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
    assert tasks.segment_boundaries(x)[:, hits[0]].tolist() == [True, False, False, False, True, False]


def test_segment_boundaries_flag_the_resets():
    # The flags a reset= variant would hand to the model: exactly the steps where the count starts afresh.
    x, y = tasks.segments(32, 30, _gen(3))
    flags = tasks.TASKS["segments"].boundaries(x)
    assert flags.shape == (30, 32) and flags.dtype == torch.bool and flags[0].all()
    assert (y[flags] == 0).all()
    assert (y[1:][~flags[1:]] >= y[:-1][~flags[1:]]).all(), "a count fell without a boundary"



def test_segments_reset_hands_the_boundaries_to_the_layer_as_reset():
    """The reset run's model gets the boundary flags as reset=: its state entering a boundary is zero, so its output
    there is the output of a fresh sequence that starts at the boundary."""
    torch.manual_seed(0)
    task = tasks.TASKS["segments_reset"]
    assert task.reset and not tasks.TASKS["segments"].reset
    model = build_model("rnn_tanh", task.n_in, 6, task.n_out, True, seed=0, t_max=4)
    x, _ = tasks.segments(3, 12, _gen(4))
    flags = task.boundaries(x)
    b = int(flags[1:].any(0).nonzero()[0])  # a row with a boundary after t = 0
    t = int(flags[1:, b].nonzero()[0]) + 1
    out = demo_forward(model, task, x)
    fresh = model(x[t:, b:b + 1])
    torch.testing.assert_close(out[t:, b:b + 1][:1], fresh[:1])
    assert not torch.allclose(demo_forward(model, tasks.TASKS["segments"], x)[t, b], fresh[0, 0])

# --- verdicts: derived from the table, never written in advance ---------------------------------------------------

def _fake(task, table):
    """RunResults from {cell: {length: accuracy}}: nothing trained."""
    return [RunResult(task, cell, t, acc, 0.5, [1.0], [1.0] * t, [0.5] * t)
            for cell, row in table.items() for t, acc in row.items()]


def test_verdict_lists_only_what_the_table_shows():
    table = {"rnn_tanh": {10: 0.93, 30: 0.98, 60: 0.42}, "irnn": {10: 0.84, 30: 0.22, 60: 0.01},
             "gru": {10: 0.99, 30: 0.98, 60: 0.94}, "lstm": {10: 0.99, 30: 0.81, 60: 0.95}}
    v = report.verdict(_fake("segments", table) + _fake("first_token", {"irnn": {10: 1.0, 30: 1.0, 60: 1.0}}),
                       "segments")
    assert v.lengths == (10, 30, 60) and v.pass_percent == tasks.TASKS["segments"].pass_percent == 90
    assert v.everywhere() == ["gru"], "a cell failing at some length is listed as passing"
    assert v.nowhere() == ["irnn"]
    assert v.passing_at(60) == ["gru", "lstm"] and v.passing_at(30) == ["rnn_tanh", "gru"]
    assert v.passed["lstm"] == (10, 60) and v.failed["lstm"] == (30,)
    text = v.text()
    assert text.startswith("verdict (pass: accuracy >= 90%): gru passes at every length (T=10,30,60);")
    assert "rnn_tanh passes at T=10,30 only, fails at T=60" in text
    assert "lstm passes at T=10,60 only, fails at T=30" in text
    assert "irnn fails at every length" in text
    # The other task's runs stay out of it.
    assert report.verdict(_fake("segments", table), "first_token").passed == {}


def test_verdict_extremes_and_the_printed_rounding():
    # Pass reads the accuracy as printed: 89.6% prints as 90% and passes, 89.4% prints as 89% and fails.
    assert report.shown_percent(0.896) == 90 and report.passes(tasks.TASKS["segments"], 0.896)
    assert report.shown_percent(0.894) == 89 and not report.passes(tasks.TASKS["segments"], 0.894)
    every = report.verdict(_fake("binary_add", {c: {5: 1.0, 10: 0.9} for c in CELLS}), "binary_add")
    assert every.text().endswith("every cell passes at every length (T=5,10).")
    # --quick's binary addition: 0-44% must not read as learned.
    none = report.verdict(_fake("binary_add", {c: {5: 0.44, 10: 0.0} for c in CELLS}), "binary_add")
    assert none.everywhere() == [] and none.text().endswith("no cell passes at any length (T=5,10) in this run.")
    both = report.verdict(_fake("adding", {"gru": {10: 1.0, 30: 0.95}, "lstm": {10: 0.9, 30: 0.95}}), "adding")
    assert both.text().endswith("gru, lstm pass at every length (T=10,30).")


def test_table_shows_verdict_apart_from_background():
    table = {"rnn_tanh": {10: 1.0, 60: 0.14}, "lstm": {10: 1.0, 60: 1.0}}
    text = report.format_table(_fake("first_token", table), width=1000)
    lines = text.splitlines()
    assert lines[3].split()[:3] == ["rnn_tanh", "100%", "14%"]
    verdicts = [line for line in lines if line.startswith("verdict")]
    assert verdicts == ["verdict (pass: accuracy >= 90%): lstm passes at every length (T=10,60); rnn_tanh passes "
                        "at T=10 only, fails at T=60."]
    background = [line for line in lines if line.startswith("background: ")]
    assert len(background) == 1 and tasks.TASKS["first_token"].background in background[0]
    for task in tasks.TASKS.values():  # background says what a task asks, not who wins
        assert "verdict" not in task.background and "%" not in task.background


def test_default_run_leaves_adding_out():
    assert "adding" not in PRESETS["default"]["tasks"] and "adding" in tasks.TASKS
    assert list(PRESETS["default"]["tasks"]) == list(tasks.DEFAULT_TASKS)
    assert PRESETS["quick"]["tasks"] == PRESETS["full"]["tasks"] == list(tasks.TASKS)


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
    saved = (tmp_path / "table.txt").read_text()
    assert saved.strip() in out
    legend = report.format_legend(PRESETS["quick"]["eval_batch"])
    assert saved.rstrip().endswith(legend) and legend.startswith("accuracy: share of 128 held-out sequences")
    assert "verdict: computed from the table above" in saved
    assert saved.count("verdict (pass: accuracy >= ") == len(tasks.TASKS)
    if not _has_matplotlib():
        assert "plots: skipped, matplotlib is not installed (pip install matplotlib" in out
    else:
        assert (tmp_path / "accuracy.png").stat().st_size > 0
        assert all((tmp_path / f"{name}.png").exists() for name in tasks.TASKS)


def test_plot_redraws_from_results_json(tmp_path, capsys):
    # --plot trains nothing: it reads results.json (as write_json writes it) and draws the PNGs next to it.
    runs = _fake("first_token", {"rnn_tanh": {5: 0.5, 10: 0.2}, "lstm": {5: 1.0, 10: 0.9}})
    runs += _fake("segments", {"rnn_tanh": {5: 0.95, 10: 0.9}, "lstm": {5: 0.99, 10: 0.8}})
    report.write_json(str(tmp_path / "results.json"), runs, TrainConfig(), {"preset": "made up"})
    assert report.read_json(str(tmp_path / "results.json"))[0] == runs
    if not _has_matplotlib():
        assert main(["--plot", str(tmp_path)]) == 1
        assert "matplotlib is not installed" in capsys.readouterr().out
        pytest.skip("matplotlib is not installed (pip install matplotlib): the plots themselves are not drawn")
    assert main(["--plot", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "plots of 8 runs from" in out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["accuracy.png", "first_token.png", "results.json", "segments.png"]
    assert all((tmp_path / n).stat().st_size > 1000 for n in names if n.endswith(".png"))


def test_plot_without_results_json(tmp_path):
    with pytest.raises(SystemExit, match="no .*results.json"):
        main(["--plot", str(tmp_path)])


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
