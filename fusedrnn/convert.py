"""Swap torch.nn recurrent modules in a model for their fusedrnn equivalents, and back.

    model = fusedrnn.convert(model)   # every nn.LSTM / GRU / RNN (and, where fusedrnn has them, the cells)
    model = fusedrnn.revert(model)    # and back to torch.nn

Both work **in place**: the modules are replaced inside their parents and the model is returned. A model
that is itself a recurrent module cannot be changed in place, so always use the return value.

What a converted module keeps: the very same ``Parameter`` objects (an optimizer built before the conversion
keeps updating them, its state included), hence ``requires_grad``, device and dtype; buffers, child modules
and attributes set on the instance; the training mode and every constructor attribute (mode, input_size,
hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size, nonlinearity). The new module
is built on the meta device, so no weight is allocated or re-initialised. Outputs are unchanged (up to the
rounding of a different kernel). A module reachable twice in the model (shared) becomes one new module,
reachable at the same places. Modules held in plain Python attributes or lists (not registered as
submodules) are not seen.

What is left as it is, with a warning naming it (its qualified name in the model, and its class):
  * a subclass of a convertible class (it may override ``forward`` or anything else; it would lose that);
  * a module with forward/backward/state_dict hooks or parametrizations (they cannot move safely), or with
    instance attributes that override its class's (``m.forward = ...``; ``m.compile()``: convert first);
  * a configuration the target class does not support (its constructor raises).
"""

from __future__ import annotations

import warnings

from torch import nn
from torch.nn.utils import parametrize

from . import modules as _fused

__all__ = ["convert", "revert"]

# torch.nn class -> name of the fusedrnn class (looked up in fusedrnn.modules when used, so the cells are
# converted as soon as fusedrnn has them).
_NAMES = {cls: name for name, cls in _fused._TORCH.items()}

# Constructor arguments by class name; each is also an attribute of the module that holds its value.
_RNN_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")
_ARGS = {
    "LSTM": _RNN_ARGS + ("proj_size",),
    "GRU": _RNN_ARGS,
    "RNN": _RNN_ARGS + ("nonlinearity",),
    "LSTMCell": ("input_size", "hidden_size", "bias"),
    "GRUCell": ("input_size", "hidden_size", "bias"),
    "RNNCell": ("input_size", "hidden_size", "bias", "nonlinearity"),
}
# Attributes copied exactly after construction (the arguments above, plus what derives from them).
_ATTRS = {name: args + (("mode",) if name in ("LSTM", "GRU", "RNN") else ()) for name, args in _ARGS.items()}

_HOOKS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
          "_forward_hooks_always_called", "_backward_pre_hooks", "_backward_hooks", "_state_dict_hooks",
          "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")
# Instance state that the construction of the new module sets up itself, and is never copied.
_OWN = frozenset(("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules", "_flat_weights",
                  "_flat_weight_refs", "_is_full_backward_hook") + _HOOKS)


class _Unconvertible(Exception):
    pass


def _fused_pairs() -> dict[type, tuple[type, str]]:
    """torch.nn class -> (fusedrnn class, name), for the classes fusedrnn has now."""
    pairs = {}
    for torch_cls, name in _NAMES.items():
        fused_cls = getattr(_fused, name, None)
        if fused_cls is not None:
            pairs[torch_cls] = (fused_cls, name)
    return pairs


def _construct(cls: type, name: str, old: nn.Module) -> nn.Module:
    """An instance of ``cls`` with ``old``'s constructor arguments, on the meta device (nothing allocated)."""
    kwargs = {arg: getattr(old, arg) for arg in _ARGS[name] if hasattr(old, arg)}
    if name == "LSTM" and not kwargs.get("proj_size"):
        kwargs.pop("proj_size", None)  # the default; keeps working with a class that has no proj_size yet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "dropout ... expects num_layers greater than 1": already said once
        return cls(**kwargs, device="meta")


