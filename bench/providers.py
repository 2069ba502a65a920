"""The providers: who runs a case, each matched by its exact name.

A provider builds a ``Runner`` for one case from the case's weights (torch.nn's state_dict, already in the case
dtype). Every runner takes the time-major input and the initial state, runs the input projection itself (one
GEMM, or inside cuDNN) and returns (output, [h_n] or [h_n, c_n]) shaped as torch.nn returns them. For the
forward+backward mode it also names the leaf tensors it differentiates; their gradients are mapped back to
torch.nn's weight layout for the correctness check.

fusedrnn variants live in ``FUSEDRNN_VARIANTS``: "fusedrnn" is the dispatcher's own choice, "fusedrnn-step",
"fusedrnn-tiled" and "fusedrnn-coop" force one kernel (the runner enters ``fusedrnn.use_kernel(variant)`` on the
Triton backend). A forced cooperative kernel that cannot run a shape falls back to the batch-tiled one with a
warning; the launch probe of each row records which kernels actually ran. The Cell
providers ("fusedrnn-cell", "torch-cell": LSTMCell/GRUCell/RNNCell) take part in the decode mode only.

Resets inside a sequence (the "resets" set): fusedrnn takes them as ``reset=``; torch.nn (cuDNN, native) has no such
input, so it runs what its users do today: every row split at its resets and the segments packed
(``base.run_split``), the split inside the timed call. The peers take no resets and skip those cases.

Tiers: "core" providers (fusedrnn's paths and cuDNN) run on every case; "peer" providers (torch.nn without
cuDNN, torch.nn's Cells, torch.compile, FlashRNN, haste) where the shape set asks for them (registry.py).
The builders of the torch.compile loop, FlashRNN and haste are in peers.py.
"""

from __future__ import annotations

import contextlib

import torch

from . import cudnn_info, peers
from .base import Env, Provider, Runner, Unavailable, cudnn_enabled, module_runner, torch_module  # noqa: F401

# ---------------------------------------------------------------------------------------------- fusedrnn

#: provider name -> kernel variant (None: the dispatcher's own choice); see fusedrnn.use_kernel.
FUSEDRNN_VARIANTS = {"fusedrnn": None, "fusedrnn-step": "step", "fusedrnn-tiled": "tiled",
                     "fusedrnn-coop": "cooperative"}


def _variant_context(variant: str | None):
    """Context factory that makes fusedrnn run ``variant`` (None: leave every choice to the dispatcher)."""
    import fusedrnn
    if variant is None:
        return contextlib.nullcontext
    @contextlib.contextmanager
    def context():
        with fusedrnn.use_backend("triton"), fusedrnn.use_kernel(variant):
            yield
    return context


def _launch_probe(fn) -> dict:
    """Which fusedrnn kernels one call launched (fusedrnn.calls.launch_counts): proof of the path taken."""
    from fusedrnn.calls import launch_counts
    before = dict(launch_counts)
    fn()
    delta = {k: v - before.get(k, 0) for k, v in launch_counts.items() if v - before.get(k, 0)}
    return {"backend": "triton" if delta else "aten", "launches": delta}


def _fusedrnn_provider(name: str, variant: str | None) -> Provider:
    def build(case, state_dict, device):
        import fusedrnn
        dtype = next(iter(state_dict.values())).dtype
        module = torch_module(case, dtype, device, namespace=fusedrnn)
        runner = module_runner(module, case, state_dict, _variant_context(variant))
        runner.probe = _launch_probe
        runner.detail = {"variant": variant or "auto"}
        return runner

    def needs(case, env):
        if variant is not None and env.device == "cpu" and not env.interpreting:
            return "Triton kernels need a GPU, or TRITON_INTERPRET=1 on a CPU"
        return None

    what = "the dispatcher's own choice" if variant is None else f"the {variant} kernel, forced"
    return Provider(name, "core", f"fusedrnn, {what}", build, needs, takes_resets=True)


# ------------------------------------------------------------------------------------------------- Cells

