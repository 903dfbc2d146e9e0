#!/usr/bin/env bash
# Installs the pinned cargo-lambda (its Runtime API emulator drives the end-to-end
# tests) into .venv/ at the repository root, unless that exact version is already there,
# and prints the path of its executable. PyPI ships it as a wheel with the binary inside,
# so no Rust build and no download outside the package registry is needed.
#
# Usage: tests/support/cargo-lambda.sh
# Then, from inside a Cargo project (it reads the project's metadata):
#   .venv/bin/cargo-lambda lambda watch --only-lambda-apis -A 127.0.0.1 -P PORT
set -euo pipefail

# Bump together with the version the closing note of issue 5 reports.
version=1.9.2
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=$repo/.venv
bin=$venv/bin/cargo-lambda

installed() {
    # The binary is a cargo subcommand: it expects `lambda` as its first argument.
    [[ -x $bin ]] && [[ $("$bin" lambda --version 2>/dev/null) == "cargo-lambda $version "* ]]
}

if ! installed; then
    [[ -x $venv/bin/python3 ]] || python3 -m venv "$venv"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "cargo-lambda==$version" >&2
    installed || { echo "$0: cargo-lambda $version did not install into $venv" >&2; exit 1; }
fi
echo "$bin"
