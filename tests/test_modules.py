"""The modules as drop-ins: constructor, parameters, state_dict, dropout, dispatch, packaging."""

import importlib
import importlib.metadata
import inspect

import pytest
import torch

import fusedrnn
from fusedrnn import dispatch, launch, settings
from _helpers import MODULES, assert_close, kernels_ran, make_pair
from test_parity import CELLS


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kwargs", [{}, dict(num_layers=3, bias=False, bidirectional=True, batch_first=True)])
def test_parameters_match_torch(cell, kwargs):
    if cell.startswith("rnn_"):
        kwargs = dict(kwargs, nonlinearity=cell[4:])
    torch.manual_seed(0)
    ref = getattr(torch.nn, MODULES[cell])(5, 6, **kwargs)
    torch.manual_seed(0)
    fused = getattr(fusedrnn, MODULES[cell])(5, 6, **kwargs)
    r_params, f_params = list(ref.named_parameters()), list(fused.named_parameters())
    assert [n for n, _ in r_params] == [n for n, _ in f_params]  # names and registration order
    for (name, r), (_, f) in zip(r_params, f_params):
        assert r.shape == f.shape and r.dtype == f.dtype, name
        assert torch.equal(r, f), f"{name}: initialisation differs from torch.nn under the same seed"
    for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "_flat_weights_names", "_all_weights"):
        assert getattr(ref, attr) == getattr(fused, attr), attr
    assert list(ref.state_dict()) == list(fused.state_dict())


def test_rnn_nonlinearity_is_fourth_positional():
    ref = torch.nn.RNN(3, 4, 2, "relu", False, True, 0.0, True)
    fused = fusedrnn.RNN(3, 4, 2, "relu", False, True, 0.0, True)
    for attr in ("mode", "nonlinearity", "num_layers", "bias", "batch_first", "bidirectional"):
        assert getattr(ref, attr) == getattr(fused, attr), attr


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_round_trip(cell):
    torch.manual_seed(0)
    ref, fused = make_pair(cell, 5, 6, num_layers=2, bidirectional=True)
    other_ref, other_fused = make_pair(cell, 5, 6, num_layers=2, bidirectional=True)
    # torch.nn -> fusedrnn happened in make_pair; fusedrnn -> torch.nn:
    other_ref.load_state_dict(fused.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(other_ref.state_dict()[k], v)
    x = torch.randn(4, 2, 5)
    with torch.no_grad(), kernels_ran("step_fwd"):
        assert_close("output", ref(x)[0], fused(x)[0], torch.float32)
        assert_close("output", other_ref(x)[0], fused(x)[0], torch.float32)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout(cell):
    torch.manual_seed(0)
    _, fused = make_pair(cell, 5, 6, num_layers=3, dropout=0.5)
    x = torch.randn(5, 2, 5)
    fused.eval()
    with torch.no_grad(), kernels_ran("step_fwd"):
        eval_out = fused(x)[0]
        fused.train()
        fused.dropout = 0.0  # re-read on every forward: p=0 in training equals eval
        assert torch.equal(fused(x)[0], eval_out)
        fused.dropout = 0.5
        torch.manual_seed(1)
        a = fused(x)[0]
        torch.manual_seed(1)
        b = fused(x)[0]
        torch.manual_seed(2)
        c = fused(x)[0]
    assert torch.equal(a, b), "dropout under a fixed seed must be reproducible"
    assert not torch.equal(a, eval_out) and not torch.equal(a, c), "dropout 0.5 in training changed nothing"
    fused.eval()
    with torch.no_grad():
        assert torch.equal(fused(x)[0], eval_out), "eval must ignore dropout"


def test_dropout_gradients_flow():
    torch.manual_seed(0)
    _, fused = make_pair("lstm", 5, 6, num_layers=2, dropout=0.3)
    x = torch.randn(4, 2, 5, requires_grad=True)
    with kernels_ran("step_fwd", "step_bwd"):
        out, _ = fused(x)
        out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fused.parameters())


def test_flatten_parameters_is_a_noop():
    _, fused = make_pair("lstm", 3, 4)
    before = [p.data_ptr() for p in fused.parameters()]
    fused.flatten_parameters()
    assert before == [p.data_ptr() for p in fused.parameters()]


