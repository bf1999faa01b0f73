#!/bin/sh
# Tests deploy/huds.service and deploy/huds.env with a real `huds` binary ($HUDS_BIN, else the one on the PATH).
#
# 1. `systemd-analyze verify` checks the unit, where systemd's tools are installed.
# 2. The unit's own lines run as systemd runs them: the environment file read, ExecStartPre, ExecStart
#    (with `${VAR}` as one word and `$VAR` split on spaces), then ExecReload after config.toml changes (the
#    node must apply the new storage limit), then the KillSignal (it must exit 0 within TimeoutStopSec).
#    The home and the addresses are a temporary directory and loopback, so nothing outside is touched.
#
# The one step left to a machine where systemd is PID 1 is the install itself, as the unit's header says;
# after it, `systemctl start huds && systemctl reload huds && systemctl status huds` checks the same things.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
unit="$here/huds.service"
env_file="$here/huds.env"
bin=${HUDS_BIN:-$(command -v huds || true)}
[ -x "$bin" ] || { echo "test-service: no huds binary: set HUDS_BIN or put huds on the PATH" >&2; exit 1; }

work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The unit's value for KEY (the first line `KEY=...`).
unit_value() { sed -n "s/^$1=//p" "$unit" | head -n 1; }
# A command line of the unit with the installed binary replaced by the one under test, named through a
# variable (quoted when the line is evaluated), so that any characters in its path are safe.
HUDS_BIN_UNDER_TEST=$bin
export HUDS_BIN_UNDER_TEST
unit_command() { unit_value "$1" | sed 's|/usr/local/bin/huds|"$HUDS_BIN_UNDER_TEST"|g'; }

if command -v systemd-analyze >/dev/null 2>&1; then
    ln -s "$bin" "$work/huds"
    sed "s|/usr/local/bin/huds|$work/huds|g" "$unit" > "$work/huds.service"
    systemd-analyze verify "$work/huds.service"
    echo "test-service: systemd-analyze verify: ok"
fi
if [ -d /run/systemd/system ]; then
    echo "test-service: systemd runs here; after the install steps in $unit, 'systemctl start huds' runs it for real"
fi

# The environment file as systemd reads it, with the home and addresses moved somewhere harmless.
sed -e "s|^HUDS_HOME=.*|HUDS_HOME=$work/home|" \
    -e "s|^HUDS_LISTEN=.*|HUDS_LISTEN=/ip4/127.0.0.1/tcp/0|" \
    -e "s|^HUDS_API_LISTEN=.*|HUDS_API_LISTEN=127.0.0.1:0|" \
    "$env_file" > "$work/huds.env"
# Read as systemd reads an EnvironmentFile: KEY=VALUE lines, comments and blank lines skipped, nothing run.
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
        '' | '#'*) continue ;;
    esac
    export "${line%%=*}=${line#*=}"
done < "$work/huds.env"
unset HUDS_LOG_LEVEL RUST_LOG HUDS_API HUDS_API_TOKEN

# systemd's expansion: ${VAR} is one word, $VAR is split on whitespace.
expand() { printf '%s\n' "$1" | sed -e 's/\${\([A-Za-z_][A-Za-z0-9_]*\)}/"$\1"/g'; }

pre=$(unit_command ExecStartPre)
start=$(unit_command ExecStart)
reload=$(unit_value ExecReload)
stop_timeout=$(unit_value TimeoutStopSec)
[ "$(unit_value KillSignal)" = SIGTERM ] || { echo "test-service: KillSignal is not SIGTERM" >&2; exit 1; }

eval "$(expand "$pre")"
[ -f "$HUDS_HOME/config.toml" ] || { echo "test-service: ExecStartPre made no home" >&2; exit 1; }
# Run twice, as a restart does: the second must keep the home, not fail on it.
eval "$(expand "$pre")"

# The output files exist before the background job opens them, so the wait below can read them at once.
: > "$work/stdout"
: > "$work/stderr"
# exec: the background job is the node itself, so MAINPID is its pid, as under systemd.
eval "exec $(expand "$start")" >> "$work/stdout" 2>> "$work/stderr" &
pid=$!
api=
for _ in $(seq 1 100); do
    api=$(sed -n 's/^api //p' "$work/stdout")
    [ -n "$api" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/stderr" >&2; echo "test-service: ExecStart exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$api" ] || { echo "test-service: the node printed no api line" >&2; exit 1; }
echo "test-service: ExecStart: node up, api $api"

status() { "$bin" --api "$api" --json node status; }
status | grep -q '"storage_bytes_max":null' || { status >&2; echo "test-service: a limit before any was set" >&2; exit 1; }

printf '\n[node]\nstorage_max = "2M"\n\n[log]\nlevel = "info"\n' >> "$HUDS_HOME/config.toml"
MAINPID=$pid
eval "$(printf '%s\n' "$reload" | sed 's/\$MAINPID/"$MAINPID"/g')"
ok=
for _ in $(seq 1 100); do
    if status | grep -q '"storage_bytes_max":2097152'; then ok=1; break; fi
    sleep 0.1
done
[ -n "$ok" ] || { cat "$work/stderr" >&2; echo "test-service: ExecReload did not apply the new storage limit" >&2; exit 1; }
echo "test-service: ExecReload: storage limit now 2 MiB, no restart"

kill -TERM "$pid"
waited=0
while kill -0 "$pid" 2>/dev/null; do
    [ "$waited" -lt "$((${stop_timeout%s} * 10))" ] || { echo "test-service: still running ${stop_timeout} after SIGTERM" >&2; exit 1; }
    sleep 0.1
    waited=$((waited + 1))
done
code=0
wait "$pid" || code=$?
pid=
[ "$code" = 0 ] || { cat "$work/stderr" >&2; echo "test-service: exit status $code after SIGTERM" >&2; exit 1; }
# Every line the node logged is one JSON object, as HUDS_LOG_FORMAT=json asks; the reload (at info, the
# level the reload set) logged at least one.
python3 - "$work/stderr" <<'PY' || { cat "$work/stderr" >&2; echo "test-service: the log is not JSON lines with the reload in it" >&2; exit 1; }
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert any(l.get("fields", {}).get("message") == "reloaded config.toml on SIGHUP" for l in lines), lines
PY
echo "test-service: SIGTERM: clean exit; all ok"
