#!/usr/bin/env bash
# Install everything the tests need: Debian's chromium, postfix and dovecot (the
# tests run private instances on loopback), a virtualenv with the package and its
# test extras, and the Node tools (Prism, doiuse-email, axe-core).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: chromium (browser tests), postfix (a real relay), dovecot-imapd (the bounce mailbox over
# IMAP), each run by the tests themselves on loopback.
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -x /usr/sbin/postfix ] || missing="$missing postfix"
[ -x /usr/sbin/dovecot ] || missing="$missing dovecot-imapd"
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # No system-wide mail service: the tests start their own instances, listening on 127.0.0.1 only.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
