"""The aten path: torch's own RNN (``torch.lstm``, ``torch.gru``, ``torch.rnn_tanh``, ``torch.rnn_relu``).

Eager calls go straight to torch, so CPU users lose nothing. Under ``torch.compile`` the call goes through an
opaque custom op instead, ``fusedrnn::aten_rnn``, as the Triton path's are (fusedrnn.ops): traced, torch's
RNN decomposes into its time steps (a graph that grows with T: about 1,000 forward nodes for a 2-layer
bidirectional LSTM at T=40, minutes of inductor compile, a new compile at every sequence length) and, on CPU,
into ``mkldnn_rnn_layer``, whose traced backward fails when the input does not require grad. The op is one
node whatever T is.

``fusedrnn::aten_rnn(mode, input [T, B, I] or packed [N, I], hx [h0] or [h0, c0], weights (torch.nn's flat
list), batch_sizes | None, has_biases, num_layers, dropout, train, bidirectional, amp)
-> (output [T, B, D*P] or [N, D*P], [h_n] or [h_n, c_n], rng)`` runs time-major (``batch_first`` is a
transpose outside it, so the output is the same view torch.nn returns). ``amp`` is the autocast dtype that was
active where the op was traced (None: off): a compiled graph runs with autocast baked into its casts, not
active, so the op turns it back on around torch's call and its RNN-specific policy applies as in eager (the
dtypes of its outputs are ``autocast_dtypes``). ``rng`` is the generator state before the call when dropout
draws masks (training, dropout > 0, more than one layer), else empty.

Backward (``fusedrnn::aten_rnn_backward``, opaque as well): an opaque op keeps no autograd graph, so the
backward recomputes the forward from the saved inputs with grad enabled (the dropout masks replayed from
``rng``, autocast as in the forward) and differentiates it with ``torch.autograd.grad``, for the inputs that
need a gradient only. The cost: one more forward per backward; what it saves is the inputs only. With
dropout on CUDA the op runs without cuDNN, whose dropout state is its own and cannot be replayed. Double
backward: AOTAutograd (inductor, aot_eager) refuses it for any compiled graph ("does not currently support
double backward"); where dynamo's graph runs without it (backend="eager") the backward, called with
create_graph=True, recomputes differentiably on the saved inputs themselves, so higher derivatives are exact;
eager is torch's own.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
from torch import Tensor

from .cells import CELLS

__all__ = ["run", "autocast_dtypes"]

MODES = tuple(CELLS)
_FNS = {name: getattr(torch, name) for name in MODES}  # torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu


def autocast_dtypes(cell: str, device_type: str, low: torch.dtype, state_dtype: torch.dtype, *, packed: bool = False,
                    proj: bool = False, step: bool = False) -> tuple[torch.dtype, torch.dtype]:
    """torch's dtypes under autocast to ``low``: (output and h, c). ``state_dtype`` is the dtype of c0 (LSTM)
    or h0 before the casts.

    cuDNN (and CPU's ``mkldnn_rnn_layer``, dense unprojected LSTM) return everything in ``low``. On CPU,
    where torch runs GRU, the Cells and packed or projected LSTMs as matmuls in ``low`` with the state kept by
    type promotion, h (GRU) and c (LSTM; h too unless projected) come back in ``promote_types(low, state)``.
    """
    h_dtype = c_dtype = low
    if device_type == "cpu":
        kept = torch.promote_types(low, state_dtype)
        if cell == "gru":
            h_dtype = c_dtype = kept
        elif cell == "lstm" and (step or packed or proj):
            c_dtype = kept
            h_dtype = low if proj else kept
    return h_dtype, c_dtype


def _call(mode: str, input: Tensor, hx: Sequence[Tensor], weights: Sequence[Tensor], batch_sizes: Optional[Tensor],
          has_biases: bool, num_layers: int, dropout: float, train: bool, bidirectional: bool,
          batch_first: bool) -> tuple[Tensor, list[Tensor]]:
    """torch's RNN, dense or packed. Returns (output, [h_n] or [h_n, c_n])."""
    h = tuple(hx) if CELLS[mode].has_c else hx[0]
    if batch_sizes is not None:
        res = _FNS[mode](input, batch_sizes, h, list(weights), has_biases, num_layers, dropout, train, bidirectional)
    else:
        res = _FNS[mode](input, h, list(weights), has_biases, num_layers, dropout, train, bidirectional, batch_first)
    return res[0], list(res[1:])


# ---- the ops --------------------------------------------------------------------------------------------------


def _draws(dropout: float, train: bool, num_layers: int) -> bool:
    """Whether torch's RNN draws dropout masks (between layers only)."""
    return train and dropout > 0 and num_layers > 1


_RNG_NUMEL: dict[str, int] = {}


def _rng_get(device: torch.device) -> Tensor:
    if device.type == "cpu":
        return torch.get_rng_state()
    return torch.get_device_module(device.type).get_rng_state(device)


def _rng_numel(device: torch.device) -> int:
    # A generator's state is not a dispatched op: this reads the real state even under FakeTensorMode.
    if device.type not in _RNG_NUMEL:
        _RNG_NUMEL[device.type] = _rng_get(device).numel()
    return _RNG_NUMEL[device.type]


@contextlib.contextmanager
def _replay(rng: Tensor, device: torch.device):
    """Run the block from generator state ``rng`` (when not empty), and leave the generator as it was."""
    if rng.numel() == 0:
        yield
        return
    on_device = device.type != "cpu"
    with torch.random.fork_rng(devices=[device] if on_device else [], device_type=device.type):
        if on_device:
            torch.get_device_module(device.type).set_rng_state(rng, device)
        else:
            torch.set_rng_state(rng)
        yield


def _numerics(device: torch.device, amp: Optional[torch.dtype], draws: bool):
    """The autocast of the traced call (explicitly on or off), and no cuDNN where dropout must be replayable."""
    stack = contextlib.ExitStack()
    if device.type in ("cpu", "cuda"):
        stack.enter_context(torch.autocast(device.type, dtype=amp, enabled=amp is not None))
    if draws and device.type == "cuda":
        stack.enter_context(torch.backends.cudnn.flags(enabled=False))
    return stack


def _out_dtypes(mode: str, input: Tensor, hx: Sequence[Tensor], weights: Sequence[Tensor],
                batch_sizes: Optional[Tensor], num_layers: int, bidirectional: bool,
                amp: Optional[torch.dtype]) -> tuple[torch.dtype, list[torch.dtype]]:
    """The dtypes of (output, [h_n, (c_n)]) that torch returns: the input's, or autocast's (``autocast_dtypes``)."""
    if amp is None:
        return input.dtype, [input.dtype for _ in hx]
    per = len(weights) // (num_layers * (2 if bidirectional else 1))
    h, c = autocast_dtypes(mode, input.device.type, amp, hx[-1].dtype, packed=batch_sizes is not None,
                           proj=per in (3, 5))
    return h, [h, c][:len(hx)]


def _rnn(mode: str, input: Tensor, hx: list[Tensor], weights: list[Tensor], batch_sizes: Optional[Tensor],
         has_biases: bool, num_layers: int, dropout: float, train: bool, bidirectional: bool,
         amp: Optional[torch.dtype]) -> tuple[Tensor, list[Tensor], Tensor]:
    draws = _draws(dropout, train, num_layers)
    rng = _rng_get(input.device) if draws else torch.empty((0,), dtype=torch.uint8)
    with _numerics(input.device, amp, draws):
        out, hy = _call(mode, input, hx, weights, batch_sizes, has_biases, num_layers, dropout, train, bidirectional,
                        False)
    out_dtype, h_dtypes = _out_dtypes(mode, input, hx, weights, batch_sizes, num_layers, bidirectional, amp)
    # Fresh, contiguous outputs of the dtypes the fake promised (no copies where torch already gave them).
    return out.to(out_dtype).contiguous(), [h.to(d).contiguous() for h, d in zip(hy, h_dtypes)], rng


def _rnn_fake(mode, input, hx, weights, batch_sizes, has_biases, num_layers, dropout, train, bidirectional, amp):
    out_dtype, h_dtypes = _out_dtypes(mode, input, hx, weights, batch_sizes, num_layers, bidirectional, amp)
    width = (2 if bidirectional else 1) * weights[1].shape[1]
    out = input.new_empty((*input.shape[:-1], width), dtype=out_dtype)
    hy = [h.new_empty(h.shape, dtype=d) for h, d in zip(hx, h_dtypes)]
    n = _rng_numel(input.device) if _draws(dropout, train, num_layers) else 0
    return out, hy, torch.empty((n,), dtype=torch.uint8, device="cpu")


def _autograd_dispatch():
    """Autograd dispatch back on for the block: an op's kernel runs below the autograd keys, which would leave
    the backward's recomputation without a graph to differentiate."""
    include, exclude = torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set()
    for key in (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.AutogradOther,
                torch._C.DispatchKey.AutogradNestedTensor):
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(include, exclude)


def _rnn_backward(mode: str, grad_output: Optional[Tensor], grad_hy: list[Optional[Tensor]], input: Tensor,
                  hx: list[Tensor], weights: list[Tensor], batch_sizes: Optional[Tensor], has_biases: bool,
                  num_layers: int, dropout: float, train: bool, bidirectional: bool, amp: Optional[torch.dtype],
                  rng: Tensor, needs: list[bool]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    flat = [input, *hx, *weights]
    leaves = [t.detach().requires_grad_(need) for t, need in zip(flat, needs)]
    wanted = [leaf for leaf, need in zip(leaves, needs) if need]
    grads: list[Optional[Tensor]] = [None] * len(wanted)
    with _autograd_dispatch(), torch.enable_grad():
        with _replay(rng, input.device), _numerics(input.device, amp, _draws(dropout, train, num_layers)):
            out, hy = _call(mode, leaves[0], leaves[1:1 + len(hx)], leaves[1 + len(hx):], batch_sizes, has_biases,
                            num_layers, dropout, train, bidirectional, False)
        pairs = [(o, g) for o, g in zip([out, *hy], [grad_output, *grad_hy]) if g is not None and o.requires_grad]
        if wanted and pairs:
            grads = list(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
    got = iter(grads)
    result = []
    for leaf, need in zip(leaves, needs):  # contiguous, as the fake's; empty where no gradient was asked for
        g = next(got) if need else leaf.new_empty((0,))
        result.append(leaf.new_zeros(leaf.shape) if g is None else g.contiguous())
    return result[0], result[1:1 + len(hx)], result[1 + len(hx):]


def _rnn_backward_fake(mode, grad_output, grad_hy, input, hx, weights, batch_sizes, has_biases, num_layers, dropout,
                       train, bidirectional, amp, rng, needs):
    result = [t.new_empty(t.shape) if need else t.new_empty((0,)) for t, need in zip([input, *hx, *weights], needs)]
    return result[0], result[1:1 + len(hx)], result[1 + len(hx):]


# Tagged nondeterministic_seeded: with dropout it draws from the generator, so two identical calls are not one
# (no CSE), and the partitioner never recomputes it.
_rnn_op = torch.library.custom_op("fusedrnn::aten_rnn", _rnn, mutates_args=(),
                                  tags=(torch.Tag.nondeterministic_seeded,))
_rnn_op.register_fake(_rnn_fake)
_rnn_backward_op = torch.library.custom_op("fusedrnn::aten_rnn_backward", _rnn_backward, mutates_args=())
_rnn_backward_op.register_fake(_rnn_backward_fake)


def _differentiable_backward(mode, grad_output, grad_hy, input, hx, weights, batch_sizes, has_biases, num_layers,
                             dropout, train, bidirectional, amp, rng, needs):
    """The backward for create_graph=True: the recomputation on the saved inputs themselves, so that the
    gradients have a graph of their own (higher derivatives exact). Returns (d_input, d_hx, d_weights) with None
    where no gradient was asked for."""
    flat = [input, *hx, *weights]
    with torch.enable_grad():
        with _replay(rng, input.device), _numerics(input.device, amp, _draws(dropout, train, num_layers)):
            out, hy = _call(mode, input, hx, weights, batch_sizes, has_biases, num_layers, dropout, train,
                            bidirectional, False)
        pairs = [(o, g) for o, g in zip([out, *hy], [grad_output, *grad_hy]) if g is not None]
        wanted = [t for t, need in zip(flat, needs) if need]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=True,
                                       allow_unused=True))
    result = [next(got) if need else None for need in needs]
    return result[0], result[1:1 + len(hx)], result[1 + len(hx):]


def _setup_context(ctx, inputs, output):
    mode, input, hx, weights, batch_sizes, has_biases, num_layers, dropout, train, bidirectional, amp = inputs
    ctx.args = (mode, has_biases, num_layers, dropout, train, bidirectional, amp)
    ctx.n_hx = len(hx)
    ctx.mark_non_differentiable(output[2])
    ctx.save_for_backward(input, batch_sizes, output[2], *hx, *weights)


def _backward(ctx, grad_output, grad_hy, _grad_rng):
    mode, has_biases, num_layers, dropout, train, bidirectional, amp = ctx.args
    input, batch_sizes, rng, *rest = ctx.saved_tensors
    hx, weights = rest[:ctx.n_hx], rest[ctx.n_hx:]
    need_input, need_hx, need_weights = ctx.needs_input_grad[1:4]
    needs = [bool(need_input), *map(bool, need_hx), *map(bool, need_weights)]
    if not any(needs):
        return (None, None, [None] * len(hx), [None] * len(weights), *(None,) * 7)
    if torch.is_grad_enabled():  # create_graph=True (an uncompiled graph: backend="eager"): differentiable
        d_input, d_hx, d_weights = _differentiable_backward(mode, grad_output, grad_hy, input, hx, weights, batch_sizes,
                                                            *ctx.args[1:], rng, needs)
    else:
        d_input, d_hx, d_weights = _rnn_backward_op(mode, grad_output, list(grad_hy), input, list(hx), list(weights),
                                                    batch_sizes, has_biases, num_layers, dropout, train,
                                                    bidirectional, amp, rng, needs)
    pick = lambda grads, flags: [g if f else None for g, f in zip(grads, flags)]  # noqa: E731
    return (None, d_input if need_input else None, pick(d_hx, need_hx), pick(d_weights, need_weights),
            None, None, None, None, None, None, None)


_rnn_op.register_autograd(_backward, setup_context=_setup_context)


# ---- entry point ----------------------------------------------------------------------------------------------


def _amp(input: Tensor) -> Optional[torch.dtype]:
    """The autocast dtype that applies to ``input`` here, or None (autocast off, or a dtype it leaves alone)."""
    dev = input.device.type
    if dev not in ("cpu", "cuda") or not torch.is_autocast_enabled(dev):
        return None
    if not input.is_floating_point() or input.dtype == torch.float64:
        return None
    return torch.get_autocast_dtype(dev)


def run(mode: str, input: Tensor, hx: Sequence[Tensor], weights: Sequence[Tensor], batch_sizes: Optional[Tensor],
        has_biases: bool, num_layers: int, dropout: float, train: bool, bidirectional: bool,
        batch_first: bool) -> tuple[Tensor, list[Tensor]]:
    """torch's RNN ``mode`` on the checked arguments; returns (output, [h_n] or [h_n, c_n]) as torch.nn's.
    Eager: torch's function itself. Compiling: the opaque op (the module docstring)."""
    if not torch.compiler.is_compiling():
        return _call(mode, input, hx, weights, batch_sizes, has_biases, num_layers, dropout, train, bidirectional,
                     batch_first)
    dense_bf = batch_first and batch_sizes is None
    x = input.transpose(0, 1) if dense_bf else input
    out, hy, _ = _rnn_op(mode, x, list(hx), list(weights), batch_sizes, has_biases, num_layers, float(dropout), train,
                         bidirectional, _amp(input))
    return (out.transpose(0, 1) if dense_bf else out), list(hy)
