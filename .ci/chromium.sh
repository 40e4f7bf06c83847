#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/report/): prints the browser's path on stdout.
#
#   .ci/chromium.sh            install the Debian package 'chromium' when it is missing
#
# Playwright drives this browser through `executable_path`; the project never runs
# `playwright install` (no browser build is downloaded). Installs with apt-get only when
# we are root and apt-get is there; otherwise says what to install and exits 3. CHROMIUM
# overrides the path looked for. Everything but the path goes to stderr.
set -euo pipefail

browser=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$browser" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "chromium.sh: installing Chromium from Debian's packages" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
    fi
fi
if [ ! -x "$browser" ]; then
    echo "chromium.sh: no Chromium at $browser; install the Debian package 'chromium'" \
         "(apt-get install -y chromium) or set CHROMIUM" >&2
    exit 3
fi
echo "$browser"
