#!/usr/bin/env bash
# Install everything the tests need: Debian's chromium and postfix (the tests run
# private instances of it on loopback), a virtualenv with the package and its
# test extras, and the Node tools (Prism, doiuse-email).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
UPDATED=""
apt_install() {
  [ -n "$UPDATED" ] || { $SUDO apt-get update -qq; UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
if ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium
fi
if ! command -v postfix >/dev/null 2>&1 && [ ! -x /usr/sbin/postfix ]; then
  apt_install postfix
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
