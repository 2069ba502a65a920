"""torch's TF32 switch, read in one place (fusedrnn.settings) through either of torch's APIs.

After a program sets TF32 through torch's newer API (``torch.backends.cuda.matmul.fp32_precision = "tf32"`` or
``torch.backends.fp32_precision``), *reading* the legacy ``torch.backends.cuda.matmul.allow_tf32`` raises
("mix of the legacy and new APIs"): every fp32 launch on a GPU raised there. Runs on CPU: only the settings and
the CUDA launch settings are read, nothing is launched."""

import pytest
import torch

from fusedrnn import dispatch, settings
from fusedrnn.autotune import keys, runtime

CUDA = torch.device("cuda")


@pytest.fixture
def restore_precision():
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision, torch.backends.fp32_precision
    yield
    torch.backends.fp32_precision = saved[1]
    matmul.fp32_precision = saved[0]


def _readers() -> tuple:
    """What every reader of the switch says: settings, the launcher's dot precision, the autotune key and lookup."""
    return (settings.tf32(), dispatch.dot_settings(torch.float32, CUDA)["DOT_PRECISION"],
            keys.dtype_name(torch.float32, "cuda"), runtime._tf32())


@pytest.mark.parametrize("how", ["matmul", "global", "legacy"])
@pytest.mark.parametrize("on", [True, False])
def test_tf32_read_through_either_api(how, on, restore_precision):
    if how == "matmul":
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
    elif how == "global":
        torch.backends.cuda.matmul.fp32_precision = "none"
        torch.backends.fp32_precision = "tf32" if on else "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = on
    want = (True, "tf32", "float32-tf32", True) if on else (False, "ieee", "float32", False)
    assert _readers() == want


def test_use_tf32_sets_and_restores(restore_precision):
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    with settings.use_tf32(True, cudnn=True):
        assert settings.tf32() and torch.backends.cudnn.rnn.fp32_precision == "tf32"
        with settings.use_tf32(False):
            assert not settings.tf32()
        assert settings.tf32()
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
