"""Speed-up of the Triton interpreter for the test suite: patch the language once per kernel launch.

The interpreter swaps ``triton.language``'s builtins for interpreted versions when a kernel starts
(``GridExecutor``) and again at EVERY call of a ``@triton.jit`` helper from inside it (``InterpretedFunction.
__call__``), walking the modules with ``inspect.getmembers`` each time. fusedrnn's kernels call ~30 helpers per
timestep, so the re-patching was over half of the time of a persistent kernel (measured: 17.7 -> 11.4 ms per
RNN step with Triton 3.9). Here the launch patches ``triton.language`` and ``triton.language.core`` (what any
helper, ``tl.standard``'s included, can reach) and helper calls inside the launch patch nothing. The kernels
run exactly as before. If Triton's internals differ from what this expects, nothing is changed.
"""

import triton.language as tl


def install() -> bool:
    try:
        from triton.runtime import interpreter
        original = interpreter._patch_lang
        assert callable(original) and hasattr(interpreter, "GridExecutor")
    except Exception:  # noqa: BLE001 - another Triton: run without the speed-up
        return False

    class _Everything:  # what _patch_lang reads of a function: the language modules among its globals
        __globals__ = {"tl": tl, "core": tl.core}

    class _Nothing:
        def restore(self):
            pass

    state = {"active": False}

    def patch_lang(fn):
        if state["active"]:
            return _Nothing()
        scope = original(_Everything)
        state["active"] = True
        restore = scope.restore

        def restore_all():
            state["active"] = False
            restore()

        scope.restore = restore_all
        return scope

    interpreter._patch_lang = patch_lang
    return True
