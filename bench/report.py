"""Results: rows on disk, the markdown summary, the speedup plots, the console table.

Layout (GPU runs): ``bench/results/<gpu-slug>/<commit>[-dirty].json`` (a list of rows; runs at the same commit
merge into one file, a re-measured (case, provider) replacing its old row), ``summary.md`` and
``plots/<shape set>.png`` beside it, and ``bench/results/README.md``, the index of every GPU's latest summary.
Every row carries the case, the provider and the GPU name, torch/triton/CUDA/cuDNN versions and git commit.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import tempfile
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from . import registry
from .measure import TOL
from .providers import BASELINE, PROVIDERS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def slug(name: str) -> str:
    """"NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - not a git checkout, or no git: recorded as unknown
        return None


def environment(device: str, interpreting: bool) -> dict:
    """Where the rows come from: GPU, versions, commit. Added to every row."""
    import torch
    import triton
    try:
        import fusedrnn
        fused_version = fusedrnn.__version__
    except Exception as e:  # noqa: BLE001
        fused_version = f"unknown: {type(e).__name__}"
    cuda = device == "cuda"
    gpu = torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()})"
    status = _git("status", "--porcelain", "--", ".", ":(exclude)bench/results")
    return {"gpu": gpu, "gpu_slug": slug(gpu), "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
            "fusedrnn": fused_version, "python": platform.python_version(), "commit": _git("rev-parse", "HEAD"),
            "dirty": bool(status) if status is not None else None, "interpreter": interpreting}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def results_file(out_dir: Path, meta: dict) -> Path:
    name = (meta.get("commit") or "nocommit")[:12] + ("-dirty" if meta.get("dirty") else "")
    return Path(out_dir) / f"{name}.json"


def load_rows(path: Path) -> list[dict]:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else []


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows of ``old`` and ``new``; a (case, provider) in both keeps the one from ``new``."""
    merged = {(r["case"], r["provider"]): r for r in old}
    merged.update({(r["case"], r["provider"]): r for r in new})
    return list(merged.values())


def _finite(obj):
    """NaN and infinities become None: the file stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def save_rows(path: Path, rows: list[dict]) -> None:
    """Write atomically, so a run killed midway leaves the previous complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(_finite(rows), f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def speedup(rows: list[dict]) -> dict:
    """(case, provider) -> cuDNN median / provider median, where both are "ok"."""
    base = {r["case"]: r["median_ms"] for r in rows if r["provider"] == BASELINE and r.get("status") == "ok"}
    return {(r["case"], r["provider"]): base[r["case"]] / r["median_ms"] for r in rows
            if r.get("status") == "ok" and r["case"] in base}


def reset_cost(rows: list[dict]) -> list[tuple[dict, float]]:
    """(row, its median / the median of the same provider on the same case without resets) for every fusedrnn row of
    a case with resets whose twin was measured: what the reset flag costs (the aim: at most 1.05)."""
    plain = {(r["case"], r["provider"]): r["median_ms"] for r in rows if r.get("status") == "ok"}
    out = []
    for r in rows:
        if r.get("episode") and r.get("status") == "ok" and r["provider"].startswith("fusedrnn"):
            twin = r["case"].replace(f"-E{r['episode']}/", "/")
            if (twin, r["provider"]) in plain:
                out.append((r, r["median_ms"] / plain[(twin, r["provider"])]))
    return out


def _providers_in(rows) -> list[str]:
    """Providers present, the baseline first, then in registry order."""
    seen = {r["provider"] for r in rows}
    order = [BASELINE] + [p for p in PROVIDERS if p != BASELINE]
    return [p for p in order if p in seen] + sorted(seen - set(PROVIDERS))


_ALGO = {"STANDARD": "std", "PERSIST_STATIC": "persist", "PERSIST_STATIC_SMALL_H": "small-h"}


def _cudnn_tag(r: dict) -> str:
    """" [persist]": torch's predicted cuDNN algorithm (fwd/bwd); " [no cuDNN]" where the profiler saw none."""
    detail = r.get("detail") or {}
    if (detail.get("observed") or {}).get("used") is False:
        return " [no cuDNN]"
    algo = detail.get("algo_predicted") or {}
    names = [_ALGO.get(algo[k], algo[k]) for k in ("fwd", "bwd") if k in algo]
    return f" [{'/'.join(names)}]" if names else ""


