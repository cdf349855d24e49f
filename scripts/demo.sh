#!/usr/bin/env bash
# Install acetwist into .venv and run the demo: the bundled AceStream engine
# simulator on 127.0.0.1:6878 and the proxy in front of it on port 8080.
# Ctrl-C stops both. Ports: DEMO_ENGINE_PORT (6878), DEMO_PROXY_PORT (8080).
# DEMO_ENGINES=2 runs two simulated engines (6878, 6879) and gives the proxy
# both; DEMO_ORCHESTRATOR_PORT=8000 also runs the orchestrator look-alike there
# and points the proxy at it instead (both need the engine pool, issue 10).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ensure_venv
cd "$ROOT"
ENGINE_PORT="${DEMO_ENGINE_PORT:-6878}"
PROXY_PORT="${DEMO_PROXY_PORT:-8080}"
ENGINES="${DEMO_ENGINES:-1}"
ORCHESTRATOR_PORT="${DEMO_ORCHESTRATOR_PORT:-}"
TWISTD="$VENV/bin/twistd"

sim_args=(--listen "tcp:$ENGINE_PORT:interface=127.0.0.1" --engines "$ENGINES")
engine_urls=""
for ((i = 0; i < ENGINES; i++)); do
  engine_urls+="${engine_urls:+,}http://127.0.0.1:$((ENGINE_PORT + i))"
done
proxy_args=(--engine "$engine_urls")
if [ -n "$ORCHESTRATOR_PORT" ]; then
  sim_args+=(--orchestrator-listen "tcp:$ORCHESTRATOR_PORT:interface=127.0.0.1")
  proxy_args=(--orchestrator "http://127.0.0.1:$ORCHESTRATOR_PORT")
fi

# The simulator gets its own session so Ctrl-C reaches only the proxy, which
# then stops its engine sessions cleanly before the simulator is stopped.
setsid "$TWISTD" -n --pidfile= acestream-engine-sim "${sim_args[@]}" &
sim_pid=$!
cleanup() { kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

ids="$("$VENV/bin/python" -c 'from acetwist.sim.contents import DEFAULT_CONTENTS as c; print("\n".join(f"{x.name} {x.content_id}" for x in c))')"
first_id="$(echo "$ids" | head -n1 | awk '{print $2}')"
cat <<MSG

  acetwist demo
  engine simulator: ${engine_urls//,/ }   (channels below)${ORCHESTRATOR_PORT:+
  orchestrator:     http://127.0.0.1:$ORCHESTRATOR_PORT   (engine list: /api/v1/engines, events: /_sim/orchestrator/events)}
  proxy:            http://127.0.0.1:$PROXY_PORT

  Open this in VLC (Media > Open Network Stream), or: curl -s URL | ffprobe -
    http://127.0.0.1:$PROXY_PORT/ace/getstream?id=$first_id
  The same channel as HLS (Safari, hls.js, VLC, TVHeadend), one engine session for both:
    http://127.0.0.1:$PROXY_PORT/ace/manifest.m3u8?id=$first_id

  Other simulated channels:
$(echo "$ids" | sed 's/^/    /')
  Status: http://127.0.0.1:$PROXY_PORT/status
  Ctrl-C stops both.

MSG
"$TWISTD" -n --pidfile= acestream-proxy --listen "tcp:$PROXY_PORT" "${proxy_args[@]}"
