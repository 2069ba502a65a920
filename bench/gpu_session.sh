#!/usr/bin/env bash
# One GPU lease, step by step: each step fits one device call (10 minutes) and starts from a bare machine.
#
#   bash bench/gpu_session.sh tests      # the persistent tests first (a grid-barrier bug hangs: timeouts),
#                                        # then the rest of the suite, compiled
#   bash bench/gpu_session.sh bench      # the benchmark suite, issue 4's shapes first; again to go on (--resume,
#                                        # after unpacking the last call's bench-results.tgz here)
#   bash bench/gpu_session.sh autotune   # tune the benchmark shapes, table under autotune/tables/
#
# Logs and results go to $OUT (the device tool's folder that comes back; else bench/results/session): a log per
# step and, for bench/autotune, one tarball of what they wrote (the tool brings back at most 8 files).
# The GPU machines have torch, triton, pytest, pytest-xdist and pytest-benchmark but no network: the project is
# installed without build isolation or dependencies.
set -uo pipefail
step=${1:?usage: bash bench/gpu_session.sh tests|bench|autotune}
out=${OUT:-bench/results/session}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
# The device tool copies the work tree without .git: pass COMMIT=<sha> so the results name their commit.
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}

python3 -m pip install -q --no-build-isolation --no-deps -e . >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  | tee "$out/versions.txt"

case $step in
  tests)
    # Two runs under timeouts that fit one 10-minute call with the install; each writes a JUnit report, and
    # bench/verdict.py prints one verdict per file (passed, FAILED, skipped; TIMED OUT where a run was killed).
    rm -f "$out"/junit-*.xml
    timeout 200 python3 -m pytest -q -rs -n 4 tests/test_persistent.py \
      --junitxml="$out/junit-persistent.xml" 2>&1 | tail -n 150 | tee "$out/tests-persistent.log"
    timeout 330 python3 -m pytest -q -rs -n 8 tests --ignore=tests/test_persistent.py \
      --junitxml="$out/junit-rest.xml" 2>&1 | tail -n 300 | tee "$out/tests.log"
    python3 -m bench.verdict "$out/junit-persistent.xml" "$out/junit-rest.xml" | tee "$out/verdict.txt"
    ;;
  bench)
    # The parts of a cooperative step first (issue 16: grid barrier, broadcast of h, held matmul; under a minute),
    # then issue 4's targets (the persistent shape with every fusedrnn kernel, then small-batch inference and
    # long sequences against cuDNN), then everything else. --resume skips the rows bench/results/ already holds:
    # the machine starts bare, so before the next call unpack the last call's tarball into this checkout.
    mkdir -p bench/results/micro
    timeout 120 python3 -m bench.micro --json "bench/results/micro/$commit.json" 2>&1 | tee "$out/micro.log"
    python3 -m bench --commit "$commit" --sets persistent --dtypes bf16,fp16 --max-minutes 3 --resume \
      2>&1 | tee "$out/bench-targets.log"
    python3 -m bench --commit "$commit" --sets small_batch,long_seq --dtypes bf16,fp16 --providers fusedrnn,cudnn \
      --max-minutes 2 --resume 2>&1 | tee -a "$out/bench-targets.log"
    # Resets inside a sequence (issue 17): fusedrnn with reset= and without, cuDNN on the split segments, packed.
    python3 -m bench --commit "$commit" --sets resets --providers fusedrnn,cudnn --max-minutes 1 --resume \
      2>&1 | tee -a "$out/bench-targets.log"
    python3 -m bench --commit "$commit" --max-minutes 3 --resume 2>&1 | tee "$out/bench.log"
    tar czf "$out/bench-results.tgz" bench/results
    ;;
  autotune)
    gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")  # h100, h200
    python3 -m fusedrnn.autotune --preset bench --time-budget 480 --output "autotune/tables/nvidia-$gpu.json" \
      --report "$out/autotune-report.json" 2>&1 | tee "$out/autotune.log"
    tar czf "$out/autotune-tables.tgz" autotune/tables
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
