"""Grid modes of the Triton interpreter for the tests: how the programs of one launch are run.

The interpreter runs a launch's programs one after another, in grid order (``GridExecutor.__call__`` loops over
the grid, sets the builder's program id and calls the kernel). That hides two things, which these modes expose:

``threaded()``
    Every program of a launch runs in its own thread with its own program id, all at once, sharing the launch's
    memory (the interpreter copies the tensors to host arrays once per launch; every program's pointers point
    into them), as the programs of a cooperative launch share a GPU. A program that waits at a grid barrier
    really waits for the others, so the cooperative kernels (``_coop_*_kernel``, resident and streamed) run
    with several hidden slices and batch tiles here; under the plain interpreter a second program per batch tile
    would wait forever at the first barrier.

    A deadlock fails the launch instead of hanging it. The launch is stuck when every unfinished program has
    been polling memory that does not change (the same atomic at the same address returning the same value) for
    ``stall_s`` seconds, or when it has run for ``timeout_s`` in all. Then the launch is aborted: every later
    atomic or load of its programs raises, so the stuck programs leave their poll loops and their threads end
    (nothing keeps spinning and burning CPU after the test), and the launch raises ``GridDeadlock``. A program
    that raises aborts the others too (they could wait forever for it) and its error is re-raised.

    The programs are Python threads: the GIL interleaves them (every few ms, and at every poll, which backs off
    with a short sleep so that waiting programs leave the CPU to working ones; numpy releases the GIL in its
    larger operations). The interpreter's atomics are thread-safe: ``std::atomic`` operations in
    interpreter.cc, a mutex (``atomic_op_guard``) for the types that have no lock-free atomic. The mode also
    serializes them under its own lock, so they stay atomic across program threads whatever the Triton version.
    Defaults: ``stall_s`` 20 s (a program that computes rather than polls never counts as stuck, so this only
    delays the report of a real deadlock), ``timeout_s`` 600 s.

``program_order("reversed")``, ``program_order("shuffled", seed)``
    Programs run one after another, as in the plain interpreter, but last to first, or in a seeded random order
    (never grid order nor reversed where the grid has 3+ programs). A kernel whose programs do not
    communicate within a launch (the step kernels, the batch-tiled persistent kernels) must give bitwise the
    same results in every order; ``results_in_orders`` runs a computation in grid, reversed and shuffled order
    and ``assert_same_bits`` compares them: a difference is a race between programs of one launch (a program
    reading what another writes, or two writing the same place). A program that polls memory nobody else can
    change there (a grid barrier: it waits for a program that runs after it) raises ``GridDeadlock`` after
    ``stall_s`` seconds.

Every mode records the launches it ran (``Mode.launches``: kernel name and grid), so that a test can prove the
grid had several programs. Modes are context managers (at most one active, none nested) and restore the
interpreter on exit, so a mode is active inside one test only. They compose with ``tests/_interpreter.py`` (the
language patched once per launch) and with the plain interpreter (``FUSEDRNN_PLAIN_INTERPRETER=1``: the
interpreter re-patches the language at every helper call and rewrites a helper at its first call, from every
program thread; the mode serializes both with a lock: they read and mutate shared module dicts).

How: ``GridExecutor.__call__`` is kept and its kernel function swapped for a collector during the launch: the
grid loop "calls" every program, the collector records the program ids and, at the last one, runs them all in
the mode's way; arguments, the language patching and the copy back of results stay the interpreter's own. The
interpreter's builder (one per process) gets a subclass whose ``grid_idx`` is per thread, and whose atomics and
loads check the launch's abort flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import random
import threading
import time
from typing import Callable

from triton.runtime import interpreter

__all__ = ["GridDeadlock", "Mode", "threaded", "program_order", "results_in_orders", "assert_same_bits"]

#: Seconds every unfinished program of a launch may poll unchanged memory before the launch is called deadlocked.
STALL_S = 20.0
#: Seconds a threaded launch may run in all.
TIMEOUT_S = 600.0
#: Longest sleep of a program polling unchanged memory (its back-off doubles from 10 us to this).
MAX_BACKOFF_S = 1e-3


class GridDeadlock(RuntimeError):
    """A launch whose programs wait for each other forever (or longer than the mode's timeout)."""


class _Aborted(BaseException):
    """Raised inside a program of an aborted launch (BaseException: the kernel code must not swallow it)."""


@dataclasses.dataclass
class _Launch:
    """State of one launch in a mode: its programs' progress and the abort flag they check."""

    name: str
    threaded: bool
    stall_s: float
    abort: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: program id -> time.monotonic() since when it has polled unchanged memory (absent: not waiting)
    waiting: dict = dataclasses.field(default_factory=dict)


_tls = threading.local()  # of this thread: grid_idx, launch, last (its previous atomic and result), spins
_atomic_lock = threading.Lock()
_patch_lock = threading.RLock()
_active: list = []  # the active Mode (at most one)

_BaseBuilder = interpreter.InterpreterBuilder


class _Builder(_BaseBuilder):
    """The interpreter's builder with a per-thread program id and abortable, serialized atomics and loads.

    ``grid_idx`` reads this thread's program id where the mode set one (a program thread, or the main thread in an
    ordered launch), else the builder's own (``set_grid_idx``, from the interpreter's grid loop)."""

    @property
    def grid_idx(self):
        idx = getattr(_tls, "grid_idx", None)
        return idx if idx is not None else self.__dict__.get("grid_idx")

    @grid_idx.setter
    def grid_idx(self, value):
        self.__dict__["grid_idx"] = value

    def create_masked_load(self, ptrs, mask, other, cache_policy, is_volatile):
        _check_abort()
        return super().create_masked_load(ptrs, mask, other, cache_policy, is_volatile)

    def create_atomic_rmw(self, rmwOp, ptr, val, mask, sem, scope):  # noqa: N803 - the interpreter's names
        _check_abort()
        with _atomic_lock:
            out = super().create_atomic_rmw(rmwOp, ptr, val, mask, sem, scope)
        _after_atomic((rmwOp, ptr, val), out)
        return out

    def create_atomic_cas(self, ptr, cmp, val, sem, scope):
        _check_abort()
        with _atomic_lock:
            out = super().create_atomic_cas(ptr, cmp, val, sem, scope)
        _after_atomic(("cas", ptr, cmp, val), out)
        return out


def _check_abort():
    launch = getattr(_tls, "launch", None)
    if launch is not None and launch.abort.is_set():
        raise _Aborted(f"program {_tls.grid_idx} of {launch.name}: launch aborted")


def _after_atomic(op, out):
    """Poll detection: the same atomic (operation, addresses, operands) as this program's previous one, returning
    the same value, made no progress. Such a program is marked waiting and backs off (a sleep, which also hands
    the GIL to the others); any other atomic clears the mark."""
    launch = getattr(_tls, "launch", None)
    if launch is None:
        return
    key = (*(a.data.tobytes() if isinstance(a, interpreter.TensorHandle) else a for a in op), out.data.tobytes())
    idx = _tls.grid_idx
    if key != getattr(_tls, "last", None):
        _tls.last, _tls.spins = key, 0
        launch.waiting.pop(idx, None)
        return
    _tls.spins += 1
    now = time.monotonic()
    since = launch.waiting.setdefault(idx, now)
    if not launch.threaded and now - since > launch.stall_s:
        # Programs run one after another: nothing can change what this one waits for.
        raise GridDeadlock(f"{launch.name}: program {idx} polled unchanged memory for {launch.stall_s:g} s; it "
                           f"waits for another program of the launch, which runs only after it in this order "
                           f"(a grid barrier needs the threaded mode)")
    if launch.threaded:
        time.sleep(min(MAX_BACKOFF_S, 1e-5 * 2 ** min(_tls.spins, 10)))


class Mode:
    """An active grid mode. ``launches``: (kernel name, grid (x, y, z)) of every launch it ran, in order."""

    def __init__(self, runner: Callable, stall_s: float, threaded: bool = False):
        self.runner = runner
        self.stall_s = stall_s
        self.threaded = threaded
        self.launches: list[tuple[str, tuple[int, int, int]]] = []

    def grids(self, name: str) -> list[tuple[int, int, int]]:
        """The grids of the launches of kernel ``name`` (its function name, e.g. "_coop_fwd_kernel")."""
        return [grid for n, grid in self.launches if n == name]


@contextlib.contextmanager
def _installed(mode: Mode):
    """Install ``mode`` in the interpreter for the body of the with statement; restore everything after."""
    if _active:
        raise RuntimeError("a grid mode is already active (modes do not nest)")
    builder = interpreter.interpreter_builder
    original_call = interpreter.GridExecutor.__call__
    original_rewrite = interpreter.InterpretedFunction.rewrite
    original_patch_lang = interpreter._patch_lang  # tests/_interpreter.py's, or the interpreter's own

    def call(executor, *args, **kwargs):
        fn = executor.fn
        programs = []

        def collect(**fn_args):
            programs.append(tuple(builder.__dict__["grid_idx"]))
            grid = tuple(builder.grid_dim)
            if len(programs) == grid[0] * grid[1] * grid[2]:
                name = getattr(fn, "__name__", repr(fn))
                mode.launches.append((name, grid))
                mode.runner(fn, fn_args, programs, _Launch(name, mode.threaded, mode.stall_s))

        collect.__signature__ = inspect.signature(fn)  # the interpreter binds the arguments to it
        collect.__name__ = getattr(fn, "__name__", "kernel")
        collect._grid_mode_kernel = fn  # for _patch_lang, which reads the kernel's globals
        executor.fn = collect
        try:
            return original_call(executor, *args, **kwargs)
        finally:
            executor.fn = fn

    def rewrite(self):
        if self.fn in self.rewritten_fn:
            return self.rewritten_fn[self.fn]
        with _patch_lock:
            return original_rewrite(self)

    def patch_lang(fn):
        with _patch_lock:
            return original_patch_lang(getattr(fn, "_grid_mode_kernel", fn))

    _active.append(mode)
    builder.__class__ = _Builder
    interpreter.GridExecutor.__call__ = call
    interpreter.InterpretedFunction.rewrite = rewrite
    interpreter._patch_lang = patch_lang
    try:
        yield mode
    finally:
        interpreter._patch_lang = original_patch_lang
        interpreter.InterpretedFunction.rewrite = original_rewrite
        interpreter.GridExecutor.__call__ = original_call
        builder.__class__ = _BaseBuilder
        _active.remove(mode)


def _enter_program(idx, launch):
    _tls.grid_idx, _tls.launch, _tls.last, _tls.spins = idx, launch, None, 0


def _leave_program():
    _tls.grid_idx = _tls.launch = _tls.last = None


def _run_threaded(fn, args, programs, launch: _Launch, timeout_s: float = TIMEOUT_S):
    """Run every program in its own thread; fail (``GridDeadlock``) if they wait for each other forever."""
    done = threading.Condition()
    finished, errors = set(), {}

    def body(idx):
        _enter_program(idx, launch)
        try:
            fn(**args)
        except BaseException as e:  # noqa: BLE001 - reported by the launching thread
            errors[idx] = e
            launch.abort.set()  # the others may wait for this one forever
        finally:
            _leave_program()
            with done:
                finished.add(idx)
                launch.waiting.pop(idx, None)
                done.notify_all()

    threads = [threading.Thread(target=body, args=(idx, ), name=f"{launch.name}{idx}", daemon=True)
               for idx in programs]
    for t in threads:
        t.start()
    start = time.monotonic()
    why = None
    try:
        with done:
            while len(finished) < len(programs) and not launch.abort.is_set():
                done.wait(0.05)
                now = time.monotonic()
                live = [idx for idx in programs if idx not in finished]
                since = [launch.waiting.get(idx) for idx in live]
                if live and all(s is not None for s in since) and now - max(since) > launch.stall_s:
                    why = (f"programs {live} polled unchanged memory for {launch.stall_s:g} s (each waits for "
                           f"another; {len(finished)} of {len(programs)} finished)")
                elif now - start > timeout_s:
                    why = f"programs {live} still running after {timeout_s:g} s"
                if why:
                    launch.abort.set()
    finally:
        if len(finished) < len(programs):  # a deadlock, an error, or the waiting thread interrupted (Ctrl-C)
            launch.abort.set()
    for t in threads:
        t.join(30.0)  # aborted programs raise at their next load or atomic
    alive = [t.name for t in threads if t.is_alive()]
    real = {idx: e for idx, e in errors.items() if not isinstance(e, _Aborted)}
    if real:
        idx, e = next(iter(real.items()))
        if hasattr(e, "add_note"):  # Python 3.11+
            e.add_note(f"in program {idx} of {launch.name} (threaded grid mode)")
        raise e
    if why or alive:
        raise GridDeadlock(f"{launch.name}, {len(programs)} programs: {why or 'aborted'}"
                           + (f"; threads still alive: {alive}" if alive else ""))


def _ordered_runner(order: str, seed: int):
    def run(fn, args, programs, launch: _Launch):
        for idx in _permuted(programs, order, seed):
            _enter_program(idx, launch)
            try:
                fn(**args)
            finally:
                _leave_program()
    return run


def _permuted(programs: list, order: str, seed: int) -> list:
    if order == "grid":
        return list(programs)
    if order == "reversed":
        return programs[::-1]
    if order != "shuffled":
        raise ValueError(f"order must be 'grid', 'reversed' or 'shuffled', got {order!r}")
    rng = random.Random(f"{seed}:{len(programs)}")
    out = list(programs)
    for _ in range(100):  # neither grid order nor reversed where there is any other
        rng.shuffle(out)
        if len(programs) < 3 or (out != programs and out != programs[::-1]):
            break
    return out


def threaded(stall_s: float = STALL_S, timeout_s: float = TIMEOUT_S):
    """Context manager: every program of every launch in the body runs in its own thread (module docstring).

    Args:
        stall_s: a launch whose unfinished programs have all polled unchanged memory this long is deadlocked.
        timeout_s: a launch running this long in all is deadlocked.
    Yields the ``Mode`` (its ``launches``). A deadlocked launch raises (the interpreter wraps the
    ``GridDeadlock`` in its ``InterpreterError``), its program threads ended."""
    def run(fn, args, programs, launch):
        _run_threaded(fn, args, programs, launch, timeout_s)
    return _installed(Mode(run, stall_s, threaded=True))


def program_order(order: str, seed: int = 0, stall_s: float = 2.0):
    """Context manager: programs of every launch in the body run one after another in ``order`` ("grid",
    "reversed" or "shuffled" with ``seed``); a program that polls unchanged memory for ``stall_s`` seconds raises
    ``GridDeadlock`` (it waits for a program that runs after it). Yields the ``Mode``."""
    _permuted([], order, seed)  # validates order
    return _installed(Mode(_ordered_runner(order, seed), stall_s))


def results_in_orders(compute: Callable, seed: int = 0) -> dict:
    """{order: compute()} for grid, reversed and shuffled program order (``program_order``), plus the
    ``Mode``s under "modes"."""
    results, modes = {}, {}
    for order in ("grid", "reversed", "shuffled"):
        with program_order(order, seed) as mode:
            results[order] = compute()
        modes[order] = mode
    results["modes"] = modes
    return results


def assert_same_bits(name: str, want, got) -> None:
    """Nested tuples/lists of tensors equal bit for bit (NaN included), saying where they differ."""
    import torch

    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(want) == len(got), f"{name}: structure differs"
        for i, (w, g) in enumerate(zip(want, got)):
            assert_same_bits(f"{name}[{i}]", w, g)
        return
    if want is None:
        assert got is None, f"{name}: None vs {type(got).__name__}"
        return
    assert want.shape == got.shape and want.dtype == got.dtype, f"{name}: {want.shape} {want.dtype} vs " \
                                                                f"{got.shape} {got.dtype}"
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[want.element_size()]
    diff = want.detach().view(bits) != got.detach().view(bits)
    if diff.any():
        first = tuple(int(i) for i in diff.nonzero()[0])
        raise AssertionError(f"{name}: {int(diff.sum())}/{want.numel()} elements differ between program orders; "
                             f"first at {first}: {want[first].item()!r} vs {got[first].item()!r}")