def _cell(r: dict | None, x: float | None) -> str:
    if r is None:
        return ""
    status = r.get("status", "")
    if status != "ok":
        return status.split(":")[0]
    if r["provider"] == BASELINE:
        return f"{r['median_ms']:.3g}{_cudnn_tag(r)}"
    return f"{r['median_ms']:.3g}" + (f" ({x:.2f}x)" if x is not None else "")


def _varying(shapes) -> list[str]:
    fields = ("cell", "T", "B", "I", "H", "L", "bidirectional", "episode")
    same_ih = all(s.I == s.H for s in shapes)  # I follows H: naming H is enough
    return [f for f in fields if len({getattr(s, f) for s in shapes}) > 1 and not (f == "I" and same_ih)]


def _label(row: dict, varying: list[str]) -> str:
    """The case's name within its set: the fields that vary there (all of them when nothing does)."""
    names = {"bidirectional": lambda v: "bidir" if v else "uni", "cell": str,
             "episode": lambda v: f"resets (episodes~{v})" if v else "no resets"}
    fields = varying or ["cell", "T", "B", "I", "H"] + (["L"] if row["L"] > 1 else [])
    if row["mode"] == "decode":
        fields = [f for f in fields if f != "T"] or ["B", "H"]
    return " ".join(names[f](row[f]) if f in names else f"{f}{row[f]}" for f in fields)


def _order(rows_of_set: list[dict]) -> list[dict]:
    dt, md = {d: i for i, d in enumerate(registry.DTYPES)}, {m: i for i, m in enumerate(registry.MODES)}
    return sorted(rows_of_set, key=lambda r: (md.get(r["mode"], 9), dt.get(r["dtype"], 9), r["cell"], r["L"],
                                              r["T"], r["B"], r["H"], -r.get("episode", 0)))


def _by_set(rows: list[dict]) -> dict:
    out = defaultdict(list)
    for r in rows:
        for s in r.get("sets", []):
            out[s].append(r)
    return {s: out[s] for s in registry.ALL_SETS if s in out}


