#!/usr/bin/env bash
# End-to-end benchmark against the machine's own floor, measured in the same run.
#
# The floor of a conversion is what moving its bytes costs on this machine today: reading
# the input from a warm page cache (cat), and writing an output of the same size (dd),
# with and without fsync. Disks on virtual machines swing by 2x within an hour, so every
# job is printed as a ratio to the floor measured minutes before it: wall time against
# read + write (with fsync, and without), and CPU time (user + sys) against the floor's CPU
# time (cat of the input + dd of the output without fsync). Each job runs WQ_E2E_RUNS
# times (medians); wquant runs once more per repetition with WQUANT_NO_FSYNC=1 for the
# no-fsync ratio. With LLAMA_QUANTIZE set, llama-quantize runs alternately with wquant
# (A B A B ...) on the GGUF jobs, and the ratio is of the medians.
#
# Jobs: the synthetic TinyLlama-shaped model (bench/gen_model.cpp) as
#   f32 GGUF      -> Q4_0, 2 threads (also with --output-tensor-type q8_0), 1 thread and
#                    --threads 8 (wquant caps that at the CPUs it may run on, with a
#                    note: on a 2-core machine it runs 2 threads)
#   bf16 sharded safetensors (model-0000N-of-0000M + index) -> .wq 4-bit block 64 asym,
#                    without and with --hqq
#   bf16 GGUF     -> Q4_0 (wquant's GGUF output needs a GGUF input: its vocabulary and
#                    keys are copied)
#
#   LLAMA_QUANTIZE=/path/to/llama-quantize bash bench/e2e_bench.sh
# Environment: WQ_E2E_DIR (default /tmp/wq-e2e), WQ_E2E_LAYERS (22: 1.1 B parameters;
# 1 for a quick check), WQ_E2E_RUNS (3), WQ_E2E_JOBS (labels of the jobs to run; all by default), WQ_E2E_COLD (1: also a cold-cache read of each
# input, after `echo 3 > /proc/sys/vm/drop_caches`, where permitted), WQUANT, WQ_GEN_MODEL.
# wquant's own measuring knobs pass through: WQUANT_OUTPUT_IO (buffered|direct),
# WQUANT_READAHEAD (pread|populate|touch|willneed|off); the header prints them.
# Run it on an idle machine: a second busy process halves every figure on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${WQ_E2E_DIR:-/tmp/wq-e2e}
layers=${WQ_E2E_LAYERS:-22}
runs=${WQ_E2E_RUNS:-3}
cold=${WQ_E2E_COLD:-1}
wq=${WQUANT:-$root/build/cli/wquant}
gen=${WQ_GEN_MODEL:-$root/build/bench/wq_gen_model}
mkdir -p "$dir"

f32_gguf=$dir/tinyllama-${layers}l-f32.gguf
bf16_gguf=$dir/tinyllama-${layers}l-bf16.gguf
bf16_st=$dir/tinyllama-${layers}l-bf16-hf/model.safetensors.index.json
[ -f "$f32_gguf" ] || "$gen" --layers "$layers" --dtype f32 "$f32_gguf" > /dev/null
[ -f "$bf16_gguf" ] || "$gen" --layers "$layers" --dtype bf16 "$bf16_gguf" > /dev/null
if [ ! -f "$bf16_st" ]; then
  mkdir -p "$(dirname "$bf16_st")"
  "$gen" --layers "$layers" --dtype bf16 --shard-size 1G "$bf16_st" > /dev/null
fi

# The files a model is read from (the shards of an index).
input_files() {
  case $1 in
    *.index.json) ls "$(dirname "$1")"/model-*-of-*.safetensors ;;
    *) echo "$1" ;;
  esac
}
input_bytes() { input_files "$1" | xargs stat -c %s | awk '{s += $1} END {print s}'; }

# timed LABEL command...: runs it under /usr/bin/time, appends "wall cpu rss_kib" to
# $dir/LABEL.runs, and fails loudly (with the tool's last lines) if the command does.
timed() {
  local label=$1; shift
  local t=$dir/.time
  if ! /usr/bin/time -f "%e %U %S %M" -o "$t" "$@" > "$dir/.out" 2> "$dir/.err"; then
    echo "$label failed: $*" >&2
    tail -5 "$dir/.err" >&2
    exit 1
  fi
  awk '{printf "%s %.3f %s\n", $1, $2 + $3, $4}' "$t" >> "$dir/$label.runs"
}

# median LABEL FIELD (1 wall, 2 cpu, 3 rss KiB) over the runs so far.
median() {
  sort -g -k"$2" "$dir/$1.runs" | awk -v f="$2" '{v[NR] = $f} END {
    if (NR == 0) { print "nan"; exit }
    print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }'; }

