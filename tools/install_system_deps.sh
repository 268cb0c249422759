#!/usr/bin/env bash
# System packages the browser tests need: Debian's Chromium (driven by Playwright's Python package
# with executable_path=/usr/bin/chromium; the tests never run `playwright install`, which downloads
# a browser build of its own). Called by `make browser-deps` when /usr/bin/chromium is missing and
# BNBOOK_BROWSER is not set (on other systems set BNBOOK_BROWSER: see tools/sitecheck.py).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# fonts-dejavu-core: so text renders the same in every screenshot.
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
