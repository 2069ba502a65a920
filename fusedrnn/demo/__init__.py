"""fusedrnn.demo: recurrent cells on the classic long-memory tasks (``python -m fusedrnn.demo``).

Small models built with fusedrnn's RNN (tanh), IRNN (relu, identity recurrence), GRU and LSTM are trained on
synthetic tasks generated on the fly and compared: accuracy against sequence length, training time, and the
gradient norm that reaches the first timestep. Each task's verdict (which cells pass at which lengths) is
derived from the measured table (report.verdict), never written in advance.

    tasks    the task generators and their registry (TASKS)
    models   build_model: a fusedrnn recurrent layer and a linear head
    train    the training loop, accuracy and the gradient profile of one run
    runner   run_all: the grid of runs, in this process or in worker processes
    report   progress bar, terminal table with verdicts and legend, results.json, PNG plots (matplotlib, optional)

Importing this package does no work; ``python -m fusedrnn.demo --help`` lists the CLI options.
"""

from .models import CELLS, SeqModel, build_model
from .tasks import DEFAULT_TASKS, TASKS, Task
from .runner import run_all
from .train import RunResult, TrainConfig, run, train

__all__ = ["CELLS", "SeqModel", "build_model", "DEFAULT_TASKS", "TASKS", "Task", "RunResult", "TrainConfig", "run",
           "run_all", "train"]
