#!/usr/bin/env bash
# install-chromium.sh — install what the browser tests in internal/web need:
# Debian's Chromium at /usr/bin/chromium, and the npm package playwright-core
# (pinned in internal/web/browsertest/package.json) into
# <repo>/.tools/browsertest/node_modules.
#
# playwright-core never downloads a browser of its own; the tests launch the
# Debian build. Idempotent: does nothing when both are already in place.
# Quiet on success; on failure prints the installer's output and a hint,
# and exits non-zero.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/internal/web/browsertest"
dest="$root/.tools/browsertest"
chromium=/usr/bin/chromium

# Never let an npm lifecycle script fetch a browser build.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

fail() {
	[ -s "$log" ] && cat "$log" >&2
	echo "install-chromium: $1" >&2
	echo "hint: $2" >&2
	exit 1
}

if [ ! -x "$chromium" ]; then
	command -v apt-get >/dev/null 2>&1 ||
		fail "$chromium is missing and apt-get is not available." "install Chromium with your system's package manager so that $chromium exists, then re-run $0"
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || fail "installing Chromium needs root." "run $0 as root"
		sudo="sudo"
	fi
	if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
		fail "apt-get install chromium failed (output above)." "check that the Debian package mirrors are reachable, then re-run $0"
	fi
	[ -x "$chromium" ] || fail "apt-get finished but $chromium is missing." "check which path the chromium package installed and report it"
	: >"$log"
fi

want="$(node -e 'process.stdout.write(require(process.argv[1]).dependencies["playwright-core"])' "$src/package.json" 2>/dev/null || true)"
[ -n "$want" ] || fail "cannot read the playwright-core version from $src/package.json (is node installed?)." "install Node.js 20 or newer (apt-get install nodejs npm), then re-run $0"
have="$(node -e 'process.stdout.write(require(process.argv[1]).version)' "$dest/node_modules/playwright-core/package.json" 2>/dev/null || true)"
if [ "$have" = "$want" ] && cmp -s "$src/package.json" "$dest/package.json"; then
	exit 0
fi

command -v npm >/dev/null 2>&1 || fail "'npm' not found on PATH." "install Node.js 20 or newer with npm (apt-get install nodejs npm), then re-run $0"
mkdir -p "$dest"
cp "$src/package.json" "$dest/package.json"
if ! npm install --prefix "$dest" --no-audit --no-fund --no-save --loglevel=error >"$log" 2>&1; then
	fail "npm install of playwright-core@$want into $dest failed (output above)." "check that the npm registry is reachable, then re-run $0"
fi
have="$(node -e 'process.stdout.write(require(process.argv[1]).version)' "$dest/node_modules/playwright-core/package.json" 2>/dev/null || true)"
[ "$have" = "$want" ] || fail "npm finished but playwright-core $want is not in $dest/node_modules (found '${have:-nothing}')." "remove $dest and re-run $0"
