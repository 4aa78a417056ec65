#!/usr/bin/env python3
"""Markdown tables from forms_table outputs (CONVERT.md "Data-free forms ...").

usage: forms_summary.py OUT.txt [OUT.txt ...]   (prints to stdout; numbers are copied, not
recomputed, except each layer's RieM / SVD ratio)
"""
import re
import sys


def parse(path):
    model, runs, cur, last = None, [], None, None
    for line in open(path):
        if line.startswith("model ") and not line.startswith("model with"):
            model = line.strip()
        elif line.startswith("ratio "):
            cur = {"ratio": line.split()[1], "layers": [], "model": []}
            runs.append(cur)
        elif cur is not None and re.match(r"^\S+\s+\d+\s+\d+\s+\d+ \|", line):
            p = line.split("|")
            name, m, nk, fl = p[0].split()
            l1 = p[1].split()
            svd = p[2].split()
            i8 = p[3].split()
            i4 = p[4].split()
            last = {"name": name, "m": m, "nk": nk, "floats": fl, "l1": l1[1], "svd": svd[1],
                    "svd_bytes": svd[2], "int8": i8[0], "int8_bytes": i8[1], "int4": i4[0],
                    "int4_bytes": i4[1], "dyn_bytes": l1[2]}
            cur["layers"].append(last)
        elif last is not None and "riem q=" in line:
            m = re.search(r"svd rank (\d+) \| riem q=(\d+)\s+(\S+)\s+(\d+)\s+\((\d+) floats", line)
            last.update(rank=m.group(1), q=m.group(2), riem=m.group(3), riem_floats=m.group(5))
        elif last is not None and "equal bytes:" in line:
            m = re.search(r"int(\d+)\s+(\S+)\s+(\d+)", line)
            last.update(bits=m.group(1), intb=m.group(2), intb_bytes=m.group(3))
        elif line.startswith("mean rel_err"):
            cur["mean"] = line.strip()
        elif line.startswith("model with"):
            m = re.search(r"as (\S+)\s+\(ratio \S+\): test accuracy (\S+)%, top-1 agreement "
                          r"with dense (\S+)%", line)
            cur["model"].append((m.group(1), m.group(2), m.group(3)))
    return model, runs


def main():
    for path in sys.argv[1:]:
        model, runs = parse(path)
        print(f"`{model}`\n")
        for r in runs:
            print(f"**{r['ratio']}× fewer floats** (relative weight error; bytes: DyN and SVD "
                  f"4 per float, intB = the most bits that fit in the DyN layer's bytes)\n")
            print("| layer m×nk | floats | l1 DyN | SVD (rank) | RieM (q) | RieM / SVD | int8 "
                  "(bytes) | int4 (bytes) | intB at DyN bytes |")
            print("|---|---|---|---|---|---|---|---|---|")
            for L in r["layers"]:
                print(f"| {L['name']} {L['m']}×{L['nk']} | {L['floats']} | {L['l1']} | "
                      f"{L['svd']} ({L['rank']}) | {L['riem']} ({L['q']}; {L['riem_floats']} fl.) | "
                      f"{float(L['riem']) / float(L['svd']):.3f} | {L['int8']} ({L['int8_bytes']}) | "
                      f"{L['int4']} ({L['int4_bytes']}) | int{L['bits']} {L['intb']} "
                      f"({L['intb_bytes']} ≤ {L['dyn_bytes']}) |")
            n = len(r["layers"])
            mean = dict(re.findall(r"(?<!/)(l1|svd|riem|int8|int4|intB) (\d\.\d+)", r["mean"]))
            ratios = dict(re.findall(r"(l1|riem)/svd (\d\.\d+)", r["mean"]))
            print(f"| mean (printed) | | {mean['l1']} | {mean['svd']} | {mean['riem']} | "
                  f"**{ratios['riem']}** (l1: {ratios['l1']}) | {mean['int8']} | {mean['int4']} | "
                  f"{mean['intB']} |\n")
            print("| all " + str(n) + " layers replaced by | " +
                  " | ".join(f[0] for f in r["model"]) + " |")
            print("|---" * (len(r["model"]) + 1) + "|")
            print("| test accuracy % | " + " | ".join(f[1] for f in r["model"]) + " |")
            print("| top-1 agreement with dense % | " + " | ".join(f[2] for f in r["model"]) +
                  " |\n")


if __name__ == "__main__":
    main()
