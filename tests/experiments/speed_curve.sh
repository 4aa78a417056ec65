#!/usr/bin/env bash
# Error vs time of one big layer's fit, before (--algo 1) / fused full batch / default, into
# tests/experiments/runs/convert_speed_curve.txt (CONVERT.md "Conversion speed").
#   tests/experiments/speed_curve.sh FIT_SPEED   (tests/experiments/fit_speed.c built)
set -euo pipefail
FS=$1
C=tests/experiments/runs/convert_speed_curve.txt
: > $C
L=/layer3/layer3.1/conv2/Conv
echo "# load $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%T)"
for cfg in "--algo 1 --sample 1 --label before" "--algo 0 --sample 1 --label fused" "--algo 0 --label default"; do
  # shellcheck disable=SC2086
  OMP_WAIT_POLICY=passive /usr/bin/time -f "  cpu %U s user, wall %e s" "$FS" models/resnet18.onnx $L --powerlaw 0.5 --threads 2 --trace $C $cfg 2>&1
  echo "# load $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%T)"
done