# floor NAME INPUT OUT_BYTES: cat of the input (warm; cold where permitted), dd of an
# output-sized file with and without fsync. Leaves floor_{read,read_cpu,sync,nosync,nosync_cpu}.
floor() {
  local name=$1 in=$2 out_bytes=$3
  local files mib
  files=$(input_files "$in" | tr "\n" " ")
  mib=$(( (out_bytes + 1048575) / 1048576 ))
  rm -f "$dir"/floor-"$name"-*.runs
  # shellcheck disable=SC2086
  cat $files > /dev/null  # warm
  for _ in $(seq "$runs"); do
    # shellcheck disable=SC2086
    timed "floor-$name-read" sh -c "cat $files > /dev/null"
    timed "floor-$name-sync" dd if=/dev/zero of="$dir/floor.out" bs=1M count="$mib" conv=fsync status=none
    rm -f "$dir/floor.out"
    timed "floor-$name-nosync" dd if=/dev/zero of="$dir/floor.out" bs=1M count="$mib" status=none
    rm -f "$dir/floor.out"
  done
  floor_read=$(median "floor-$name-read" 1); floor_read_cpu=$(median "floor-$name-read" 2)
  floor_sync=$(median "floor-$name-sync" 1)
  floor_nosync=$(median "floor-$name-nosync" 1); floor_nosync_cpu=$(median "floor-$name-nosync" 2)
  local cold_note="cold read: not measured (WQ_E2E_COLD=0)"
  if [ "$cold" = 1 ]; then
    if sync && (echo 3 > /proc/sys/vm/drop_caches) 2> /dev/null; then
      rm -f "$dir/floor-$name-cold.runs"
      # shellcheck disable=SC2086
      timed "floor-$name-cold" sh -c "cat $files > /dev/null"
      cold_note="cold read $(median "floor-$name-cold" 1) s"
    else
      cold_note="cold read: not permitted here (/proc/sys/vm/drop_caches)"
    fi
  fi
  printf "  floor  %-44s read %6.2f s (cpu %.2f s), write %s MiB: %6.2f s with fsync, %6.2f s without (cpu %.2f s); %s\n" \
    "$name" "$floor_read" "$floor_read_cpu" "$mib" "$floor_sync" "$floor_nosync" "$floor_nosync_cpu" "$cold_note"
}

# report LABEL [LLAMA_LABEL]: one line of medians and ratios for a wquant job.
report() {
  local label=$1 llama=${2:-}
  local wall cpu rss wall_nf cpu_floor vs_llama="-"
  wall=$(median "$label" 1); cpu=$(median "$label" 2); rss=$(median "$label" 3)
  wall_nf=$(median "$label-nofsync" 1)
  cpu_floor=$(awk -v a="$floor_read_cpu" -v b="$floor_nosync_cpu" 'BEGIN {print a + b}')
  if [ -n "$llama" ]; then
    vs_llama=$(ratio "$(median "$llama" 1)" "$wall")
    printf "  %-52s wall %6.2f s  cpu %6.2f s  peak RSS %6.0f MiB\n" "$llama" "$(median "$llama" 1)" \
      "$(median "$llama" 2)" "$(awk -v r="$(median "$llama" 3)" 'BEGIN {print r / 1024}')"
  fi
  printf "  %-52s wall %6.2f s  cpu %6.2f s  peak RSS %6.0f MiB | vs floor: wall %s (fsync), %s (no fsync: %.2f s), cpu %s | llama-quantize / wquant: %s\n" \
    "$label" "$wall" "$cpu" "$(awk -v r="$rss" 'BEGIN {print r / 1024}')" \
    "$(ratio "$wall" "$(awk -v a="$floor_read" -v b="$floor_sync" 'BEGIN {print a + b}')")" \
    "$(ratio "$wall_nf" "$(awk -v a="$floor_read" -v b="$floor_nosync" 'BEGIN {print a + b}')")" "$wall_nf" \
    "$(ratio "$cpu" "$cpu_floor")" "$vs_llama"
}

