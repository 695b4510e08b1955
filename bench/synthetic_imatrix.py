#!/usr/bin/env python3
"""Writes an importance matrix in llama-imatrix's legacy .dat format for a GGUF model,
without running the model: one entry per 2-D weight (ne0 values each, ncall 1), values
from a fixed-seed generator (positive, spanning two orders of magnitude as real
activation statistics do). For benchmarks on synthetic models, where running
llama-imatrix on a random-weight model would cost minutes and mean nothing: wquant and
llama-quantize read the same file, so the comparison is fair.

  synthetic_imatrix.py MODEL.gguf OUT.dat

Reads only the GGUF header (standard library only).
"""
import random
import struct
import sys


def tensor_shapes(path):
    with open(path, "rb") as f:
        def take(n):
            b = f.read(n)
            if len(b) != n:
                raise SystemExit(f"{path}: truncated GGUF header")
            return b

        def u32():
            return struct.unpack("<I", take(4))[0]

        def u64():
            return struct.unpack("<Q", take(8))[0]

        def string():
            return take(u64()).decode("utf-8", "replace")

        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

        def skip_value(t):
            if t in sizes:
                take(sizes[t])
            elif t == 8:
                string()
            elif t == 9:
                et, n = u32(), u64()
                for _ in range(n):
                    skip_value(et)
            else:
                raise SystemExit(f"{path}: unknown GGUF value type {t}")

        if take(4) != b"GGUF":
            raise SystemExit(f"{path}: not a GGUF file")
        u32()
        n_tensors, n_kv = u64(), u64()
        for _ in range(n_kv):
            string()
            skip_value(u32())
        out = []
        for _ in range(n_tensors):
            name = string()
            dims = [u64() for _ in range(u32())]
            u32()
            u64()
            out.append((name, dims))
        return out


def main(argv):
    if len(argv) != 3:
        raise SystemExit(__doc__)
    rng = random.Random(20261202)
    entries = [(n, d) for n, d in tensor_shapes(argv[1]) if len(d) == 2 and n.endswith(".weight")]
    with open(argv[2], "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, dims in entries:
            b = name.encode()
            f.write(struct.pack("<i", len(b)) + b)
            f.write(struct.pack("<ii", 1, dims[0]))
            f.write(struct.pack(f"<{dims[0]}f", *(10 ** rng.uniform(-1, 1) for _ in range(dims[0]))))
        f.write(struct.pack("<i", 1))
        ds = b"synthetic (bench/synthetic_imatrix.py)"
        f.write(struct.pack("<i", len(ds)) + ds)


if __name__ == "__main__":
    main(sys.argv)
