#!/usr/bin/env bash
# install-postgres.sh — install the PostgreSQL server binaries (initdb,
# pg_ctl) so that the tests in internal/testsvc can start a server themselves.
#
# The tests run their own throwaway cluster on a free port, so the system
# cluster Debian's package would create and start on 5432 is not needed; it
# is not created on a fresh install. Only the binaries and the postgres OS
# user (tests run as root start the server as that user) are needed.
#
# Idempotent: quiet and does nothing when the binaries are already there.
# Looks where the tests look: $CMK_PG_BIN, /usr/lib/postgresql/*/bin, PATH.
# On failure prints a hint and exits non-zero. Debian/Ubuntu (apt-get) only.
set -euo pipefail

fail() {
	echo "install-postgres: $1" >&2
	echo "hint: $2" >&2
	exit 1
}

# find_bin prints the directory holding initdb and pg_ctl, if any.
find_bin() {
	local dir p
	if [ -n "${CMK_PG_BIN:-}" ]; then
		if [ -x "$CMK_PG_BIN/initdb" ] && [ -x "$CMK_PG_BIN/pg_ctl" ]; then echo "$CMK_PG_BIN"; fi
		return 0
	fi
	# Newest major version first.
	for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4nr); do
		if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
	done
	if p="$(command -v pg_ctl 2>/dev/null)"; then
		dir="$(dirname "$(readlink -f "$p")")"
		if [ -x "$dir/initdb" ]; then echo "$dir"; fi
	fi
	return 0
}

have_user() { id -u postgres >/dev/null 2>&1; }

bin="$(find_bin)"
if [ -n "$bin" ] && { [ "$(id -u)" != 0 ] || have_user; }; then
	exit 0
fi
if [ -n "${CMK_PG_BIN:-}" ] && [ -z "$bin" ]; then
	fail "CMK_PG_BIN=$CMK_PG_BIN does not hold initdb and pg_ctl." \
		"point CMK_PG_BIN at the bin directory of a PostgreSQL install, or unset it to install Debian's package."
fi
if ! command -v apt-get >/dev/null 2>&1; then
	fail "PostgreSQL not found and apt-get is not available." \
		"install the PostgreSQL server (15 or newer) with your package manager, then set CMK_PG_BIN to the directory holding initdb and pg_ctl."
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 ||
		fail "installing packages needs root, and sudo is not available." "re-run $0 as root."
	sudo=(sudo)
fi

# postgresql-common reads createcluster.d when the server package is
# configured; this stops it creating and starting the unused main cluster.
# An existing cluster is left alone.
if ! "${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d ||
	! echo "create_main_cluster = false" | "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/cmk-no-main-cluster.conf >/dev/null; then
	fail "cannot write /etc/postgresql-common/createcluster.d." "re-run $0 as root."
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get update >"$log" 2>&1; then
	cat "$log" >&2
	fail "apt-get update failed." "check network access to the Debian mirrors and /etc/apt/sources.list*."
fi
if ! "${sudo[@]}" apt-get install -y --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql >"$log" 2>&1; then
	cat "$log" >&2
	fail "apt-get install postgresql failed (output above)." "fix the apt error above and re-run $0."
fi

bin="$(find_bin)"
[ -n "$bin" ] ||
	fail "postgresql installed, but initdb and pg_ctl are not under /usr/lib/postgresql/*/bin." "set CMK_PG_BIN to the directory holding them."
have_user ||
	fail "postgresql installed, but the postgres OS user is missing." "create it: useradd --system --home /var/lib/postgresql postgres"
"$bin/initdb" --version >/dev/null ||
	fail "$bin/initdb does not run." "reinstall: apt-get install --reinstall postgresql"
echo "install-postgres: installed $("$bin/initdb" --version) in $bin"
