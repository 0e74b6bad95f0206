#!/usr/bin/env bash
# Starts or stops one Levensloop service in the background, with its pid and log in .data/.
#   infra/service.sh start NAME READY-LINE COMMAND...   (waits until the log shows READY-LINE)
#   infra/service.sh stop NAME
set -euo pipefail
action=$1 name=$2
mkdir -p .data
pid_file=".data/$name.pid" log=".data/$name.log"
case "$action" in
start)
    ready=$3
    shift 3
    if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        echo "$name already running (pid $(cat "$pid_file"))"
        exit 0
    fi
    : > "$log"
    # Detached, with no hold on our output, so `just up | tail` and CI pipes can close.
    nohup "$@" >>"$log" 2>&1 &
    echo $! > "$pid_file"
    for _ in $(seq 300); do
        grep -q "$ready" "$log" 2>/dev/null && break
        kill -0 "$(cat "$pid_file")" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "$ready" "$log"; then
        echo "$name did not start; its log (.data/$name.log):" >&2
        cat "$log" >&2
        exit 1
    fi
    echo "$name started (pid $(cat "$pid_file")); log in $log"
    ;;
stop)
    if [ -f "$pid_file" ]; then
        kill "$(cat "$pid_file")" 2>/dev/null || true
        rm -f "$pid_file"
        echo "$name stopped"
    fi
    ;;
*)
    echo "usage: $0 start NAME READY-LINE COMMAND... | stop NAME" >&2
    exit 2
    ;;
esac
