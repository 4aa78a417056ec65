#!/usr/bin/env bash
# pg_harness.sh — a throwaway PostgreSQL for tests: initdb into a temporary directory (trust
# auth, loopback only: a free TCP port on 127.0.0.1 and a unix socket inside that directory),
# pg_ctl start / restart / stop, one database. Debian's server binaries (package postgresql,
# /usr/lib/postgresql/<v>/bin; tests/deps.sh installs them), or PG_BIN=<dir with initdb>.
#
# initdb and postgres refuse to run as root: as root (CI) the server runs as the unprivileged
# user PG_USER (default nobody) through setpriv, in a directory that user owns; as anyone else it
# runs as the caller. Nothing listens beyond loopback, so trust authentication is safe enough
# for tests.
#
# Two ways to use it:
#   sourced (bash):  . tests/pg_harness.sh; pgh_start || exit; ...; pgh_restart; ...
#                    pgh_start exports PGH_DIR, PGH_PORT, PGH_CONNINFO (libpq key=value) and
#                    installs an EXIT trap that stops the server and removes PGH_DIR
#                    (call pgh_stop yourself if you need the trap for something else).
#   run:             tests/pg_harness.sh start [OWNER_PID]    prints PGH_DIR=, PGH_PORT=, PGH_CONNINFO= lines (the
#                                                 value runs to the end of the line, unquoted),
#                                                 leaves the server running (exit 0); with
#                                                 OWNER_PID, a watchdog stops it and removes DIR
#                                                 within a second of that process's end, so a
#                                                 test killed midway leaves no server behind
#                    tests/pg_harness.sh restart DIR   pg_ctl restart (fast) on the same port
#                    tests/pg_harness.sh stop DIR      stops it and removes DIR
# Exit / return status 77 when no PostgreSQL server binaries are installed (callers skip),
# 1 on any other failure (with a message on stderr naming the log file).

PGH_DB=${PGH_DB:-dynd_test}

pgh__bin() {
    if [ -n "${PG_BIN:-}" ]; then [ -x "$PG_BIN/initdb" ] && echo "$PG_BIN"; return; fi
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/initdb" ] && { echo "$d"; return; }
    done
    d=$(command -v initdb 2>/dev/null) && { dirname "$d"; return; }
    return 1
}

# Runs a command as the server's user (see above), in its directory.
pgh__as() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$PGH_DIR" && setpriv --reuid="${PG_USER:-nobody}" --regid="$(id -g "${PG_USER:-nobody}")" \
            --clear-groups --reset-env env PATH=/usr/bin:/bin LC_ALL=C "$@")
    else
        (cd "$PGH_DIR" && env LC_ALL=C "$@")
    fi
}

pgh__free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pgh__pg_ctl_start() {
    pgh__as "$PGH_BIN/pg_ctl" -D "$PGH_DIR/data" -l "$PGH_DIR/server.log" -w -t 30 \
        -o "-p $PGH_PORT -k $PGH_DIR/sock -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
}

pgh_start() {
    PGH_BIN=$(pgh__bin) || { echo "pg_harness: no PostgreSQL server binaries (Debian package postgresql; make deps)" >&2; return 77; }
    PGH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/dynd_pg_XXXXXX") || return 1
    mkdir -p "$PGH_DIR/sock"
    [ "$(id -u)" -ne 0 ] || chown -R "${PG_USER:-nobody}" "$PGH_DIR"
    if ! pgh__as "$PGH_BIN/initdb" -D "$PGH_DIR/data" -U postgres -A trust -E UTF8 --no-sync \
            > "$PGH_DIR/initdb.log" 2>&1; then
        echo "pg_harness: initdb failed; the end of its log:" >&2; tail -5 "$PGH_DIR/initdb.log" >&2
        return 1
    fi
    # A free port can be taken between the probe and the bind: try a few.
    local try
    for try in 1 2 3 4 5; do
        PGH_PORT=$(pgh__free_port) || return 1
        pgh__pg_ctl_start && break
        PGH_PORT=""
    done
    if [ -z "$PGH_PORT" ]; then
        echo "pg_harness: the server did not start; the end of its log:" >&2
        tail -5 "$PGH_DIR/server.log" >&2
        return 1
    fi
    if [ -z "${PGH_NO_TRAP:-}" ]; then trap pgh_stop EXIT; fi
    pgh__as "$PGH_BIN/createdb" -h "$PGH_DIR/sock" -p "$PGH_PORT" -U postgres "$PGH_DB" || return 1
    PGH_CONNINFO="host=127.0.0.1 port=$PGH_PORT user=postgres dbname=$PGH_DB connect_timeout=5"
    export PGH_DIR PGH_PORT PGH_CONNINFO PGH_BIN
}

# The port is read back from the directory, so restart / stop work from another process.
pgh__load() {
    PGH_DIR=$1
    [ -d "$PGH_DIR/data" ] || { echo "pg_harness: $PGH_DIR is not a harness directory" >&2; return 1; }
    PGH_BIN=$(pgh__bin) || return 77
    PGH_PORT=$(sed -n 4p "$PGH_DIR/data/postmaster.pid" 2>/dev/null)
}

pgh_restart() {
    [ -n "${1:-}" ] && { pgh__load "$1" || return; }
    pgh__as "$PGH_BIN/pg_ctl" -D "$PGH_DIR/data" -m fast -w -t 30 stop >/dev/null || return 1
    pgh__pg_ctl_start || { echo "pg_harness: restart failed (log: $PGH_DIR/server.log)" >&2; return 1; }
}

# Stops the server within a second of process $1's end (unless it was stopped before).
pgh__watchdog() {
    local owner=$1
    (
        while kill -0 "$owner" 2>/dev/null && [ -d "$PGH_DIR/data" ]; do sleep 1; done
        pgh_stop
    ) </dev/null >/dev/null 2>&1 &
    disown
}

pgh_stop() {
    [ -n "${1:-}" ] && { pgh__load "$1" || return; }
    [ -n "${PGH_DIR:-}" ] && [ -d "$PGH_DIR" ] || return 0
    if [ -f "$PGH_DIR/data/postmaster.pid" ]; then
        pgh__as "$PGH_BIN/pg_ctl" -D "$PGH_DIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PGH_DIR"
    PGH_DIR=""
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    case "${1:-}" in
    start)
        PGH_NO_TRAP=1 pgh_start || { rc=$?; pgh_stop; exit $rc; }
        if [ -n "${2:-}" ]; then pgh__watchdog "$2"; fi
        echo "PGH_DIR=$PGH_DIR"; echo "PGH_PORT=$PGH_PORT"; echo "PGH_CONNINFO=$PGH_CONNINFO" ;;
    restart) pgh_restart "${2:?usage: $0 restart DIR}" ;;
    stop) pgh_stop "${2:?usage: $0 stop DIR}" ;;
    *) echo "usage: $0 start [OWNER_PID] | restart DIR | stop DIR" >&2; exit 2 ;;
    esac
fi
