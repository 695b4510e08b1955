#!/usr/bin/env bash
# Sets up the machine, builds, and runs every test:
#   - x86-64 Release: every suite (scalar, AVX2 and AVX-512 kernels, each where the CPU has it);
#   - ASan+UBSan (RelWithDebInfo): readers and writers fed broken files, the pipeline, kernels, HQQ;
#   - the library used by a consumer project: installed (find_package, pkg-config) and through
#     add_subdirectory in a MinSizeRel build linked with lld, whose wquant then runs under
#     qemu-x86_64 on CPUs without AVX (Nehalem) and without AVX-512 (Haswell), its output
#     bytes compared with the Release build's (an ISA leak faults or differs there);
#   - a Debug build (-O0) of the kernel, ISA and engine suites;
#   - aarch64 (NEON) cross build, tests under qemu-user on a NEON-only CPU (cortex-a72).
# Ends with one line "tests: N passed, N failed, N skipped"; the skipped ones are listed
# with their reasons just before it.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh || { echo "setup failed"; exit 1; }

passed=0; failed=0; skipped=0; status=0; skip_notes=""
run_ctest() {  # dir, label, extra ctest args...
  local dir=$1 label=$2; shift 2
  local log; log=$(mktemp)
  step "ctest: $label"
  (cd "$dir" && ctest --output-on-failure --timeout 900 -j "${WQUANT_JOBS:-$(nproc)}" "$@") 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line; line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -1)
  if [ -n "$line" ]; then
    local total fail skip
    fail=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/')
    total=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/')
    skip=$(grep -cE "^\s+[0-9]+ - .*\(Skipped\)" "$log")
    passed=$((passed + total - fail - skip)); failed=$((failed + fail)); skipped=$((skipped + skip))
    if [ "$skip" -gt 0 ] && [ -f "$dir/Testing/Temporary/LastTest.log" ]; then
      # gtest prints "file:line: Skipped" and the reason on the next line.
      skip_notes+=$(grep -h -A1 ": Skipped$" "$dir/Testing/Temporary/LastTest.log" | grep -vE ": Skipped$|^--$" |
                    sort | uniq -c | sed "s|^|  [$label] |")$'\n'
    fi
  elif [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
  fi
  [ "$rc" -eq 0 ] || status=1
  rm -f "$log"
}
check() {  # label, command...: one pass or fail
  local label=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "FAILED: $label"; failed=$((failed + 1)); status=1; fi
}
# Each step says how far into the run it starts (minutes:seconds), so a slow step shows in
# the log; the whole run has to stay under 40 minutes on a 2-core CI machine.
started=$SECONDS
step() { printf "== [%d:%02d] %s\n" $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*"; }

step "setup: a second run installs and prints nothing"
check "setup.sh is idempotent" bash -c 'out=$(bash scripts/setup.sh 2>&1) && [ -z "$out" ] || { echo "$out"; exit 1; }'

# The benchmark scripts run nowhere in the tests (their inputs are GBs): each at least parses.
check "bench and build scripts parse (bash -n)" bash -c 'for f in bench/*.sh scripts/*.sh .ci/run; do bash -n "$f" || { echo "$f"; exit 1; }; done'

step "build: x86-64 release"
if bash scripts/build.sh release; then run_ctest build "x86-64"; else echo "x86-64 build failed"; failed=$((failed + 1)); status=1; fi

step "memcheck: no uninitialised byte reaches an output file (valgrind; the pipeline's buffers are not zeroed first)"
stories=$root/../shared/data/models/stories260K/stories260K-f32.gguf
if ! command -v valgrind > /dev/null; then
  skipped=$((skipped + 1)); skip_notes+="  [memcheck] valgrind is not installed"$'\n'
elif [ ! -f "$stories" ]; then
  skipped=$((skipped + 1)); skip_notes+="  [memcheck] ../shared (stories260K) is absent"$'\n'
else
  vg=$(mktemp -d)
  # stories260K zero-padded to K widths (bench/pad_model.cpp), so the K types are written as such.
  build/bench/wq_pad_model "$stories" "$vg/m.gguf" > /dev/null
  for args in "Q4_K_M" "Q2_K --hqq" "Q3_K_S" "IQ4_XS" "Q6_K" "Q5_1 --hqq" "BF16"; do
    # shellcheck disable=SC2086
    check "memcheck: $args" valgrind -q --error-exitcode=9 build/cli/wquant quantize "$vg/m.gguf" "$vg/o.gguf" $args \
      --threads 2 --force -q
  done
  check "memcheck: .wq 4-bit block 32 hqq" valgrind -q --error-exitcode=9 build/cli/wquant quantize "$vg/m.gguf" \
    "$vg/o.wq" --bits 4 --block 32 --hqq --threads 2 --force -q
  rm -rf "$vg"
fi

step "build: ASan+UBSan, RelWithDebInfo (readers and writers fed broken files, the pipeline, the kernels)"
asan_targets="io_readers_test io_writers_test io_gguf_test pipeline_test kernels_test scratch_buffer_test hqq_test imatrix_test gguf_mix_test fused_metrics_test output_file_test onnx_reader_test"
if WQUANT_TARGETS="$asan_targets" bash scripts/build.sh asan; then
  # The peak-RSS test measures memory, which ASan's shadow pages distort: it runs in the
  # plain builds only. The ~150 whole-file K-mix conversions take minutes under ASan; the
  # legacy-type whole files, the imatrix readers and the K kernels (KernelsMatchScalar) run.
  # GgufMix.WholeFiles*: whole llama-quantize files of every type and mix, 5 of the 6
  # minutes this step's tests took under ASan (CI, 2026-12-03); the Release suite runs
  # them, and here every type's kernels are run by AllIsas/KernelsMatchScalar and the
  # GGUF writer by the other GgufMix tests.
  echo "asan+ubsan: Pipeline.PeakMemory* and GgufMix.WholeFiles* not run here (plain builds run them)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest build-asan "asan+ubsan" -R '^(SafetensorsReader|GgufReader|GgufWriter|GgufPlan|GgufMix|Imatrix|ModelReader|Writers|WqReader|Pipeline|Plan|Glob|AllIsas/KernelsMatchScalar|AllIsas/HqqGolden|AllIsas/FusedMetrics|OutputIoTest|OnnxReaderTest|ScratchBuffer)' \
    -E 'PeakMemory|GgufMix.WholeFiles'
else echo "asan build failed"; failed=$((failed + 1)); status=1; fi

step "library: installed package (find_package, pkg-config) and add_subdirectory (MinSizeRel, lld)"
work=$root/build-consumer
rm -rf "$work"; mkdir -p "$work"
if [ -x build/cli/wquant ]; then
  check "cmake --install" cmake --install build --prefix "$work/prefix"
  check "consumer: find_package" bash -c "cmake -S tests/consumer -B '$work/pkg' -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH='$work/prefix' >/dev/null && ninja -C '$work/pkg' >/dev/null && '$work/pkg/consumer' '$work'"
  check "consumer: pkg-config" bash -c "g++ tests/consumer/main.cpp \$(PKG_CONFIG_PATH='$work/prefix/lib/pkgconfig' \
      pkg-config --cflags --libs wquant) -o '$work/pc-consumer' && '$work/pc-consumer' '$work'"
  if cmake -S tests/consumer -B "$work/sub" -G Ninja -DCMAKE_BUILD_TYPE=MinSizeRel -DWQUANT_CONSUMER_SOURCE="$root" \
       -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld >/dev/null && ninja -C "$work/sub" -j "${WQUANT_JOBS:-$(nproc)}" consumer wquant; then
    check "consumer: add_subdirectory (MinSizeRel, lld)" "$work/sub/consumer" "$work"
    check "add_subdirectory builds no tests or benchmarks" test ! -e "$work/sub/wquant/tests" -a ! -e "$work/sub/wquant/bench"
    leak_log=$work/leak.log
    bash scripts/isa_leak_check.sh "$work/sub/wquant/cli/wquant" build/cli/wquant "$work/leak" | tee "$leak_log"
    passed=$((passed + $(grep -c ": ok$" "$leak_log"))); n=$(grep -c "FAIL" "$leak_log"); failed=$((failed + n))
    [ "$n" -eq 0 ] || status=1
    if grep -q "SKIPPED" "$leak_log"; then skipped=$((skipped + 1)); skip_notes+="  [isa-leak] $(grep SKIPPED "$leak_log")"$'\n'; fi
  else echo "consumer add_subdirectory build failed"; failed=$((failed + 1)); status=1; fi
else echo "no release build to install"; failed=$((failed + 1)); status=1; fi

step "build: Debug (-O0): kernel, ISA, engine suites"
if WQUANT_TARGETS="kernels_test isa_select_test engine_test" bash scripts/build.sh debug; then
  run_ctest build-debug "debug" -R '^(AllIsas/|KernelRegistry|IsaList|IsaSelect|Metrics|QuantSpec|Quantize|Determinism)'
else echo "debug build failed"; failed=$((failed + 1)); status=1; fi

step "build: aarch64 (NEON), tests under qemu-user -cpu cortex-a72"
if bash scripts/build.sh arm64; then
  # GgufMix.WholeFiles* quantize ~170 models with the K-quant searches, minutes under
  # emulation; the NEON bytes of every block type are held to llama.cpp's digests by
  # GgmlBlocks.EveryIsaWritesLlamaCppsBytes and KernelsMatchScalar here, and the mix logic
  # does not depend on the ISA.
  # Not under emulation (each runs natively in the x86-64 suite): the whole llama-quantize
  # files (minutes of K-quant searches; NEON's bytes are checked by the kernel digests);
  # the library's GGUF conversions compared with the program's and the `bench` sweep and
  # `--hqq` mix of the CLI (whole K-mix conversions of the stories260K fixture, 4.5 of the
  # 19 minutes of test time this step took in CI, 2026-12-05; the same kernels and the same
  # ISA-free logic the other suites run here); and the two tests that measure the process
  # rather than its output: peak RSS (under qemu-user it is qemu's, translation cache
  # included) and the linear-time check of many tiny tensors (a ratio of two timings, 70 s
  # under qemu). And the scalar table's GGML quantizers checked against themselves (130 s of
  # emulated CPU, 2026-12-05): on Arm that table is the oracle of every NEON check, which
  # runs here, and the self-check runs natively in the x86-64 suite.
  arm_exclude='^(GgufMix\.WholeFiles|PublicApiGguf\.(Q4KPure|HqqWithAMix|MixName|TensorTypes|ImatrixAndLegacy)|Cli\.(BenchModelSweepsTheSchemes|HqqRefinesTheQ4KTensorsOfAMix)|Pipeline\.PeakMemory|Cli\.TrustManyTinyTensorsTakeLinearTime|AllIsas/KernelsMatchScalar\.ByteForByte/scalar_quantize_ggml)'
  echo "aarch64/qemu: not run under emulation (the x86-64 suite runs them): $arm_exclude"
  QEMU_CPU=cortex-a72 run_ctest build-arm64 "aarch64/qemu" -E "${WQUANT_ARM_EXCLUDE:-$arm_exclude}"
else echo "aarch64 build failed"; failed=$((failed + 1)); status=1; fi

if [ "$skipped" -gt 0 ]; then
  echo "== skipped, and why:"
  printf "%s" "$skip_notes"
fi
step "done"
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $status
