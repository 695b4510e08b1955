#!/usr/bin/env python3
"""Compares the tensor data of GGUF files, or prints per-tensor digests.

  gguf_tensors.py compare A.gguf B.gguf   # per tensor: type, identical or not; exit 1 if any differ
  gguf_tensors.py digest  A.gguf          # JSON {name: {"type": T, "fnv1a64": hex}} on stdout

Standard library only. The digest is 64-bit FNV-1a of the tensor's data bytes (no padding),
the same function tests/io_gguf_test.cpp computes.
"""
import json
import struct
import sys

TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
         7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
         12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 20: ("IQ4_NL", 32, 18),
         23: ("IQ4_XS", 256, 136), 30: ("BF16", 1, 2)}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def read_header(f, path):
    """The tensor infos [(name, ne, type, offset)] of the GGUF open as f, and where its
    data section starts. Reads only the header."""
    def take(n):
        b = f.read(n)
        if len(b) != n:
            raise ValueError(f"{path}: truncated at byte {f.tell()}")
        return b

    def u32():
        return struct.unpack("<I", take(4))[0]

    def u64():
        return struct.unpack("<Q", take(8))[0]

    def string():
        return take(u64()).decode("utf-8", "replace")

    def skip(t):
        if t == 8:
            string()
        elif t == 9:
            et, n = u32(), u64()
            for _ in range(n):
                skip(et)
        else:
            take(SCALAR[t])

    if take(4) != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    u32()
    n_tensors, n_kv = u64(), u64()
    alignment = 32
    for _ in range(n_kv):
        key, t = string(), u32()
        if key == "general.alignment" and t == 4:
            alignment = u32()
        else:
            skip(t)
    infos = []
    for _ in range(n_tensors):
        name = string()
        ne = [u64() for _ in range(u32())]
        t, off = u32(), u64()
        infos.append((name, ne, t, off))
    return infos, (f.tell() + alignment - 1) // alignment * alignment


def read_gguf(path):
    """{name: (type name, data bytes)} of every tensor."""
    out = {}
    with open(path, "rb") as f:
        infos, start = read_header(f, path)
        for name, ne, t, off in infos:
            tname, bw, bb = TYPES[t]
            n = 1
            for d in ne:
                n *= d
            f.seek(start + off)
            out[name] = (tname, f.read(n // bw * bb))
    return out


def fnv1a64(b):
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main(argv):
    if len(argv) == 4 and argv[1] == "compare":
        a, b = read_gguf(argv[2]), read_gguf(argv[3])
        same = differ = 0
        for name in a:
            if name not in b:
                print(f"{name}: only in {argv[2]}")
                differ += 1
                continue
            ta, da = a[name]
            tb, db = b[name]
            ok = ta == tb and da == db
            same += ok
            differ += not ok
            print(f"{name}: {ta} vs {tb}: {'identical' if ok else 'DIFFERENT'}")
        for name in b:
            if name not in a:
                print(f"{name}: only in {argv[3]}")
                differ += 1
        print(f"{same} identical, {differ} different")
        return 1 if differ else 0
    if len(argv) == 3 and argv[1] == "digest":
        t = read_gguf(argv[2])
        print(json.dumps({n: {"type": ty, "fnv1a64": fnv1a64(d)} for n, (ty, d) in t.items()}, indent=1))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
