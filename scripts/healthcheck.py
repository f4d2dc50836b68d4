"""Exit 0 when the app answers on Streamlit's health endpoint (the Docker image's HEALTHCHECK).

Reads PORT (default 8501) and BASE_URL (default none) like scripts/serve.sh.
"""
import os
import sys
import urllib.request

base = os.environ.get("BASE_URL", "").strip("/")
url = f"http://127.0.0.1:{os.environ.get('PORT', '8501')}/{base + '/' if base else ''}_stcore/health"
try:
    with urllib.request.urlopen(url, timeout=5) as response:
        sys.exit(0 if response.status == 200 and response.read().strip() == b"ok" else 1)
except OSError:
    sys.exit(1)
