#!/usr/bin/env bash
# Debian's Chromium for the app's browser test (Playwright drives it; its own browser
# download is not used). Installs only where apt-get and root are available.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  echo "kit: installed Debian chromium for the browser test"
else
  echo "kit: chromium not found and cannot be installed here: the browser test will be skipped" >&2
fi
