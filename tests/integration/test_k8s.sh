#!/usr/bin/env bash
# config/deploy/k8s validated offline: every Kubernetes object against the Kubernetes schemas
# (npm kubernetes-models), the KServe resources for the fields KServe requires, and the
# manifests against dynd itself (probe paths and port, drain within the grace period, DYND_*
# names known to this build's `dynd --print-config`, writable volumes): k8s_validate.js; then
# this build's `dynd --check-config` accepts each container's DYND_* environment.
# The npm packages (pinned with their dependencies in tests/integration/k8s/package-lock.json)
# are installed by `npm ci` into $BUILD/k8s-node once, and again only when the lock changes.
source "$(dirname "$0")/lib.sh"
echo "k8s: manifests in config/deploy/k8s"
for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 ||
        { echo "  FAIL: $tool not found: this test needs Node.js and npm (make deps installs Debian's npm)"; exit 1; }
done
npm_pinned k8s kubernetes-models
"$DYND" --print-config > "$T/settings.conf"
mkdir -p "$T/env" "$T/models"
if NODE_PATH=$NM/node_modules node "$HERE/k8s_validate.js" "$ROOT/config/deploy/k8s" "$T/settings.conf" "$T/env"; then
    ok
else
    fail "config/deploy/k8s (above)"
fi
# Each container's settings as dynd reads them (no Kubernetes here: the directories are the
# test's, DYND_DEVICE=cuda of gpu/ is checked as cpu, this build having no GPU to insist on, and
# DYND_JOBS_BACKEND=postgres of cluster/ as fs, --check-config connecting to the database named).
n=0 accepted=0
for f in "$T"/env/*.env; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    mapfile -t vars < <(grep -v '^#' "$f" | sed 's/^DYND_DEVICE=cuda$/DYND_DEVICE=cpu/; s/^DYND_JOBS_BACKEND=postgres$/DYND_JOBS_BACKEND=fs/')
    if out=$(env -i PATH="$PATH" "${vars[@]}" "$DYND" --check-config --model-dir "$T/models" \
             --state-dir "$T/state" --data-dir "$T/data" 2>&1); then
        ok; accepted=$((accepted + 1))
    else
        fail "dynd --check-config refuses the settings of $(head -1 "$f" | cut -c3-): $out"
    fi
done
check "dynd --check-config ran on every dynd container (at least 4)" [ "$n" -ge 4 ]
log "$accepted of $n containers' settings accepted by dynd --check-config"
finish
