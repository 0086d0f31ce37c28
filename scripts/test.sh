#!/usr/bin/env bash
# Runs every test tier: format and lint, unit tests, namespace tests (real netlink, sysctl and
# nftables in namespaces the tests create and delete) and the VM tier (a Debian kernel with
# IPVS and dummy booted with virtme-ng). Installs what it needs first (scripts/setup.sh --test).
# Needs root; the namespace tests skip loudly without it (and fail when CI is set).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  scripts/setup.sh --test
fi
# rustup's cargo, which setup.sh may just have installed (its PATH does not reach this shell).
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test (unit, namespace and VM tiers)"
cargo test --all-targets -- --test-threads=4
