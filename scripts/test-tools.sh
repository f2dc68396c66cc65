#!/usr/bin/env bash
# What the suite needs beyond the venv, installed when missing (`make test` runs this first):
#   - Debian's chromium, for the offline GraphiQL test (tests/test_graphiql.py);
#   - the npm clients of tests/conformance (graphql-http's audit, graphql-ws, graphql-sse, and
#     axe-core, which tests/test_console.py runs in Chromium),
#     exactly as pinned by its package-lock.json.
# Where it may not install a tool, it prints one line saying what to install and how, and goes
# on: the tests that need the tool then fail and say so. None is ever skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

say() { echo "make test: $*" >&2; }

# Root installs with apt-get; anyone else only through a sudo that asks for no password.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}
may_install() {
  command -v apt-get >/dev/null &&
    { [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; }
}

# install WHAT PACKAGE...: one line on the terminal, whichever way it goes.
install() {
  local what=$1; shift
  local how="run 'sudo apt-get install -y $*', then 'make test' again"
  if ! may_install; then say "missing: $what; this user may not install it: $how"; return; fi
  say "installing $what ($*) from Debian's packages"
  { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null 2>&1 ||
    say "installing $what failed: $how"
}

command -v chromium >/dev/null || command -v chromium-browser >/dev/null ||
  install "chromium (the GraphiQL browser test)" chromium
{ command -v node >/dev/null && command -v npm >/dev/null; } ||
  install "Node.js and npm (the third-party client tests)" nodejs npm

lock=tests/conformance/package-lock.json
stamp=tests/conformance/node_modules/.package-lock.json
if command -v npm >/dev/null && { [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; }; then
  say "installing the npm clients from $lock"
  (cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    say "npm ci failed in tests/conformance: run 'cd tests/conformance && npm ci' to see why"
fi
exit 0
