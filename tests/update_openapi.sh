#!/usr/bin/env bash
# Rewrites the properties of api/openapi.yaml's ConversionOptions and FinetuneOptions from the
# option table (engine/convert/options.c), as `dyn options --openapi` prints them.
# tests/unit/test_options.c fails until this has been run after a change to the table.
#   tests/update_openapi.sh [build/dyn]
set -euo pipefail
DYN=${1:-build/dyn}
python3 - "$DYN" api/openapi.yaml <<'PY'
import subprocess, sys
dyn, path = sys.argv[1], sys.argv[2]
s = open(path).read()
for head, kind in (("    ConversionOptions:\n", "convert"), ("    FinetuneOptions:\n", "finetune")):
    gen = subprocess.run([dyn, "options", "--openapi", kind], check=True, capture_output=True,
                         text=True).stdout
    a = s.index(head)
    p = s.index("      properties:\n", a) + len("      properties:\n")
    e = p
    while s.startswith("        ", e):
        e = s.index("\n", e) + 1
    s = s[:p] + gen + s[e:]
open(path, "w").write(s)
PY
