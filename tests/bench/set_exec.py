#!/usr/bin/env python3
"""set_exec.py — a copy of a dynd model file with every DyN layer's "exec" attribute set.

    python3 tests/bench/set_exec.py IN.dyn OUT.dyn auto|native|materialized

`dyn convert --exec MODE` writes MODE into each DyN layer's attributes and nowhere else (the
fit does not read it; engine/convert/convert.c), so one data-free conversion serves every mode:
tests/bench/bench_ort.sh converts ResNet-50 once (minutes) and derives the native copy here.
The file is safetensors (engine/io/model_file.h): an 8-byte little-endian header length, the
JSON header (its "__metadata__" "graph" a JSON text of the nodes), then the tensor bytes, whose
offsets are relative to the end of the header, so only the header is rewritten. OUT is written
beside itself and renamed (atomic). Stdlib only. Exit status 1 when IN has no DyN layer.
"""
import json
import os
import struct
import sys

MODES = ("auto", "native", "materialized")


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in MODES:
        raise SystemExit(__doc__)
    src, dst, mode = sys.argv[1:]
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        body = f.read()
    meta = header["__metadata__"]
    graph = json.loads(meta["graph"])
    changed = 0
    for node in graph:
        attrs = node.get("attrs") or {}
        if "exec" in attrs:
            attrs["exec"] = mode
            changed += 1
    if not changed:
        sys.exit(f"set_exec: {src} has no DyN layer")
    meta["graph"] = json.dumps(graph, separators=(",", ":"))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the tensor bytes 8-byte aligned, as writers do
    tmp = dst + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    print(f"{dst}: {changed} DyN layers exec={mode}")


if __name__ == "__main__":
    main()
