#!/usr/bin/env python3
"""Writes an importance matrix in llama-imatrix's legacy .dat format for a GGUF model,
without running the model: one entry per 2-D weight (ne0 values each, ncall 1), values
from a fixed-seed generator (positive, spanning two orders of magnitude as real
activation statistics do). For benchmarks on synthetic models, where running
llama-imatrix on a random-weight model would cost minutes and mean nothing: wquant and
llama-quantize read the same file, so the comparison is fair.

  synthetic_imatrix.py MODEL.gguf OUT.dat

Reads only the GGUF header (bench/gguf_tensors.py's reader; standard library only).
"""
import random
import struct
import sys

from gguf_tensors import read_header  # bench/gguf_tensors.py, beside this script


def tensor_shapes(path):
    with open(path, "rb") as f:
        return [(name, ne) for name, ne, _, _ in read_header(f, path)[0]]


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
