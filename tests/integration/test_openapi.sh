#!/usr/bin/env bash
# api/openapi.yaml stays true: every documented (path, method) answers something other than the
# router's 404 not_found / 405, and every route of the router is documented.
source "$(dirname "$0")/lib.sh"
echo "openapi: every documented route answers"
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
start_dynd --auth-tokens tok
routes=$($PY - "$ROOT/api/openapi.yaml" <<'PY'
import re, sys
path = None
for line in open(sys.argv[1]):
    m = re.match(r"^  (/\S*):\s*$", line)
    if m:
        path = m.group(1); continue
    m = re.match(r"^    (get|post|put|delete|patch):", line)
    if m and path:
        print(m.group(1).upper(), path)
    if re.match(r"^\S", line):
        path = None
PY
)
n=0
while read -r method path; do
    n=$((n + 1))
    p=${path//\{name\}/mnist}; p=${p//\{version\}/1}; p=${p//\{file\}/app.js}
    req "$method" "$p" -H 'Authorization: Bearer tok' -H 'Content-Type: application/json' -d '{}'
    code=$(json_get 'j.get("code","")' || true)
    if [ "$STATUS" = 405 ] || { [ "$STATUS" = 404 ] && [ "$code" = not_found ]; }; then
        fail "$method $path is documented but the router answers $STATUS $code"
    else ok; fi
done <<< "$routes"
log "$n documented routes answered"
check "at least 19 routes documented" [ "$n" -ge 19 ]
check "documented = routed (count)" [ "$n" = "$(grep -c '^    {"\(GET\|POST\|PUT\|PATCH\|DELETE\)"' "$ROOT/api/routes.c")" ]
stop_dynd
finish
