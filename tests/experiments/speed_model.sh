#!/bin/bash
# Fixed and per-step conversion cost of a model (CONVERT.md "Conversion speed"):
#   tests/experiments/speed_model.sh resnet50    (models/resnet50.onnx from export_torchvision.py)
# fixed cost (steps 20) and per-step cost (steps 120 - steps 20), threads 2, passive waits so
# CPU time counts work, not spinning on this oversubscribed machine
cd "$(dirname "$0")/../.."
M=${1:-resnet50}
for st in 20 120; do
  echo "== $M --steps $st  load $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%T)"
  OMP_WAIT_POLICY=passive /usr/bin/time -f "wall %e s  user %U s  sys %S s" build/dyn convert models/$M.onnx /tmp/$M-$st.dyn --threads 2 --steps $st --report /tmp/$M-$st.json 2>&1 | tr '\r' '\n' | grep -E "^wall|Error|error" | tail -3
  echo "   load after $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%T)"
done