def _cell_provider(name: str, tier: str, fused: bool) -> Provider:
    """A decode step through ``LSTMCell/GRUCell/RNNCell`` (fusedrnn's, or torch.nn's), one layer, one direction."""
    def namespace():
        import fusedrnn
        return fusedrnn if fused else torch.nn

    def build(case, state_dict, device):
        dtype = next(iter(state_dict.values())).dtype
        kw = {"nonlinearity": case.cell[len("rnn_"):]} if case.cell.startswith("rnn_") else {}
        cls = getattr(namespace(), {"lstm": "LSTMCell", "gru": "GRUCell"}.get(case.cell, "RNNCell"))
        cell = cls(case.I, case.H, device=device, dtype=dtype, **kw)
        cell.load_state_dict({k.removesuffix("_l0"): v for k, v in state_dict.items()})
        cell.eval()
        lstm = case.cell == "lstm"

        def forward(x, hx):
            h = cell(x[0], (hx[0][0], hx[1][0]) if lstm else hx[0][0])
            states = [s.unsqueeze(0) for s in (h if lstm else (h,))]
            return states[0], states
        return Runner(forward, list(cell.parameters()), probe=_launch_probe if fused else None)

    def needs(case, env):
        if case.L > 1 or case.bidirectional:
            return "a Cell is one layer, one direction"
        if fused and not hasattr(namespace(), "LSTMCell"):
            return "this fusedrnn has no Cells"
        return None

    what = "fusedrnn's" if fused else "torch.nn's"
    return Provider(name, tier, f"{what} LSTMCell/GRUCell/RNNCell, one decode step", build, needs, ("decode",))


# ----------------------------------------------------------------------------------------------- torch.nn

def _build_cudnn(case, state_dict, device):
    dtype = next(iter(state_dict.values())).dtype
    module = torch_module(case, dtype, device)
    runner = module_runner(module, case, state_dict, lambda: cudnn_enabled(True))
    module.flatten_parameters()  # one contiguous weight buffer, as cuDNN wants it
    runner.detail = cudnn_info.facts(case, device)
    runner.probe = lambda fn: cudnn_info.observe(fn, case)
    return runner


def _build_native(case, state_dict, device):
    dtype = next(iter(state_dict.values())).dtype
    return module_runner(torch_module(case, dtype, device), case, state_dict, lambda: cudnn_enabled(False))


# ----------------------------------------------------------------------------------------------- registry

PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    *(_fusedrnn_provider(n, v) for n, v in FUSEDRNN_VARIANTS.items()),
    _cell_provider("fusedrnn-cell", "core", fused=True),
    Provider("cudnn", "core", "torch.nn on cuDNN (the baseline of every speedup; with resets: on the split "
             "segments, packed)", _build_cudnn, lambda c, e: None if e.cudnn else "needs a CUDA GPU with cuDNN",
             takes_resets=True),
    Provider("torch-native", "peer", "torch.nn with cuDNN disabled (aten's own RNN; on a CPU: torch's CPU RNN)",
             _build_native, lambda c, e: None, takes_resets=True),
    _cell_provider("torch-cell", "peer", fused=False),
    Provider("torch-compile", "peer", "naive Python loop over T, cell step compiled by torch.compile",
             peers.build_compiled, peers.needs_compiler),
    Provider("flashrnn", "peer", "FlashRNN (NX-AI), backend cuda_fused", peers.build_flashrnn, peers.needs_flashrnn),
    Provider("haste", "peer", "haste (lmnt-com) LSTM/GRU", peers.build_haste, peers.needs_haste),
)}

BASELINE = "cudnn"


def select(names=None, with_peers: bool = True, mode: str | None = None) -> list[Provider]:
    """Providers by exact name (all core ones, plus the peers if ``with_peers``, when ``names`` is None),
    keeping those that take part in ``mode`` (a Cell only in decode)."""
    if names is None:
        chosen = [p for p in PROVIDERS.values() if p.tier == "core" or with_peers]
    else:
        unknown = [n for n in names if n not in PROVIDERS]
        if unknown:
            raise KeyError(f"unknown provider(s) {', '.join(unknown)}; known: {', '.join(PROVIDERS)}")
        chosen = [PROVIDERS[n] for n in names]
    return [p for p in chosen if mode is None or mode in p.modes]

