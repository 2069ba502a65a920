"""One verdict per test file from pytest's JUnit XML reports: ``python -m bench.verdict a.xml [b.xml ...]``.

For the GPU session (``bench/gpu_session.sh tests``): prints, per file, passed / failed / errors / skipped and a
verdict (FAILED if anything failed or errored, TIMED OUT for a report that a timeout left unwritten, else passed
or skipped), then the failures' first lines and one overall line. Exits 1 unless every file passed or skipped.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def _file_of(case: ET.Element) -> str:
    """tests/test_x.py of a testcase (its classname is the dotted module path, file attribute where given)."""
    if case.get("file"):
        return case.get("file")
    module = (case.get("classname") or "?").split(".")
    while module and not module[-1].startswith("test_"):
        module.pop()
    return "/".join(module) + ".py" if module else case.get("classname", "?")


def summarize(reports: list[Path]) -> tuple[list[str], bool]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failures, missing, ok = [], [], True
    for report in reports:
        if not report.exists() or report.stat().st_size == 0:
            missing.append(f"{report.name}: TIMED OUT or crashed (no report): a hang (grid barrier?) or a kill")
            ok = False
            continue
        for case in ET.parse(report).getroot().iter("testcase"):
            name = _file_of(case)
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed" if child.tag == "failure" else "errors"
                    message = (child.get("message") or child.text or "").strip().splitlines()
                    failures.append(f"  {name}::{case.get('name')}: {message[0][:200] if message else child.tag}")
                elif child.tag == "skipped":
                    outcome = "skipped"
            counts[name][outcome] += 1
    width = max([len(n) for n in counts] + [4])
    lines = [f"{'file':<{width}}  passed  failed  errors  skipped  verdict"]
    total = defaultdict(int)
    for name in sorted(counts):
        c = counts[name]
        for k, v in c.items():
            total[k] += v
        bad = c["failed"] or c["errors"]
        ok = ok and not bad
        verdict = "FAILED" if bad else ("passed" if c["passed"] else "skipped")
        lines.append(f"{name:<{width}}  {c['passed']:6d}  {c['failed']:6d}  {c['errors']:6d}  {c['skipped']:7d}  "
                     f"{verdict}")
    lines += missing
    if failures:
        lines += ["failures:"] + failures
    lines.append(f"VERDICT: {'passed' if ok else 'FAILED'} ({total['passed']} passed, {total['failed']} failed, "
                 f"{total['errors']} errors, {total['skipped']} skipped)")
    return lines, ok


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    lines, ok = summarize([Path(a) for a in argv])
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
