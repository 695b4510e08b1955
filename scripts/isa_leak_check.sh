#!/usr/bin/env bash
# Proves that code for an older CPU never executes a newer instruction: runs a wquant
# binary (a MinSizeRel build linked with lld, where an ODR leak of AVX2 code into the
# scalar path showed before the per-ISA namespaces) under qemu-x86_64 on a CPU without
# AVX (Nehalem: the scalar table) and one without AVX-512 (Haswell: the AVX2 table), and
# compares every output byte with the reference binary's run on this machine.
#   scripts/isa_leak_check.sh CHECKED_WQUANT REFERENCE_WQUANT WORKDIR
# Prints one "isa-leak: <case>: ok|FAIL" line per case (or one SKIPPED line without
# ../shared) and exits non-zero on a failure.
set -uo pipefail
checked=$1; reference=$2; work=$3
mkdir -p "$work"
root=$(cd "$(dirname "$0")/.." && pwd)
model=$root/../shared/data/models/stories260K/stories260K.safetensors
gguf=$root/../shared/data/models/stories260K/stories260K-f32.gguf
if [ ! -f "$model" ]; then
  # A generated model is 100+ MB, too slow under emulation: this check needs stories260K.
  echo "isa-leak: SKIPPED: ../shared/data/models/stories260K is absent"
  exit 0
fi
status=0
run_case() {  # name cpu args...
  local name=$1 cpu=$2; shift 2
  local a=$work/$name.checked b=$work/$name.reference ext=${name##*.}
  rm -f "$a.$ext" "$b.$ext"
  # qemu warns about CPUID bits TCG lacks (pcid, x2apic...): kept out of the way, shown on failure.
  if ! qemu-x86_64 -cpu "$cpu" "$checked" quantize "$@" "$a.$ext" --force -q 2>"$a.log"; then
    echo "isa-leak: $name on $cpu: FAIL (exit $?)"; grep -v "TCG doesn't support" "$a.log"; status=1; return
  fi
  "$reference" quantize "$@" "$b.$ext" --force -q || { echo "isa-leak: $name: reference failed"; status=1; return; }
  if cmp -s "$a.$ext" "$b.$ext"; then echo "isa-leak: $name on $cpu: ok"; else
    echo "isa-leak: $name on $cpu: FAIL (bytes differ)"; status=1; fi
}
for cpu in Nehalem Haswell; do
  run_case "hqq-$cpu.wq" "$cpu" "$model" --bits 4 --block 32 --hqq
  run_case "asym-$cpu.safetensors" "$cpu" "$model" --bits 3 --block 64 --asym --fp16
  run_case "sym-$cpu.wq" "$cpu" "$model" --bits 8
  if [ -n "$gguf" ]; then
    run_case "q4_0-$cpu.gguf" "$cpu" "$gguf" --type Q4_0
    run_case "q5_1-$cpu.gguf" "$cpu" "$gguf" --type Q5_1 --hqq
  fi
done
exit $status
