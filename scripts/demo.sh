#!/usr/bin/env bash
# Install acetwist into .venv and run the demo: the bundled AceStream engine
# simulator on 127.0.0.1:6878 and the proxy in front of it on port 8080.
# Ctrl-C stops both. Ports: DEMO_ENGINE_PORT (6878), DEMO_PROXY_PORT (8080).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ensure_venv
cd "$ROOT"
ENGINE_PORT="${DEMO_ENGINE_PORT:-6878}"
PROXY_PORT="${DEMO_PROXY_PORT:-8080}"
TWISTD="$VENV/bin/twistd"

# The simulator gets its own session so Ctrl-C reaches only the proxy, which
# then stops its engine sessions cleanly before the simulator is stopped.
setsid "$TWISTD" -n --pidfile= acestream-engine-sim --listen "tcp:$ENGINE_PORT:interface=127.0.0.1" &
sim_pid=$!
cleanup() { kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

ids="$("$VENV/bin/python" -c 'from acetwist.sim.contents import DEFAULT_CONTENTS as c; print("\n".join(f"{x.name} {x.content_id}" for x in c))')"
first_id="$(echo "$ids" | head -n1 | awk '{print $2}')"
cat <<MSG

  acetwist demo
  engine simulator: http://127.0.0.1:$ENGINE_PORT   (channels below)
  proxy:            http://127.0.0.1:$PROXY_PORT

  Open this in VLC (Media > Open Network Stream), or: curl -s URL | ffprobe -
    http://127.0.0.1:$PROXY_PORT/ace/getstream?id=$first_id

  Other simulated channels:
$(echo "$ids" | sed 's/^/    /')
  Status: http://127.0.0.1:$PROXY_PORT/status
  Ctrl-C stops both.

MSG
"$TWISTD" -n --pidfile= acestream-proxy --listen "tcp:$PROXY_PORT" --engine "http://127.0.0.1:$ENGINE_PORT"
