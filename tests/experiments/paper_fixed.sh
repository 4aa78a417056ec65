#!/usr/bin/env bash
# The paper's "fixed" column (a trained dense LeNet-5 converted into DyN by fitting the states,
# no training afterwards; Eq. 6) measured here with the paper's copies per layer.
#
#   tests/experiments/paper_fixed.sh build/dyn DENSE_LENET.dyn [STEPS]
#
# For each of the paper's five LeNet-5 rows (copies FC / CONV: 2/3, 2/5, 3/6, 5/8, 7/7) every
# layer is converted with that many copies (`--copies FC,CONV`, q = 1, nothing kept dense),
# data-free (`--fit fixed`, the paper's Eq. 6), and, beside it, activation-aware on 1,024 MNIST
# training images (this project's addition); the test set is evaluated once per model. Prints
# one table row per configuration beside the paper's accuracy and floats on disk.
set -euo pipefail
DYN=${1:?usage: paper_fixed.sh build/dyn DENSE.dyn [STEPS]}
DENSE=${2:?dense LeNet-5 model file}
STEPS=${3:-2000}
OUT=${OUT:-models/paper_fixed}
mkdir -p "$OUT"
C="--min-saving 0 --no-keep-last --min-agreement 0 --threads 1 --steps $STEPS --eval mnist --json"
acc() { tail -1 "$1" | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print("%d %.2f %.2f" % (j["floats_after"], 100*j["acc_after"], 100*j["acc_before"]))'; }
echo "| copies FC/conv | paper: floats on disk | paper: fixed acc. % | here: stored floats | here: fixed (data-free) acc. % | here: activation-aware acc. % | here: dense % |"
echo "|---|---|---|---|---|---|---|"
for row in "2,3 2.03K 81.44" "2,5 2.25K 84.95" "3,6 2.98K 96.28" "5,8 4.44K 98.10" "7,7 5.56K 98.83"; do
    set -- $row
    "$DYN" convert "$DENSE" "$OUT/fixed_$1.dyn" $C --copies "$1" --fit fixed > "$OUT/fixed_$1.log" 2>&1
    "$DYN" convert "$DENSE" "$OUT/act_$1.dyn" $C --copies "$1" --fit activation --calib mnist \
        --calib-n 1024 > "$OUT/act_$1.log" 2>&1
    read -r fl af dense <<< "$(acc "$OUT/fixed_$1.log")"
    read -r _ aa _ <<< "$(acc "$OUT/act_$1.log")"
    echo "| ${1/,//} | $2 | $3 | $fl | $af | $aa | $dense |"
done