def test_reassigned_weights_are_used():
    torch.manual_seed(0)
    ref, fused = make_pair("gru", 3, 4)
    new = torch.nn.Parameter(torch.randn_like(ref.weight_hh_l0))
    ref.weight_hh_l0 = new
    fused.weight_hh_l0 = new
    x = torch.randn(3, 2, 3)
    with torch.no_grad(), kernels_ran("step_fwd"):
        assert_close("output", ref(x)[0], fused(x)[0], torch.float32)


# ---- dispatch ---------------------------------------------------------------------------------------------


@pytest.mark.cpu_only("plain CPU tensors without the interpreter take torch's path")
def test_auto_uses_aten_on_cpu_without_interpreter(monkeypatch):
    """Plain CPU runs torch's own implementation: same numbers as torch.nn, no kernel launched."""
    monkeypatch.setattr(settings.SETTINGS, "_interpreting", False)
    torch.manual_seed(0)
    ref, fused = make_pair("lstm", 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3, requires_grad=True)
    before = dict(launch.launch_counts)
    out, (h, c) = fused(x)
    out.sum().backward()
    assert dict(launch.launch_counts) == before
    assert torch.equal(out, ref(x)[0])
    with pytest.raises(RuntimeError, match="backend 'triton' was forced"):
        with fusedrnn.use_backend("triton"):
            fused(x)


def test_forcing_aten_skips_kernels():
    torch.manual_seed(0)
    ref, fused = make_pair("rnn_tanh", 3, 4)
    x = torch.randn(5, 2, 3)
    before = dict(launch.launch_counts)
    with fusedrnn.use_backend("aten"):
        assert fusedrnn.get_backend() == "aten"
        assert torch.equal(fused(x)[0], ref(x)[0])
    assert fusedrnn.get_backend() == "auto"
    assert dict(launch.launch_counts) == before


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        fusedrnn.set_backend("cudnn")
    assert fusedrnn.get_backend() == "auto"


@pytest.mark.cpu_only("the interpreter runs only where there is no GPU")
def test_interpreter_is_on_in_this_suite():
    """Without a GPU the suite must exercise the kernels (conftest sets TRITON_INTERPRET=1)."""
    assert dispatch.select(torch.device("cpu")) == "triton"


# ---- packaging --------------------------------------------------------------------------------------------


def test_installed_in_fusedrnn_namespace():
    dist = importlib.metadata.distribution("fusedrnn")
    assert dist.version == fusedrnn.__version__
    assert (dist.read_text("top_level.txt") or "fusedrnn").split() == ["fusedrnn"]
    kernels = importlib.import_module("fusedrnn.kernels")
    autotune = importlib.import_module("fusedrnn.autotune")
    assert inspect.getsourcefile(kernels.step).endswith("step.py")
    assert autotune.default_kernel_config("cuda", 512, 512, 64).BLOCK_B >= 16


def test_source_checkout_runs_without_an_installed_mapping():
    """From the repository root Python imports the source folder fusedrnn/ before any installed copy, and with a
    non-editable install nothing maps kernels/ and autotune/ into it: every README command run from the root
    failed with ``No module named 'fusedrnn.autotune'``. ``python -S`` (no site: no editable finder, no installed
    fusedrnn) with only the dependencies on the path shows that the checkout maps them itself."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    deps = {str(Path(m.__file__).resolve().parents[1]) for m in (torch, importlib.import_module("triton"))}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), *sorted(deps)]))
    env.pop("TRITON_INTERPRET", None)
    code = ("import fusedrnn, fusedrnn.launch, fusedrnn.autotune.spaces, fusedrnn.kernels.step; "
            "print(fusedrnn.__file__, fusedrnn.autotune.__file__, fusedrnn.kernels.__file__)")
    files = []
    for args in (["-c", code], ["-m", "fusedrnn.autotune", "--help"]):
        proc = subprocess.run([sys.executable, "-S", *args], cwd=root, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, f"python -S {' '.join(args[:2])}: {proc.stderr[-2000:]}"
        files = files or proc.stdout.split()
    assert files == [str(root / "fusedrnn" / "__init__.py"), str(root / "autotune" / "__init__.py"),
                     str(root / "kernels" / "__init__.py")], files
