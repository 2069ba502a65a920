"""`pytest bench/`: the pytest-benchmark suite (bench/test_bench.py). Not part of the main test run
(pyproject's testpaths is tests/).

Without a GPU the Triton kernels run under the Triton interpreter, set here before triton is first imported,
and only the smoke case runs: its timings mean nothing, it shows that every piece works.
"""

import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    assert "triton" not in sys.modules, "triton was imported before bench/conftest.py could set TRITON_INTERPRET"
    os.environ["TRITON_INTERPRET"] = "1"

# The repository root, so the suite can import the `bench` package (it is not installed). Appended: fusedrnn
# still comes from wherever it is installed.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.append(ROOT)


def pytest_report_header(config):
    if torch.cuda.is_available():
        sets = os.environ.get("FUSEDRNN_BENCH_SETS", "fastrnns,persistent")
        return f"fusedrnn bench: {torch.cuda.get_device_name()}, shape sets {sets} (FUSEDRNN_BENCH_SETS)"
    return ("fusedrnn bench: no GPU, so only the smoke case runs, under the Triton interpreter: "
            "its timings mean nothing")
