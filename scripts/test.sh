#!/usr/bin/env bash
# Sets up the machine, builds, and runs every test: the x86-64 build (scalar, AVX2 and
# AVX-512 kernels, each where the CPU has it), the I/O readers under ASan+UBSan, and the
# aarch64 build under qemu-user on a NEON-only CPU (cortex-a72).
# Ends with one line "tests: N passed, N failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh || { echo "setup failed"; exit 1; }

passed=0; failed=0; status=0
run_ctest() {  # dir, label, extra ctest args...
  local dir=$1 label=$2; shift 2
  local log; log=$(mktemp)
  echo "== ctest: $label"
  (cd "$dir" && ctest --output-on-failure --timeout 900 -j "${WQUANT_JOBS:-$(nproc)}" "$@") 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line; line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -1)
  if [ -n "$line" ]; then
    local total fail
    fail=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/')
    total=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/')
    passed=$((passed + total - fail)); failed=$((failed + fail))
  elif [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
  fi
  [ "$rc" -eq 0 ] || status=1
  rm -f "$log"
}

step() { echo "== $*"; }
step "build: x86-64 release"
if bash scripts/build.sh release; then run_ctest build "x86-64"; else echo "x86-64 build failed"; failed=$((failed + 1)); status=1; fi

step "build: ASan+UBSan (readers and writers fed broken files, the pipeline, the kernels)"
asan_targets="io_readers_test io_writers_test io_gguf_test pipeline_test kernels_test hqq_test"
if WQUANT_TARGETS="$asan_targets" bash scripts/build.sh asan; then
  # The peak-RSS test measures memory, which ASan's shadow pages distort: it runs in the
  # plain builds only.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest build-asan "asan+ubsan" -R '^(SafetensorsReader|GgufReader|GgufWriter|GgufPlan|ModelReader|Writers|WqReader|Pipeline|Plan|Glob|AllIsas/KernelsMatchScalar|AllIsas/HqqGolden)' \
    -E 'PeakMemory'
else echo "asan build failed"; failed=$((failed + 1)); status=1; fi

step "build: aarch64 (NEON), tests under qemu-user -cpu cortex-a72"
if bash scripts/build.sh arm64; then
  QEMU_CPU=cortex-a72 run_ctest build-arm64 "aarch64/qemu" -E "${WQUANT_ARM_EXCLUDE:-^$}"
else echo "aarch64 build failed"; failed=$((failed + 1)); status=1; fi

echo "tests: $passed passed, $failed failed"
exit $status
