#!/usr/bin/python3
"""Summarizes the structure-scale conversion reports of convert.sh section c (CONVERT.md, (c)).

usage: convert_summary.py OUT_DIR — reads OUT_DIR/c_<model>.json (dyn convert --report) and
prints per model: layers converted/kept, stored floats before -> after, MACs per image before ->
if every DyN layer ran natively (and in the auto execution mode), the mean relative weight error
of the DyN fit and of the truncated SVD at equal floats, and the conversion seconds.
"""
import json
import os
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "models/convert"
for m in ["resnet18", "resnet50", "resnet50_r9", "densenet121", "vit_s"]:
    p = os.path.join(out, f"c_{m}.json")
    if not os.path.exists(p):
        continue
    j = json.load(open(p))
    conv = [l for l in j["layers"] if l["converted"]]
    kept = [l for l in j["layers"] if not l["converted"]]
    print(f"{m}: {len(conv)} layers converted, {len(kept)} kept dense; stored floats "
          f"{j['floats_before']} -> {j['floats_after']} ({j['floats_before'] / j['floats_after']:.2f}x); "
          f"MACs/image {j['macs_before']} -> native {j['macs_native']} "
          f"({j['macs_before'] / j['macs_native']:.2f}x), auto exec {j['macs_after']}; "
          f"mean rel. error DyN {statistics.mean(l['rel_err'] for l in conv):.3f} vs SVD "
          f"{statistics.mean(l['svd_rel_err'] for l in conv):.3f}; {j['seconds']:.1f} s")
