#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the docs browser test (tests/test_docs.py drives it
# with Playwright's Python package via executable_path; never `playwright install`, never a browser download).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"; exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "FAIL: /usr/bin/chromium is missing; as root run: apt-get update -qq && apt-get install -y -qq chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
echo "chromium: $(/usr/bin/chromium --version)"
