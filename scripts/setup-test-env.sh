#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run as root):
#   - system packages: iptables (+ip6tables, -save/-restore, legacy and nft backends),
#     iproute2 (ip netns), util-linux (setpriv, nsenter, unshare), curl, ca-certificates,
#     a C toolchain and pkg-config (build scripts, cargo install), python3 + venv;
#   - Rust (rustup, toolchain $TASKMESH_RUST_TOOLCHAIN, default 1.95.0) with clippy + rustfmt,
#     when no cargo is found;
#   - a Python venv at .venv with the pinned tools of scripts/requirements-test.txt
#     (moto[server], cfn-lint, botocore/boto3, cargo-lambda);
#   - cargo-fuzz (for the bounded fuzz run in scripts/test.sh).
# Idempotent: a second run only checks. Tests find the venv through TASKMESH_VENV or .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
toolchain=${TASKMESH_RUST_TOOLCHAIN:-1.95.0}
cargo_fuzz_version=0.13.2
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export PATH="$cargo_home/bin:$PATH"

# --- system packages ---------------------------------------------------------------------
need_apt=()
for bin in iptables:iptables ip6tables:iptables iptables-save:iptables ip6tables-save:iptables \
           iptables-legacy:iptables ip:iproute2 curl:curl setpriv:util-linux nsenter:util-linux \
           unshare:util-linux getent:libc-bin cc:build-essential make:build-essential \
           pkg-config:pkg-config python3:python3 dot:graphviz; do
  command -v "${bin%%:*}" >/dev/null 2>&1 || need_apt+=("${bin##*:}")
done
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
# Debian's python3 has no venv/ensurepip without python3-venv.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${need_apt[*]}; run this script as root (it uses apt-get)" >&2
    exit 1
  fi
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- Rust --------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: rustup with Rust $toolchain"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y --no-modify-path --profile minimal --default-toolchain "$toolchain" \
      --component clippy --component rustfmt
fi
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup component list --installed 2>/dev/null || true)
  for component in clippy rustfmt; do
    grep -q "^$component" <<<"$installed" || rustup component add "$component"
  done
fi

# --- Python venv with the pinned tools ---------------------------------------------------
venv="$root/.venv"
req="$root/scripts/requirements-test.txt"
stamp="$venv/.requirements.sha256"
# The stamp covers the pins only, so editing comments does not rebuild the venv.
want=$(grep -v -E '^[[:space:]]*(#|$)' "$req" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: python venv at $venv"
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

# --- cargo tools -------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: cargo install cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi
