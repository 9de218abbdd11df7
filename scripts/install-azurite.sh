#!/usr/bin/env bash
# install-azurite.sh — install the Azurite storage emulator into <repo>/.tools
# so that the tests in internal/testsvc can start azurite-blob themselves.
#
# Idempotent: does nothing when the pinned version is already installed.
# Quiet on success; on failure prints npm's output and a hint, exits non-zero.
set -euo pipefail

# 3.35.0 is the newest release whose package declares support for Node 20
# (3.36.0 and later ask for Node >= 21). The Go SDK we use (azblob v1.8.3)
# sends a newer API version than 3.35.0 knows, which is why the tests start
# it with --skipApiVersionCheck.
AZURITE_VERSION=3.35.0

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
bin="$tools/node_modules/.bin/azurite-blob"
pkg="$tools/node_modules/azurite/package.json"

installed_version() {
	[ -f "$pkg" ] || return 0
	node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg" 2>/dev/null || true
}

if [ -x "$bin" ] && [ "$(installed_version)" = "$AZURITE_VERSION" ]; then
	exit 0
fi

for tool in node npm; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "install-azurite: '$tool' not found on PATH." >&2
		echo "hint: install Node.js 20 or newer (for example: apt-get install nodejs npm), then re-run $0" >&2
		exit 1
	fi
done

mkdir -p "$tools"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! npm install --prefix "$tools" --no-audit --no-fund --loglevel=error \
	"azurite@$AZURITE_VERSION" >"$log" 2>&1; then
	cat "$log" >&2
	echo "install-azurite: npm install azurite@$AZURITE_VERSION into $tools failed (output above)." >&2
	echo "hint: check that the npm registry is reachable, then re-run $0" >&2
	exit 1
fi

if [ ! -x "$bin" ]; then
	echo "install-azurite: npm finished but $bin is missing." >&2
	exit 1
fi