def summary_markdown(rows: list[dict], source: str, plots: dict[str, str]) -> str:
    """The summary page: per shape set a table of medians (speedup over cuDNN), then failures and skips."""
    first = rows[0] if rows else {}
    xs = speedup(rows)
    stamps = sorted(r["timestamp"] for r in rows if r.get("timestamp"))
    lines = [f"# fusedrnn benchmarks: {first.get('gpu', '?')}", "",
             f"torch {first.get('torch')} | triton {first.get('triton')} | CUDA {first.get('cuda')} | "
             f"cuDNN {first.get('cudnn')} | fusedrnn {first.get('fusedrnn')} | commit "
             f"`{(first.get('commit') or '?')[:12]}`{' (dirty tree)' if first.get('dirty') else ''} | "
             f"rows: [{source}]({source}), measured {stamps[0] if stamps else '?'} to {stamps[-1] if stamps else '?'}",
             ""]
    if first.get("interpreter"):
        lines += ["**Triton interpreter run (no GPU): the timings below mean nothing.**", ""]
    lines += ["Each cell: median time of one call in ms (speedup over `cudnn`, the same case). The input projection "
              "is inside every provider's time. Medians of CUDA-event timings with the L2 cache flushed between "
              "calls; the spread (p20-p80), tokens/s, achieved TFLOP/s (GEMM FLOPs: `bench/registry.py`, "
              "`gemm_flops`), peak memory and what ran (kernel launches, cuDNN's predicted and observed algorithm) "
              "are in the JSON rows. Every provider was checked against torch.nn in fp32 before it was timed "
              "(max|diff| <= atol + rtol * max|ref| per tensor; (atol, rtol): "
              + ", ".join(f"{d} {a:g}/{r:g}" for d, (a, r) in TOL.items()) + "); `failed` means it did not pass "
              "or did not run, and has no time. The `cudnn` column's tag is the cuDNN algorithm torch's own rule "
              "picks (fwd/bwd; `bench/cudnn_info.py`), or `no cuDNN` where the profiler saw torch.nn run without "
              "it (bf16 on some builds): that case's baseline is then torch.nn's native path.", ""]
    for name, srows in _by_set(rows).items():
        s = registry.ALL_SETS[name]
        # A provider skipped on every case of the set gets no column (the skips are listed at the end).
        providers = _providers_in([r for r in srows if not r.get("status", "").startswith("skipped")])
        lines += [f"## {name}: {s.description}", ""]
        if name in plots:
            lines += [f"![speedup over cuDNN, {name}]({plots[name]})", ""]
        lines += ["| case | dtype | mode | " + " | ".join(providers) + " |",
                  "|---|---|---|" + "---|" * len(providers)]
        table = defaultdict(dict)
        for r in _order(srows):
            table[(r["case"], r["dtype"], r["mode"])][r["provider"]] = r
        varying = _varying(s.shapes)
        for (key, dtype, mode), by_p in table.items():
            any_row = next(iter(by_p.values()))
            cells = [_cell(by_p.get(p), xs.get((key, p))) for p in providers]
            lines.append(f"| {_label(any_row, varying)} | {dtype} | {mode} | " + " | ".join(cells) + " |")
        lines.append("")
        costs = reset_cost(srows)
        if costs:
            lines += ["The cost of the reset flag (fusedrnn with resets / the same provider without them; the aim is at "
                      "most 1.05): " + ", ".join(f"{r['provider']} {r['dtype']} {r['mode']} {x:.3f}"
                                                 for r, x in costs) + ".", ""]
    failed = [r for r in rows if r.get("status", "").startswith("failed")]
    if failed:
        lines += ["## Failures (no time recorded)", ""]
        lines += [f"- `{r['case']}` / `{r['provider']}`: {r['status'][len('failed: '):]}" for r in failed]
        lines.append("")
    skipped = Counter((r["provider"], r["status"][len("skipped: "):]) for r in rows
                      if r.get("status", "").startswith("skipped"))
    if skipped:
        lines += ["## Skipped", ""]
        lines += [f"- `{p}`: {why} ({n} case{'s' if n > 1 else ''})" for (p, why), n in sorted(skipped.items())]
        lines.append("")
    return "\n".join(lines)


