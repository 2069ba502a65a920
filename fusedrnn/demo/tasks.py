"""Synthetic long-memory tasks, generated on the fly (no download).

Every generator has the signature ``generate(batch, length, generator) -> (x, y)`` and returns time-major tensors
on the CPU (T time, B batch, F input features):

    x  [T, B, F] float32: one-hot tokens or real-valued channels
    y  [B] int64 (a class read at the last step), [B] float32 (a value read at the last step, regression),
       or [T, B] int64 (a class at every step)

Randomness comes only from the ``torch.Generator`` passed in, so a seed fixes the data.

Tasks:
    first_token   the first token's value must be reported at the end; the rest is noise symbols.
    adding        the adding problem: sum the two values marked among T random numbers.
    binary_add    add two T-bit numbers bit by bit (least significant first); the carry lives in the state.
    distractors   two signal symbols hidden among irrelevant tokens; report them in order (the temporal order
                  problem).
    segments      a stream of segments separated by a boundary token; at every step, count the ones seen since
                  the last boundary, so the count must be reset at each boundary (segment_boundaries flags
                  those steps, for a variant that gives them to the model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor

__all__ = ["Task", "TASKS", "DEFAULT_TASKS", "first_token", "adding", "binary_add", "distractors", "segments",
           "segment_boundaries"]

#: first_token: values the first token can take (chance 1/FIRST_TOKEN_VALUES), and noise symbols after it.
FIRST_TOKEN_VALUES = 8
FIRST_TOKEN_NOISE = 4
#: distractors: irrelevant symbols and signal symbols (classes = SIGNALS ** 2, in order).
DISTRACTOR_SYMBOLS = 4
SIGNAL_SYMBOLS = 2
#: segments: longest segment body, and the chance that a step opens a new segment.
SEGMENT_MAX = 6
SEGMENT_BREAK = 0.2
#: adding: a prediction counts as right when within this of the target (Hochreiter & Schmidhuber, 1997).
ADDING_TOLERANCE = 0.04


def _one_hot(tokens: Tensor, n: int) -> Tensor:
    return torch.nn.functional.one_hot(tokens, n).to(torch.float32)


def first_token(batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """First-token checksum: x [T, B, V+N] one-hot; y [B] = the value at t = 0.

    t = 0 holds one of V values (ids 0..V-1); every later step one of N noise symbols (ids V..V+N-1).
    """
    tokens = FIRST_TOKEN_VALUES + torch.randint(FIRST_TOKEN_NOISE, (length, batch), generator=generator)
    tokens[0] = torch.randint(FIRST_TOKEN_VALUES, (batch,), generator=generator)
    return _one_hot(tokens, FIRST_TOKEN_VALUES + FIRST_TOKEN_NOISE), tokens[0].clone()


def adding(batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The adding problem: x [T, B, 2] = (value ~ U(0, 1), marker in {0, 1}); y [B] = sum of the two marked values.

    One marker lies in the first half of the sequence and one in the second half (T >= 2).
    """
    values = torch.rand(length, batch, generator=generator)
    half = length // 2
    first = torch.randint(half, (batch,), generator=generator)
    second = half + torch.randint(length - half, (batch,), generator=generator)
    markers = torch.zeros(length, batch)
    cols = torch.arange(batch)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    target = values[first, cols] + values[second, cols]
    return torch.stack([values, markers], dim=-1), target


