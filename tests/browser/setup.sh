#!/usr/bin/env bash
# What tests/tests/browser.rs needs, installed when missing and quiet when present:
# Debian's chromium (apt-get; never a browser download) and playwright-core, pinned in
# package-lock.json, installed with `npm ci` into tests/browser/node_modules (gitignored),
# again only when the lock file changed. Prints the Chromium binary's path last.
set -euo pipefail
cd "$(dirname "$0")"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "browser setup: apt-get install $*" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
# The real binary: /usr/bin/chromium is Debian's wrapper script.
chromium=/usr/lib/chromium/chromium
if [ ! -x "$chromium" ]; then
  apt_install chromium
fi
[ -x "$chromium" ] || { echo "browser setup: $chromium missing after apt-get install chromium" >&2; exit 1; }

stamp=node_modules/.vx11-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -d node_modules/playwright-core ]; then
  echo "browser setup: npm ci (playwright-core)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$stamp"
fi
echo "$chromium"
