#!/usr/bin/env python3
"""Turns runs/results.jsonl (written by run.sh) into the RESULTS.md tables: one row per
configuration with test accuracy mean ± std over seeds, stored floats, MACs, and the
robustness columns; then every run with its command, wall time and seed."""
import json
import os
import statistics
import sys
from collections import OrderedDict

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = OrderedDict()
for r in runs:
    rows.setdefault(r["row"], []).append(r)


def ms(xs):
    xs = [100 * x for x in xs]
    if len(xs) < 2:
        return f"{xs[0]:.2f}" if xs else "-"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


print("# Experiment results\n")
print("Written by `tests/experiments/summarize.py` from `tests/experiments/runs/results.jsonl`,")
print("which `make experiments` (`tests/experiments/run.sh`) fills. Test accuracy is measured once,")
print("at the end, on the parameters of the best epoch on a 5000-image validation split held out")
print("of the training set. δ: uniform noise in [−1e-3, 1e-3] added to every trainable parameter")
print("(5 draws per model; mean over all draws of all seeds). Wall times are those of the `dyn")
print("train` command, taken on a shared 2-core machine with other work running at times. The last")
print("Fashion-MNIST MLP runs (f-mlp-dense seeds 2–3, f-mlp-dyn-8x4) ran two at a time with")
print("OMP_NUM_THREADS=1 each; the others with the default two threads.\n")
for data in ("mnist", "fashion"):
    sel = [(k, v) for k, v in rows.items() if v[0]["data"] == data]
    if not sel:
        continue
    print(f"## {'MNIST' if data == 'mnist' else 'Fashion-MNIST'}\n")
    print("| row | seeds | test acc. (%) | best val (%) | stored floats | memory floats | MACs/image | entropy (bits) | acc. with δ=1e-3 (%) | mean wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, v in sel:
        res = [x["result"] for x in v]
        noisy = [x["noise"]["noisy_acc"] for x in v if x.get("noise") and "noisy_acc" in x["noise"]]
        ent = res[0].get("entropy_bits", 0)
        print(f"| {k} | {len(v)} | {ms([x['test_acc'] for x in res])} | {ms([x['val_acc'] for x in res])} | "
              f"{res[0]['stored_floats']:,} | {res[0]['memory_floats']:,} | {res[0]['macs']:,} | "
              f"{ent:.2f} | {ms(noisy) if noisy else '-'} | {statistics.mean([x['wall_s'] for x in v]):.0f} |")
    print()
def mean_acc(row):
    return statistics.mean(100 * x["result"]["test_acc"] for x in rows[row])


print("## Issue targets (MNIST, mean test accuracy over the seeds run)\n")
dense_lenet = rows.get("lenet-dense")
dense_mlp = rows.get("mlp-dense")
for k, v in rows.items():
    if v[0]["data"] != "mnist" or "dyn" not in k:
        continue
    floats = v[0]["result"]["stored_floats"]
    if k.startswith("lenet") and dense_lenet:
        cap = dense_lenet[0]["result"]["stored_floats"] / 4
        ok = mean_acc(k) >= 99.1 and floats < cap
        print(f"- {k}: {mean_acc(k):.2f}% (target >= 99.1%), {floats:,} stored floats "
              f"(target < {cap:,.0f}, a quarter of dense LeNet-5): {'MET' if ok else 'MISSED'}")
    if k.startswith("mlp") and dense_mlp:
        cap = dense_mlp[0]["result"]["stored_floats"]
        ok = mean_acc(k) >= 98.3 and floats < cap
        print(f"- {k}: {mean_acc(k):.2f}% (target >= 98.3%), {floats:,} stored floats "
              f"(target < {cap:,}, the dense MLP): {'MET' if ok else 'MISSED'}")
print()
print("An earlier configuration, `mlp-dyn-8x4-lr1e-3` (Adam lr 1e-3, 20 epochs), underfit; the row")
print("`mlp-dyn-8x4` uses lr 3e-4 and 40 epochs (why: the comment above the rows in `run.sh`).")
print("Both are listed; the issue's target is judged on `mlp-dyn-8x4`.\n")
print("## Conversion of pretrained models (issue 3)\n")
print("Converting a trained LeNet-5 (torch → ONNX → `dyn convert` → `dyn finetune`), DyN vs a")
print("truncated SVD at equal stored floats per layer (MNIST and Fashion-MNIST), and the")
print("structure-scale conversions (ResNet-18/50, DenseNet-121, ViT-S) are recorded with their")
print("commands in [CONVERT.md](CONVERT.md) (rerun: `tests/experiments/convert.sh`).\n")
# Fuzzing, soak and fault suite (issue 11), engine speed (issue 12): recorded by hand in
# tests/{fuzz,soak,faults,bench}/RESULTS.md (make fuzz / soak / faults / bench-ort print the
# figures), carried into this file as they are.
for part in ("fuzz", "soak", "faults", "bench"):
    f = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", part, "RESULTS.md")
    if os.path.exists(f):
        print(open(f).read().rstrip("\n") + "\n")
print("## Every run\n")
print("| row | seed | wall (s) | test acc. (%) | command |")
print("|---|---|---|---|---|")
for r in runs:
    print(f"| {r['row']} | {r['seed']} | {r['wall_s']} | {100 * r['result']['test_acc']:.2f} | `{r['command']}` |")