def binary_add(batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Binary addition, least significant bit first: x [T, B, 4] = one-hot of the bit pair 2 a_t + b_t;
    y [T, B] = bit t of a + b.

    The sum is taken modulo 2**T (the carry out of the last bit is dropped). One-hot pairs make a_t XOR b_t
    linear in the input, so training does not stall on the XOR plateau before it reaches the carry.
    """
    bits = torch.randint(2, (length, batch, 2), generator=generator)
    out = torch.empty(length, batch, dtype=torch.int64)
    carry = torch.zeros(batch, dtype=torch.int64)
    for t in range(length):
        total = bits[t, :, 0] + bits[t, :, 1] + carry
        out[t] = total % 2
        carry = total // 2
    return _one_hot(2 * bits[..., 0] + bits[..., 1], 4), out


def distractors(batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Temporal order among distractors: x [T, B, D+S] one-hot; y [B] = S * first_signal + second_signal.

    Every step holds one of D irrelevant symbols, except two steps holding signal symbols (ids D..D+S-1): the
    first at t1 in [0.1 T, 0.2 T], the second at t2 in [0.5 T, 0.6 T] (T >= 2), after Hochreiter & Schmidhuber
    (1997), experiment 6a.
    """
    tokens = torch.randint(DISTRACTOR_SYMBOLS, (length, batch), generator=generator)
    lo1, hi1 = int(0.1 * length), int(0.2 * length)
    lo2, hi2 = int(0.5 * length), int(0.6 * length)
    t1 = torch.randint(lo1, hi1 + 1, (batch,), generator=generator)
    t2 = torch.randint(lo2, hi2 + 1, (batch,), generator=generator)
    signals = torch.randint(SIGNAL_SYMBOLS, (2, batch), generator=generator)
    cols = torch.arange(batch)
    tokens[t1, cols] = DISTRACTOR_SYMBOLS + signals[0]
    tokens[t2, cols] = DISTRACTOR_SYMBOLS + signals[1]
    return _one_hot(tokens, DISTRACTOR_SYMBOLS + SIGNAL_SYMBOLS), signals[0] * SIGNAL_SYMBOLS + signals[1]


def segments(batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Counting within segments: x [T, B, 3] one-hot of (boundary, bit 0, bit 1); y [T, B] = ones since the last
    boundary, in 0..SEGMENT_MAX.

    t = 0 is a boundary; after it each step is a new boundary with probability SEGMENT_BREAK, and always after
    SEGMENT_MAX bits; otherwise it is a random bit. A boundary's target is 0.
    """
    coins = torch.rand(length, batch, generator=generator)
    bits = torch.randint(2, (length, batch), generator=generator)
    tokens = torch.empty(length, batch, dtype=torch.int64)
    count = torch.empty(length, batch, dtype=torch.int64)
    body = torch.zeros(batch, dtype=torch.int64)  # bits since the last boundary
    ones = torch.zeros(batch, dtype=torch.int64)
    for t in range(length):
        boundary = (coins[t] < SEGMENT_BREAK) | (body == SEGMENT_MAX) | (t == 0)
        body = torch.where(boundary, 0, body + 1)
        ones = torch.where(boundary, 0, ones + bits[t])
        tokens[t] = torch.where(boundary, 0, 1 + bits[t])
        count[t] = ones
    return _one_hot(tokens, 3), count


def segment_boundaries(x: Tensor) -> Tensor:
    """[T, B] bool: the steps of a ``segments`` batch x [T, B, 3] that hold a boundary token, where the count
    starts afresh (t = 0 is always one)."""
    return x[..., 0] > 0.5


@dataclass(frozen=True)
class Task:
    """A task and how to read it.

    ``kind``: "end" (a class y [B] read from the last step), "value" (a real y [B] read from the last step,
    trained with MSE) or "steps" (a class y [T, B] at every step). ``n_out`` is the number of classes (1 for
    "value"). ``chance``: accuracy of the best input-blind guess at the default lengths, for the table.
    ``memory``: how many steps back the answer reaches, ``None`` for the whole sequence; the gated cells'
    chrono initialisation (models.build_model) is set for it.

    ``pass_percent``: a run passes when its accuracy, as the table prints it (a whole percent), is at least this
    (report.verdict). ``background``: why the task is interesting, what it asks of a cell; never what the
    results are (the verdict, derived from the table, says that).

    ``boundaries``: for tasks made of segments, ``boundaries(x) -> [T, B] bool`` flags the steps where a new
    segment starts, computed from a batch x [T, B, F] on any device; ``None`` otherwise. ``reset``: hand those
    flags to the recurrent layer as ``reset=`` (the state entering a boundary is zero: train.forward), as the
    "segments_reset" variant of "segments" does.
    """

    name: str
    title: str
    generate: Callable[[int, int, torch.Generator], tuple[Tensor, Tensor]]
    n_in: int
    n_out: int
    kind: str
    chance: str
    background: str
    memory: int | None = None
    pass_percent: int = 90
    boundaries: Callable[[Tensor], Tensor] | None = None
    reset: bool = False

    def memory_steps(self, length: int) -> int:
        """Steps back the answer reaches in a sequence of ``length`` steps."""
        return length if self.memory is None else min(self.memory, length)


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("first_token", "first-token checksum: report the first of T tokens", first_token,
         FIRST_TOKEN_VALUES + FIRST_TOKEN_NOISE, FIRST_TOKEN_VALUES, "end", f"{100 / FIRST_TOKEN_VALUES:.1f}%",
         "The answer depends on step 0 only, so the gradient that teaches it must cross all T steps. In a tanh "
         "RNN it is multiplied by W_hh * tanh' at every step, which tends to make it vanish exponentially in T "
         "(Bengio et al. 1994); the LSTM cell state and the GRU update gate offer an additive path, open from the "
         "start with chrono gate biases (--gate-init default: torch's biases, near 0.5); the IRNN's identity "
         "recurrence starts without decay (Le et al. 2015), with an unbounded relu state. |dL/dx_0| shows how "
         "much gradient reaches step 0."),
    Task("adding", f"adding problem: sum two marked values (right if within {ADDING_TOLERANCE})", adding, 2, 1,
         "value", "~8%",
         "Each value must be let in or not depending on its marker (a product, which a gate computes in one "
         "step) and one of them kept for over T/2 steps (Hochreiter & Schmidhuber 1997). It takes many more "
         "training steps than the other tasks, so the default run leaves it out: select it with --tasks adding "
         "and a larger --steps (e.g. 2000)."),
    Task("binary_add", "binary addition, LSB first (every bit of the sum right)", binary_add, 4, 2, "steps",
         "2^-T",
         "Only one bit, the carry, has to be kept, and for one step: the memory is short, so this task asks for "
         "a little computation at every step rather than for memory, and gates are not needed for it in "
         "principle. The last bit of the sum depends on the first bits only through a rare long chain of "
         "carries, so a small |dL/dx_0| after training is expected.", memory=1),
    Task("distractors", "temporal order: two signals among distractors, in order", distractors,
         DISTRACTOR_SYMBOLS + SIGNAL_SYMBOLS, SIGNAL_SYMBOLS ** 2, "end", f"{100 / SIGNAL_SYMBOLS ** 2:.0f}%",
         "The first signal, at 0.1 T to 0.2 T, must be kept while irrelevant symbols stream in until the end "
         "(Hochreiter & Schmidhuber 1997, experiment 6a), so the gradient must again cross most of the sequence. "
         "A gated cell can also shut its input to the distractors; a plain RNN adds every input to its state."),
    Task("segments", "count ones within segments (every step of the sequence right)", segments, 3,
         SEGMENT_MAX + 1, "steps", "~0%",
         "The count must be emptied at each boundary by the model itself (the boundary is only an input token), "
         "and every step of the sequence must be right. Ways to do it: a gate that multiplies the state towards "
         "zero (the GRU's gates; the LSTM forget gate, introduced for continual streams, Gers et al. 2000), a "
         "saturating tanh unit driven to a fixed point by the boundary input, or an IRNN learning to cancel a "
         "state that its identity recurrence would otherwise keep. Memory is short, so |dL/dx_0| stays small.",
         memory=SEGMENT_MAX + 1, boundaries=segment_boundaries),
)}

TASKS["segments_reset"] = replace(
    TASKS["segments"], name="segments_reset", reset=True,
    title="count ones within segments, the boundaries given as reset=",
    background="The same task with the boundaries also handed to the recurrent layer as reset= (fusedrnn's resets "
               "inside a sequence): the state entering each boundary is zero, so no cell has to learn to empty "
               "it itself; what is left is counting ones for at most a segment's length.")

#: The tasks of the default preset (--quick and --full run them all). adding is left out: at the default 300 steps
#: no cell reached 50% at any length (measured, seed 0), while with 2000 steps the GRU and LSTM passed at T=10, 30
#: and 60; 2000 steps of adding cost about as much CPU as the whole default run, so it would double its time.
#: --tasks adding selects it.
#: segments_reset is left out too: on a CPU it trains through the reference recurrence (torch's CPU RNN has no
#: resets), 52 s of the 74 s the default run took with it (47 s without); --tasks segments,segments_reset runs it.
DEFAULT_TASKS = ("first_token", "binary_add", "distractors", "segments")
