#!/usr/bin/env bash
# The HTML report is tested in a real headless browser: Debian's chromium, driven by Playwright.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium for the HTML report tests"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "[setup] chromium is missing: install it (e.g. 'sudo apt-get install chromium') for the HTML tests" >&2
  exit 1
fi
