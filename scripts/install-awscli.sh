#!/usr/bin/env bash
# install-awscli.sh — install the AWS command line (aws) and boto3, which the
# fidelity tests of internal/awsemu run against the local AWS KMS.
#
# Idempotent: does nothing when `aws` runs and python3 can import boto3.
# Uses Debian's packages (awscli, python3-boto3); needs root for apt-get.
# Quiet on success; on failure prints apt-get's output and a hint, exits
# non-zero.
set -euo pipefail

# The tests use the first python3 on PATH that imports boto3, else Debian's
# /usr/bin/python3 (where python3-boto3 installs), and the aws on PATH, else
# Debian's /usr/bin/aws.
have() {
	{ aws --version >/dev/null 2>&1 || /usr/bin/aws --version >/dev/null 2>&1; } &&
		{ python3 -c 'import boto3' >/dev/null 2>&1 || /usr/bin/python3 -c 'import boto3' >/dev/null 2>&1; }
}

if have; then
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-awscli: apt-get not found; this script installs Debian's packages." >&2
	echo "hint: install the AWS CLI and boto3 another way (for example: pip install awscli boto3), then re-run the tests" >&2
	exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "install-awscli: not root and sudo not found." >&2
		echo "hint: run as root: apt-get update && apt-get install -y awscli python3-boto3" >&2
		exit 1
	fi
	sudo=sudo
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends awscli python3-boto3; } >"$log" 2>&1; then
	cat "$log" >&2
	echo "install-awscli: apt-get install awscli python3-boto3 failed (output above)." >&2
	echo "hint: check that the Debian mirrors are reachable, then re-run $0" >&2
	exit 1
fi

if ! have; then
	echo "install-awscli: the packages installed but 'aws' or boto3 still does not work with $(command -v python3)." >&2
	echo "hint: a python3 earlier on PATH (pyenv, a virtualenv) may hide Debian's; run the tests with /usr/bin first on PATH" >&2
	exit 1
fi
