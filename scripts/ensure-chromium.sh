#!/bin/sh
# Make sure a Chromium for the real-browser tests is present: install Debian's package when it is
# missing and we are root; otherwise say how (the browser tests then skip, or fail under CI=true).
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit $?
fi
echo "Chromium is missing: install it (e.g. 'sudo apt-get install chromium') to run the browser tests." >&2
if [ "${CI:-}" = "true" ]; then
  exit 1
fi
exit 0