def write_plots(out_dir: Path, rows: list[dict]) -> tuple[dict, str | None]:
    """One PNG per shape set, one panel per mode: speedup over cuDNN (log scale). A sweep draws a line per
    provider (colour) and dtype (marker); a set of one shape draws bars per provider, grouped by dtype.
    Returns ({set: relative path}, a note when some or all plots could not be made)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}, ("plots skipped: matplotlib is not installed (pip install matplotlib); make them later with "
                    "`python -m bench --report-only <rows.json>`")
    xs = speedup(rows)
    made, missing = {}, []
    styles = {"fp32": ("o", "-"), "tf32": ("s", "--"), "fp16": ("^", ":"), "bf16": ("D", "-.")}
    for name, srows in _by_set(rows).items():
        modes = [m for m in registry.MODES if any(r["mode"] == m for r in srows)]
        varying = _varying(registry.ALL_SETS[name].shapes)
        fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False)
        drawn = False
        for ax, mode in zip(axes[0], modes):
            mrows = _order([r for r in srows if r["mode"] == mode])
            labels = list(dict.fromkeys(_label(r, varying) for r in mrows))
            others = [p for p in _providers_in(mrows) if p != BASELINE]
            dtypes = [d for d in registry.DTYPES if any(r["dtype"] == d for r in mrows)]
            for k, p in enumerate(others):
                color = f"C{k % 10}"
                if len(labels) == 1:  # one shape: bars, grouped by dtype
                    pts = [(i + (k - len(others) / 2 + 0.5) * 0.8 / len(others), xs[(r["case"], p)])
                           for i, d in enumerate(dtypes) for r in mrows
                           if r["provider"] == p and r["dtype"] == d and (r["case"], p) in xs]
                    if pts:
                        ax.bar(*zip(*pts), width=0.8 / len(others), color=color, label=p)
                        drawn = True
                    continue
                for dtype in dtypes:  # a sweep: a line per provider (colour) and dtype (marker, dash)
                    pts = [(labels.index(_label(r, varying)), xs[(r["case"], p)]) for r in mrows
                           if r["provider"] == p and r["dtype"] == dtype and (r["case"], p) in xs]
                    if pts:
                        marker, dash = styles.get(dtype, ("o", "-"))
                        ax.plot(*zip(*pts), marker=marker, linestyle=dash, color=color, label=f"{p} {dtype}")
                        drawn = True
            ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
            ticks = dtypes if len(labels) == 1 else labels
            ax.set_xticks(range(len(ticks)), ticks, rotation=45 if len(ticks) > 4 else 0,
                          ha="right" if len(ticks) > 4 else "center")
            ax.set_yscale("log", base=2)
            ax.set_title(f"{name}: {mode}" + (f" ({labels[0]})" if len(labels) == 1 else ""), fontsize=10)
            ax.set_ylabel("speedup over cuDNN (x)")
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        if drawn:
            rel = f"plots/{name}.png"
            (Path(out_dir) / "plots").mkdir(parents=True, exist_ok=True)
            fig.savefig(Path(out_dir) / rel, dpi=110)
            made[name] = rel
        else:
            missing.append(name)
        plt.close(fig)
    note = f"no plot for {', '.join(missing)}: no case there has both a cuDNN time and another" if missing else None
    return made, note


def write_report(json_path: Path, rows: list[dict]) -> list[str]:
    """summary.md and plots beside ``json_path``; returns notes for the console."""
    out_dir = Path(json_path).parent
    plots, note = write_plots(out_dir, rows)
    (out_dir / "summary.md").write_text(summary_markdown(rows, Path(json_path).name, plots))
    notes = [f"summary: {out_dir / 'summary.md'}"] + ([note] if note else [])
    if plots:
        notes.append(f"plots: {out_dir / 'plots'} ({len(plots)} png)")
    return notes


def write_index(root: Path = RESULTS) -> Path:
    """bench/results/README.md: a link to each GPU's summary, newest first."""
    entries = []
    for summary in sorted(Path(root).glob("*/summary.md")):
        jsons = sorted(summary.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)
        rows = load_rows(jsons[-1]) if jsons else []
        stamp = max((r.get("timestamp", "") for r in rows), default="")
        first = rows[0] if rows else {}
        entries.append((stamp, f"- [{first.get('gpu', summary.parent.name)}]({summary.parent.name}/summary.md): "
                               f"commit `{(first.get('commit') or '?')[:12]}`, torch {first.get('torch')}, "
                               f"triton {first.get('triton')}, measured {stamp or '?'}"))
    lines = ["# Benchmark results", "", "Written by `python -m bench` on a GPU; one folder per GPU model. "
             "Latest summary per GPU:", ""]
    lines += [e for _, e in sorted(entries, reverse=True)] or ["- none yet: no GPU run has been committed."]
    path = Path(root) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    """The console table, one line per row."""
    xs = speedup(rows)
    head = f"{'case':<44} {'provider':<14} {'median ms':>10} {'p20-p80 ms':>19} {'TFLOP/s':>8} {'Mtok/s':>8} " \
           f"{'peak MiB':>9} {'vs cuDNN':>8}"
    out = [head, "-" * len(head)]
    for r in rows:
        if r.get("status") != "ok":
            out.append(f"{r['case']:<44} {r['provider']:<14} {r.get('status', '?')[:120]}")
            continue
        mem = None if r.get("peak_mem_bytes") is None else r["peak_mem_bytes"] / 2 ** 20
        x = xs.get((r["case"], r["provider"]))
        out.append(f"{r['case']:<44} {r['provider']:<14} {r['median_ms']:>10.4g} "
                   f"{r['p20_ms']:>9.4g}-{r['p80_ms']:<9.4g} {r['tflops']:>8.3g} {r['tokens_per_s'] / 1e6:>8.3g} "
                   f"{_fmt(mem, '>9.1f')} {_fmt(x, '>7.2f') + ('x' if x is not None else ''):>8}")
    return "\n".join(out)
