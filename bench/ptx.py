"""Readers of compiled kernels (sm_90a, no GPU): resources from ptxas and cuobjdump, and checks of the PTX.

- ``analyze(ptx, cubin)``: registers, stack, spills (``ptxas -v`` with Triton's flags), static shared memory and the
  matrix instructions of the SASS (HGMMA, HMMA, DMMA, IMMA), with the CUDA tools bundled with Triton;
- ``Ptx``: a kernel's PTX as instructions, control-flow graph and register taint;
- ``barrier_violations``: the cooperative kernels' grid barrier read from the PTX (release arrival, acquire polls,
  reads of other programs' writes inside the time loop and after a poll);
- ``loop_reads``: what a kernel reads inside its loops (W_hh streamed from memory at every step, or held);
- ``nan_dropping_minmax``: float max/min instructions that return the operand that is not NaN.

``bench/resources.py`` compiles the kernels and calls these; the tests call them on toy kernels too.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import tempfile

ARCH = 90


def _tool(name: str, *args: str) -> str:
    """stdout+stderr of one of the CUDA tools bundled with Triton (ptxas, cuobjdump)."""
    from triton.backends.nvidia import compiler as nv
    path = nv.get_ptxas(ARCH).path if name == "ptxas" else getattr(nv.knobs.nvidia, name).path
    proc = subprocess.run([path, *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name}: {proc.stderr.strip()}")
    return proc.stdout + proc.stderr


def analyze(ptx: str, cubin: bytes) -> dict:
    """Resources of the cubin Triton built (cuobjdump), spill bytes (ptxas -v again, Triton's flags) and
    the matrix instructions of its SASS."""
    from triton.backends.nvidia import compiler as nv
    extra = ["--regAllocOptLevel=2"] if "regAllocOptLevel" in inspect.getsource(nv.CUDABackend.make_cubin) else []
    with tempfile.TemporaryDirectory() as tmp:
        ptx_path, cubin_path = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx_path, "w") as f:
            f.write(ptx)
        with open(cubin_path, "wb") as f:
            f.write(cubin)
        log = _tool("ptxas", "-v", "-lineinfo", *extra, f"--gpu-name=sm_{ARCH}a", ptx_path, "-o", ptx_path + ".o")
        usage = _tool("cuobjdump", "--dump-resource-usage", cubin_path)
        sass = _tool("cuobjdump", "-sass", cubin_path)
    res = {k.lower(): int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL|SHARED):(\d+)", usage)}
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    mma = {op: len(re.findall(rf"\b{op}\b", sass)) for op in ("HGMMA", "HMMA", "DMMA", "IMMA")}
    return dict(regs=res.get("reg"), stack=res.get("stack"), local=res.get("local"), static_smem=res.get("shared"),
                spill_stores=int(spills.group(1)) if spills else None,
                spill_loads=int(spills.group(2)) if spills else None, mma=mma)


#: direction -> the cooperative kernels' pointer arguments through which a step reads what other programs wrote in
#: the step before: h_{t-1} (forward, the outputs y), dHp_{t+1} (backward).
SHARED = {"fwd": ("p_y", ), "bwd": ("p_dhp", )}

def ptx_params(spec_or_src) -> list:
    """The names of a compiled kernel's PTX parameters ``<kernel>_param_<i>``, in order: its arguments that are not
    constexprs (Triton appends its own scratch pointers after them)."""
    signature = spec_or_src["signature"] if isinstance(spec_or_src, dict) else spec_or_src.signature
    return [name for name, ty in signature.items() if ty != "constexpr"]


_REG = re.compile(r"%[a-z]+\d+")
_MEM = re.compile(r"\[([^\]]*)\]")


class Ptx:
    """A kernel's PTX as a list of instructions, its control-flow graph (one node per instruction) and register taint.

    Each instruction: ``op`` (opcode with its modifiers, e.g. ``ld.global.gpu.acquire.b32``), ``args`` (operand
    text), ``line`` (1-based line in the PTX). ``succ[i]``: the instructions that may run after i (fall-through,
    branch targets)."""

    def __init__(self, text: str):
        self.text = text
        self.ins, labels = [], {}
        for n, raw in enumerate(text.splitlines(), 1):
            for part in raw.split("//")[0].split(";"):  # inline asm may put several statements on a line
                line = part.strip()
                while line[:1] in ("{", "}"):  # scopes of inline asm
                    line = line[1:].strip()
                if not line or line.startswith((".", ")", "(")):  # directives, declarations, the parameter list
                    continue
                m = re.match(r"^(\$?[\w$]+):$", line)
                if m:
                    labels[m.group(1)] = len(self.ins)
                    continue
                pred = None
                if line.startswith("@"):
                    pred, line = line.split(None, 1)
                op, _, rest = line.partition(" ")
                self.ins.append(dict(op=op.strip(), args=rest.strip(), pred=pred, line=n))
        self.succ = []
        for i, ins in enumerate(self.ins):
            nxt = []
            if ins["op"].startswith("bra"):
                nxt.append(labels[ins["args"].split()[-1].rstrip(";")])
                if ins["pred"]:
                    nxt.append(i + 1)
            elif ins["op"] not in ("ret", "exit", "trap"):
                nxt.append(i + 1)
            self.succ.append([j for j in nxt if j < len(self.ins)])

    def addresses(self, i: int) -> list:
        """The registers of instruction i's memory operands (``[%rd5 + 16]``), in order."""
        return [r for a in _MEM.findall(self.ins[i]["args"]) for r in _REG.findall(a)]

    def tainted(self, param_indices) -> set:
        """Registers computed from the kernel parameters ``param_indices`` (their ld.param and every register an
        arithmetic, move or conversion derives from them, to a fixed point over the loops). A value loaded from
        memory is data, not an address: loads do not pass taint on; nor do predicates."""
        names = {f"_param_{k}]" for k in param_indices}
        taint = set()
        changed = True
        while changed:
            changed = False
            for ins in self.ins:
                op, args = ins["op"], ins["args"]
                regs = _REG.findall(args)
                if not regs or regs[0].startswith("%p"):
                    continue
                if op.startswith("ld.param"):
                    hit = any(args.replace(" ", "").endswith(n) for n in names)
                elif op.split(".")[0] in ("ld", "ldu", "atom", "st", "red", "cp", "bar", "bra", "ldmatrix", "stmatrix",
                                          "wgmma", "mma", "fence", "membar", "prefetch", "shfl", "vote"):
                    continue
                else:
                    hit = any(r in taint for r in regs[1:])
                if hit and regs[0] not in taint:
                    taint.add(regs[0])
                    changed = True
        return taint

    def sccs(self, removed=frozenset()) -> list:
        """Strongly connected components of the control-flow graph without the nodes ``removed`` (iterative
        Tarjan); a loop's instructions form one component."""
        index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
        for root in range(len(self.ins)):
            if root in index or root in removed:
                continue
            work = [(root, 0)]
            while work:
                v, k = work.pop()
                if k == 0:
                    index[v] = low[v] = counter[0]
                    counter[0] += 1
                    stack.append(v)
                    on.add(v)
                succ = [w for w in self.succ[v] if w not in removed]
                if k < len(succ):
                    work.append((v, k + 1))
                    w = succ[k]
                    if w not in index:
                        work.append((w, 0))
                    elif w in on:
                        low[v] = min(low[v], index[w])
                    continue
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in self.succ[v]:
                        out.append(comp)
                if work:
                    u = work[-1][0]
                    low[u] = min(low[u], low[v])
        return out

    def reachable(self, starts, blocked) -> set:
        """Instructions reachable from the successors of ``starts`` without passing through ``blocked``."""
        seen, todo = set(), [j for s in starts for j in self.succ[s]]
        while todo:
            j = todo.pop()
            if j in seen or j in blocked:
                continue
            seen.add(j)
            todo.extend(self.succ[j])
        return seen


def _reads_global(ins) -> bool:
    op = ins["op"].split(".")
    if op[0] in ("ld", "ldu"):
        return not {"param", "shared", "local", "const"} & set(op)
    return op[0] == "cp" and "global" in op or op[0] == "atom"


def barrier_violations(ptx: str, params: list, shared: tuple) -> list:
    """Why the grid barrier in this PTX does not order the programs' writes before the reads of the next step; empty
    when it does. ``params``: the PTX parameter names (``ptx_params``); the barrier counter is ``p_bar``, what other
    programs wrote is read through ``shared`` (``p_y`` in a forward: h_{t-1}; ``p_dhp`` in a backward: dHp_{t+1}).

    Read from the code, by following the registers computed from those parameters:
      - every access to the counter is the arrival, a release add at GPU scope (``red``/``atom`` ``.release.gpu``),
        or a poll, an acquire read at GPU scope (``ld.acquire.gpu`` or ``atom.acquire.gpu``): no relaxed or volatile
        poll, whatever fence follows it;
      - the time loop is the loop (strongly connected component of the control flow) that holds the arrival; a poll
        sits in it, in a spin loop of its own (a cycle without the arrival);
      - every global read of ``shared`` (ld, cp.async) sits in the time loop (not hoisted out of it), and no path
        leads from the arrival to one without passing a poll: the next step reads only after the acquire."""
    ins = Ptx(ptx)
    bar = ins.tainted([params.index("p_bar")])
    data = ins.tainted([params.index(p) for p in shared])
    where = lambda i: f"line {ins.ins[i]['line']}: {ins.ins[i]['op']} {ins.ins[i]['args']}"  # noqa: E731
    errors, arrivals, polls, reads = [], [], [], []
    for i, x in enumerate(ins.ins):
        op = set(x["op"].split("."))
        addrs = ins.addresses(i)
        if op & {"ld", "ldu", "atom", "red", "st"} and any(r in bar for r in addrs):
            if op & {"red", "atom"} and "add" in op and op & {"release", "acq_rel"} and "gpu" in op:
                arrivals.append(i)
            elif op & {"ld", "ldu", "atom"} and op & {"acquire", "acq_rel"} and "gpu" in op:
                polls.append(i)
            else:
                errors.append(f"an access to the barrier counter that is neither a release add nor an acquire read "
                              f"at GPU scope: {where(i)}")
        elif _reads_global(x) and any(r in data for r in addrs[-1:]):
            reads.append(i)
    if not arrivals:
        errors.append("no arrival (release add at GPU scope) on the barrier counter")
    if not polls:
        errors.append("no poll (acquire read at GPU scope) of the barrier counter")
    if not reads:
        errors.append(f"no global read through {shared}")
    if errors:
        return errors
    loops = ins.sccs()
    time_loop = next((c for c in loops if arrivals[0] in c), None)
    if time_loop is None:
        return [f"the arrival is in no loop: {where(arrivals[0])}"]
    if not any(p in time_loop for p in polls):
        errors.append("no poll inside the time loop")
    spins = ins.sccs(removed=frozenset(arrivals))
    if not any(p in c for c in spins for p in polls if p in time_loop):
        errors.append("no poll spins (sits in a loop without the arrival): the barrier does not wait")
    for i in reads:
        if i not in time_loop:
            errors.append(f"a read of what other programs wrote outside the time loop (hoisted): {where(i)}")
    early = ins.reachable(arrivals, set(polls))
    for i in reads:
        if i in early:
            errors.append(f"a read of what other programs wrote reachable from the arrival before any poll: {where(i)}")
    return errors


def loop_reads(ptx: str, params: list, names: tuple) -> dict:
    """What a kernel reads inside its loops, from the PTX: the global reads (ld, cp.async) through the parameters
    ``names`` (``params``: ``ptx_params``) that sit in a loop (a strongly connected component of the control flow:
    the time loop and the loops inside it), as 'line N: instruction' (``global_reads``: for W_hh, a W streamed at every
    step instead of held on chip), and the number of shared-memory reads in loops (``shared_reads``: ld.shared, ldmatrix
    and wgmma, whose operands come from shared memory: a held W read from it at every step) and of tensor-core
    instructions there (``loop_mma``: mma.sync and wgmma, the step's matmul on tensor cores)."""
    ins = Ptx(ptx)
    data = ins.tainted([params.index(p) for p in names])
    looped = set().union(*ins.sccs())
    where = lambda i: f"line {ins.ins[i]['line']}: {ins.ins[i]['op']} {ins.ins[i]['args']}"  # noqa: E731
    glob = [where(i) for i in sorted(looped) if _reads_global(ins.ins[i]) and
            any(r in data for r in ins.addresses(i)[-1:])]
    shared = sum(1 for i in looped if ins.ins[i]["op"].startswith(("ld.shared", "ldmatrix", "wgmma.mma_async")))
    mma = sum(1 for i in looped if ins.ins[i]["op"].startswith(("mma.sync", "wgmma.mma_async")))
    return dict(global_reads=glob, shared_reads=shared, loop_mma=mma)


def nan_dropping_minmax(ptx: str) -> list:
    """Float max/min instructions of the PTX that drop NaN (``max.f32``, ``min.f64``...: they return the operand that
    is not NaN; ``.NaN`` variants propagate it), as 'line N: instruction'."""
    out = []
    for n, raw in enumerate(ptx.splitlines(), 1):
        m = re.search(r"\b((?:max|min)(?:\.\w+)*)\s", raw.split("//")[0])
        if m and re.search(r"\.(f16|bf16|f32|f64|f16x2|bf16x2)\b", m.group(1)) and ".NaN" not in m.group(1):
            out.append(f"line {n}: {raw.strip()}")
    return out
