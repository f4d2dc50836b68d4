#!/bin/sh
# Start the app as a server: the Docker image's command, also usable on any machine with the
# requirements installed. Settings: PORT (default 8501), ADDRESS (default 0.0.0.0), BASE_URL (a
# path prefix behind a reverse proxy, e.g. /inpaint; default none), PYTHON (default python).
set -eu
cd "$(dirname "$0")/.."
# Two malloc arenas instead of one per thread (Streamlit runs each session in a thread of its own):
# memory freed when sessions end can then be handed back instead of staying scattered.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec "${PYTHON:-python}" -m streamlit run streamlit_app.py \
    --server.port "${PORT:-8501}" \
    --server.address "${ADDRESS:-0.0.0.0}" \
    --server.baseUrlPath "${BASE_URL:-}" \
    --server.headless true \
    --browser.gatherUsageStats false
