#!/usr/bin/env bash
# Sets up a Debian 12 machine for rs-agent: the packages it runs with, a Rust toolchain new
# enough to build it (Debian's rustc is too old), the release build, and the binary in
# /usr/local/sbin. With --test it instead installs what the test tiers need (procps, arping,
# socat, openssl, systemd-analyze; for the VM tier qemu, a Debian kernel with IPVS, ipvsadm,
# busybox-static, file and virtme-ng; prometheus (promtool) and prometheus-node-exporter,
# installed without starting or enabling either; keepalived for bench/) and builds nothing:
# scripts/test.sh builds what it tests.
# Idempotent: run it again any time. Needs root (apt-get, /usr/local/sbin).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg; expected --test" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (sudo ./scripts/setup.sh): it installs packages" >&2
  exit 2
fi

# libc6-dev is only a Recommends of gcc: without it nothing links (no crt1.o, no -lc).
runtime_pkgs=(nftables iproute2 kmod ca-certificates curl gcc libc6-dev pkg-config)
test_pkgs=(procps file iputils-arping socat openssl python3 python3-pip qemu-system-x86 linux-image-amd64 ipvsadm busybox-static keepalived systemd prometheus prometheus-node-exporter)
# Test tools that are also daemons: installed, never started or enabled on this machine (the
# checks run their binaries inside VM namespaces).
test_daemons=(prometheus prometheus-node-exporter)

missing=()
for p in "${runtime_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "$want_test" = 1 ]; then
  for p in "${test_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
fi
# While packages install no service may start: a policy-rc.d that refuses every start (101),
# ours only if there was none, removed on every way out.
policy=/usr/sbin/policy-rc.d
our_policy=0
remove_policy() { [ "$our_policy" = 1 ] && rm -f "$policy"; our_policy=0; }
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -e "$policy" ]; then
    trap remove_policy EXIT
    printf '#!/bin/sh\n# scripts/setup.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    our_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  remove_policy
  # Enabled by their packages' postinst: disable those this run installed (a no-op for
  # systemctl when systemd is not PID 1: it only removes the wants links).
  for d in "${test_daemons[@]}"; do
    if [[ " ${missing[*]} " == *" $d "* ]] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable "$d.service" >/dev/null 2>&1 || true
    fi
  done
fi

# virtme-ng boots the VM test tier's kernel (pip, not in Debian 12).
if [ "$want_test" = 1 ] && ! command -v vng >/dev/null 2>&1; then
  echo "setup.sh: installing virtme-ng (pip)"
  # Debian 12's pip refuses the system Python without --break-system-packages (PEP 668); an
  # older pip does not know the option. Pinned: the version the VM tier was last verified with.
  pip install -q --break-system-packages virtme-ng==1.42 2>/dev/null || pip install -q virtme-ng==1.42
fi

# Rust >= 1.85 (rtnetlink 0.24); Debian 12 ships 1.63, so use rustup when cargo is missing/old.
need_rust() {
  command -v cargo >/dev/null 2>&1 || return 0
  local v; v=$(rustc --version | awk '{print $2}')
  [ "$(printf '%s\n1.85.0\n' "$v" | sort -V | head -1)" != "1.85.0" ]
}
# rustup-init is fetched from static.rust-lang.org (where sh.rustup.rs's script fetches it
# from), so a network that resolves only that host works too.
if need_rust; then
  if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    echo "setup.sh: installing a Rust toolchain (rustup, minimal profile)"
    tmpd=$(mktemp -d)
    trap 'rm -rf "$tmpd"' EXIT
    init="$tmpd/rustup-init" # rustup-init decides what it is from its own file name
    curl -sSf --proto '=https' --tlsv1.2 -o "$init" \
      "https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init"
    chmod +x "$init"
    "$init" -y -q --profile minimal --no-modify-path -c clippy,rustfmt
  fi
  export PATH="$HOME/.cargo/bin:$PATH"
fi

[ "$want_test" = 1 ] && exit 0
cargo build --release
install -m 0755 target/release/rs-agent /usr/local/sbin/rs-agent
echo "setup.sh: installed /usr/local/sbin/rs-agent ($(rs-agent --version))"
