#!/usr/bin/env bash
# Slow and greedy clients (issue: slowloris held every connection for ever). The connection
# guard (server/guard.h) must close a connection whose headers trickle past
# request_header_timeout_s and one whose body runs below min_body_rate, cap the connections
# one client address holds, log each drop and count it in dynd_connections_dropped_total; a
# client from another address is served meanwhile.
source "$(dirname "$0")/lib.sh"
echo "slow clients: header deadline, minimum body rate, per-IP cap"
mkdir -p "$T/models" "$T/state"
cp "$(model_path)" "$T/models/mnist.dyn"
dropped() { curl -s "$URL/metrics" | sed -n "s/^dynd_connections_dropped_total{reason=\"$1\"} //p"; }

start_dynd --log-level info --request-header-timeout-s 2 --min-body-rate 1000 \
    --max-connections 50 --max-connections-per-ip 40 --connection-timeout-s 30
check "dynd shows the guard's settings" bash -c "'$DYND' --request-header-timeout-s 2 --min-body-rate 1000 --max-connections-per-ip 40 --print-config | grep -q '^max_connections_per_ip = 40'"

# headers a byte every 0.2 s: never idle for connection_timeout_s (30 s), closed at ~2 s
out=$($PY "$HERE/slow_clients.py" headers 127.0.0.1 "$PORT" 2) && ok || fail "trickled headers: $out"
log "$out"
check "header_timeout counted" [ "$(dropped header_timeout)" -ge 1 ]
check "header_timeout logged" grep -q '"msg":"connection dropped".*"reason":"header_timeout"' "$T/dynd.err"

# a body at 100 bytes/s against min_body_rate 1000: closed once it has run 2 s
out=$($PY "$HERE/slow_clients.py" body 127.0.0.1 "$PORT" 2) && ok || fail "trickled body: $out"
log "$out"
check "slow_body counted" [ "$(dropped slow_body)" -ge 1 ]

# 60 trickling connections from 127.0.0.1 against max_connections 50: the cap of 40 per
# address leaves room, and a client from 127.0.0.2 is answered while they trickle
out=$($PY "$HERE/slow_clients.py" flood 127.0.0.1 "$PORT" 60 127.0.0.2) && ok || fail "flood: $out"
log "$out"
check "per_ip_limit counted (20 over the cap of 40)" [ "$(dropped per_ip_limit)" -ge 20 ]
check "per_ip_limit logged with the client address" grep -q '"reason":"per_ip_limit","client":"127.0.0.1"' "$T/dynd.err"
req GET /v2/health/live; expect_status 200 "still serves after the slow clients"
stop_dynd
finish
