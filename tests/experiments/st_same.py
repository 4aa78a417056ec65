"""st_same.py — do two dynd model files hold the same tensors, bit for bit?

    /usr/bin/python3 tests/experiments/st_same.py A.dyn B.dyn

Reads both safetensors files with the standard library alone; F32 tensors are compared as raw
bytes, I8 / I16 state codes (engine/io/model_file.h, "quant") are first turned into the floats
they stand for, (float)(code * delta), as dynd's loader does. Prints each file's dtypes and
"tensors bit-identical: True|False"; exits 1 when they differ.
"""
import json
import struct
import sys


def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    meta = header.pop('__metadata__', {})
    quant = json.loads(meta.get('quant', '{}'))
    out, dtypes = {}, {}
    for name, e in header.items():
        s, t = e['data_offsets']
        raw, dt = data[s:t], e['dtype']
        dtypes[dt] = dtypes.get(dt, 0) + 1
        if dt == 'F32':
            out[name] = raw
        elif dt in ('I8', 'I16'):
            size, code = (1, 'b') if dt == 'I8' else (2, 'h')
            delta = quant[name]['delta']
            codes = struct.unpack('<%d%s' % (len(raw) // size, code), raw)
            out[name] = b''.join(struct.pack('<f', k * delta) for k in codes)
        else:
            sys.exit('%s: tensor %s has dtype %s' % (path, name, dt))
    return out, dtypes


a, da = load(sys.argv[1])
b, db = load(sys.argv[2])
same = a.keys() == b.keys() and all(a[k] == b[k] for k in a)
print(sys.argv[1], da, sys.argv[2], db, 'tensors bit-identical:', same)
sys.exit(0 if same else 1)