def _swap(old: nn.Module, source: type, cls: type | None, name: str) -> nn.Module:
    """A ``cls`` holding ``old``'s parameters, buffers, children, training mode and attributes."""
    if parametrize.is_parametrized(old):
        raise _Unconvertible("it has parametrizations (" + ", ".join(old.parametrizations.keys()) + ")")
    if cls is None:
        raise _Unconvertible(f"fusedrnn has no {name} yet")
    if type(old) is not source:
        raise _Unconvertible("it is a subclass, which may override forward or other methods")
    try:
        new = _construct(cls, name, old)
        baseline = _construct(type(old), name, old)  # what a fresh instance of old's class holds
    except Exception as exc:  # NotImplementedError (an unsupported configuration), ValueError, TypeError
        raise _Unconvertible(f"no {cls.__module__}.{cls.__qualname__} can be built for it: "
                             f"{type(exc).__name__}: {exc}") from None
    hooks = [h for h in _HOOKS if len(getattr(old, h, ())) > len(getattr(baseline, h, ()))]
    if hooks:
        raise _Unconvertible("it has hooks (" + ", ".join(hooks) + ")")
    fresh = set(vars(baseline))
    # Instance attributes that shadow the class's own (``m.forward = ...``, or ``_compiled_call_impl`` left by
    # ``m.compile()``) are usually bound to old: copied, they would keep running old.
    shadowing = sorted(k for k in vars(old) if k not in fresh and k not in _OWN and hasattr(type(old), k))
    if shadowing:
        raise _Unconvertible("instance attributes override its class (" + ", ".join(shadowing) + ")"
                             + ("; convert before Module.compile()" if "_compiled_call_impl" in shadowing else ""))

    # The same Parameter objects, buffers and children, in the same registration order.
    new._parameters.clear()
    for pname, param in old._parameters.items():
        new.register_parameter(pname, param)
    new._buffers.clear()
    new._buffers.update(old._buffers)
    new._non_persistent_buffers_set = set(old._non_persistent_buffers_set)
    new._modules.clear()
    new._modules.update(old._modules)
    # Constructor attributes exactly as old holds them now, the training mode, the weight names (the same
    # by construction; copied, not shared), then whatever else was set on old's instance after construction.
    # What a fresh instance of old's class holds besides is its class's own state: new has its own.
    for attr in _ATTRS[name] + ("training",):
        if hasattr(old, attr):
            object.__setattr__(new, attr, getattr(old, attr))
    for attr in ("_flat_weights_names", "_all_weights"):
        if attr in vars(old):
            object.__setattr__(new, attr, [list(v) if isinstance(v, list) else v for v in getattr(old, attr)])
    for key, value in vars(old).items():
        if key not in fresh and key not in _OWN:
            object.__setattr__(new, key, value)
    if isinstance(new, nn.modules.rnn.RNNBase):
        new._init_flat_weights()  # _flat_weights from the parameters just registered
    return new


def _target(module: nn.Module, table: dict) -> tuple[type, type | None, str] | None:
    """(class in ``table`` that ``module``'s class is or derives from, class to convert to, its name), or None.

    The nearest class of the MRO decides: fusedrnn's cells derive from torch.nn's, so a fusedrnn.LSTMCell
    (or a subclass of it) is already converted for ``convert`` and is a fusedrnn.LSTMCell for ``revert``."""
    targets = {cls for cls, _ in table.values() if cls is not None}
    for cls in type(module).__mro__:
        if cls in table:
            return (cls, *table[cls])
        if cls in targets:
            return None
    return None


def _walk(model: nn.Module, table: dict, verb: str) -> nn.Module:
    done: dict[int, nn.Module] = {}  # id(old module) -> its replacement (or itself), for shared modules

    def visit(module: nn.Module, qualname: str, depth: int) -> nn.Module:
        if id(module) in done:
            return done[id(module)]
        done[id(module)] = module  # a module that contains itself stops here
        for child_name, child in list(module._modules.items()):
            if child is not None:
                new_child = visit(child, f"{qualname}.{child_name}" if qualname else child_name, depth + 1)
                if new_child is not child:
                    setattr(module, child_name, new_child)
        target = _target(module, table)
        if target is None:
            return module
        try:
            new = _swap(module, *target)
        except _Unconvertible as exc:
            where = repr(qualname) if qualname else "the model itself"
            cls = type(module)
            warnings.warn(f"fusedrnn.{verb}: left {where} ({cls.__module__}.{cls.__qualname__}) as it is: {exc}",
                          stacklevel=depth + 4)  # the caller of convert/revert
            return module
        done[id(module)] = new
        return new

    return visit(model, "", 0)


def convert(model: nn.Module) -> nn.Module:
    """Replace, in place, every torch.nn.LSTM/GRU/RNN (and LSTMCell/GRUCell/RNNCell, once fusedrnn provides
    them) in ``model``, at any depth, with the fusedrnn module of the same configuration holding the same
    Parameter objects. Returns the model, or the new module if ``model`` itself is one of those classes.

    Modules that cannot be converted (subclasses, hooks, parametrizations, configurations fusedrnn does not
    support) are left as they are, with a warning naming each. See the module docstring for what is kept.
    """
    pairs = _fused_pairs()
    table = {torch_cls: pairs.get(torch_cls, (None, name)) for torch_cls, name in _NAMES.items()}
    return _walk(model, table, "convert")


def revert(model: nn.Module) -> nn.Module:
    """The inverse of :func:`convert`: replace, in place, every fusedrnn module in ``model`` with its torch.nn
    class, holding the same Parameter objects. Returns the model, or the new module if ``model`` itself is a
    fusedrnn module. Same guarantees and warnings as :func:`convert`."""
    table = {fused_cls: (torch_cls, name) for torch_cls, (fused_cls, name) in _fused_pairs().items()}
    return _walk(model, table, "revert")