# job LABEL INPUT OUTPUT ["[LLAMA_OPTIONS...] TYPE" | -] -- WQUANT_FLAGS...: floor, then the runs.
job() {
  local label=$1 in=$2 out=$3 llama_args=$4; shift 5
  local llama_type=${llama_args##* } llama_opts=""
  [ "$llama_type" = "$llama_args" ] || llama_opts=${llama_args% *}
  if [ -n "${WQ_E2E_JOBS:-}" ] && ! printf ' %s ' "$WQ_E2E_JOBS" | grep -q " $label "; then return 0; fi
  local out_bytes threads
  # (--force: the dry run checks OUT as the run does, and an earlier run's OUT may be there)
  if ! "$wq" quantize "$in" "$out" "$@" --dry-run --force --json > "$dir/.plan" 2> "$dir/.err"; then
    echo "$label: wquant --dry-run failed:" >&2
    tail -5 "$dir/.err" >&2
    exit 1
  fi
  out_bytes=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["planned_output_bytes"])' "$dir/.plan")
  threads=$(printf '%s\n' "$@" | awk 'p {print; exit} $0 == "--threads" {p = 1}')
  echo "$label: $(input_bytes "$in" | awk '{printf "%.2f GB", $1 / 1e9}') in, $(awk -v b="$out_bytes" 'BEGIN{printf "%.2f GB", b/1e9}') out"
  floor "$label" "$in" "$out_bytes"
  rm -f "$dir/$label.runs" "$dir/$label-nofsync.runs" "$dir/llama-quantize $label.runs"
  local llama_label=""
  local files
  files=$(input_files "$in" | tr "\n" " ")
  # Every run writes a new file, as the floor's dd does: replacing an existing output
  # makes ext4 flush the new file at rename (auto_da_alloc), an fsync in all but name,
  # which would make the no-fsync figure meaningless. And every run starts from a warm
  # page cache: these VMs reclaim page-cache pages idle for a minute (DAMON).
  for _ in $(seq "$runs"); do
    rm -f "$out"
    # shellcheck disable=SC2086
    cat $files > /dev/null
    # (No --quiet: it skips the error figures, which the default run measures for its
    # summary; the summary goes to $dir/.out.)
    timed "$label" "$wq" quantize "$in" "$out" "$@"
    rm -f "$out"
    # shellcheck disable=SC2086
    cat $files > /dev/null
    timed "$label-nofsync" env WQUANT_NO_FSYNC=1 "$wq" quantize "$in" "$out" "$@"
    if [ -n "${LLAMA_QUANTIZE:-}" ] && [ "$llama_type" != - ]; then
      llama_label="llama-quantize $label"
      rm -f "$dir/llama.gguf"
      # shellcheck disable=SC2086
      cat $files > /dev/null
      # llama-quantize's own mix (Q6_K output tensor, as wquant's --type Q4_0 writes it),
      # or with the job's options.
      # shellcheck disable=SC2086
      timed "$llama_label" "$LLAMA_QUANTIZE" $llama_opts "$in" "$dir/llama.gguf" "$llama_type" "$threads"
      if ! cmp -s "$dir/llama.gguf" "$out"; then
        echo "$label: llama-quantize's file differs from wquant's" >&2
        exit 1
      fi
    fi
  done
  rm -f "$dir/llama.gguf"
  report "$label" "$llama_label"
}

echo "wquant e2e: $layers layers, $runs runs each (medians), $(nproc) cores, $(date -u +%FT%TZ)"
echo "  WQUANT_OUTPUT_IO=${WQUANT_OUTPUT_IO:-direct} WQUANT_READAHEAD=${WQUANT_READAHEAD:-pread}" \
     "llama-quantize: ${LLAMA_QUANTIZE:-not set}"
job "f32-gguf-Q4_0-2t" "$f32_gguf" "$dir/q4_0.gguf" Q4_0 -- --type Q4_0 --threads 2
# The job as the issue measured it: the output matrix Q8_0 instead of the mix's Q6_K,
# whose scale search costs more than all the Q4_0 tensors together.
job "f32-gguf-Q4_0-q8out-2t" "$f32_gguf" "$dir/q4_0.gguf" "--output-tensor-type q8_0 Q4_0" -- --type Q4_0 \
  --output-tensor-type q8_0 --threads 2
job "f32-gguf-Q4_0-1t" "$f32_gguf" "$dir/q4_0.gguf" Q4_0 -- --type Q4_0 --threads 1
# More threads than cores must not cost: the scaling check this 2-core machine can make.
job "f32-gguf-Q4_0-8t" "$f32_gguf" "$dir/q4_0.gguf" - -- --type Q4_0 --threads 8
job "bf16-st-wq-b4-g64-asym-2t" "$bf16_st" "$dir/out.wq" - -- --bits 4 --block 64 --asym --threads 2
job "bf16-st-wq-b4-g64-hqq-2t" "$bf16_st" "$dir/out.wq" - -- --bits 4 --block 64 --hqq --threads 2
job "bf16-gguf-Q4_0-2t" "$bf16_gguf" "$dir/q4_0.gguf" Q4_0 -- --type Q4_0 --threads 2
rm -f "$dir/q4_0.gguf" "$dir/out.wq" "$dir"/.time "$dir"/.out "$dir"/.err "$dir"/.plan
