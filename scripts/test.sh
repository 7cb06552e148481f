#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages), then runs all of it: formatting, lints,
# unit/property/integration tests, and a tiny smoke benchmark. `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server (+ redis-cli): the Redis source's end-to-end test runs a real server.
# b3sum and zstd: machine limits measured by the smoke benchmark next to rpger-store.
packages=(redis-server b3sum zstd)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "WARNING: cannot install ${missing[*]} (not root, no sudo): the smoke benchmark will skip those limits"
  fi
fi
if [ "$(id -u)" != 0 ]; then
  echo "WARNING: not running as root: the uid/gid restore cases and the run-as-nobody test are reduced (CI runs as root)"
fi

if ! docker info >/dev/null 2>&1; then
  echo "WARNING: no Docker engine answers \`docker info\`: the Docker tests will be SKIPPED"
fi
# Started from a background shell, every process ignores SIGINT; the frozen-source test then
# cannot send rpger-store a Ctrl-C and leaves that one case out.
if (( 0x$(awk '/^SigIgn:/ {print $2}' /proc/$$/status) & 2 )); then
  echo "WARNING: SIGINT is ignored here (started in the background?): the Ctrl-C case of the frozen-source test is not run"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== cargo test"
cargo test --workspace --release
echo "== criterion benches, one pass each"
cargo bench -p rpger-benches -- --test >/dev/null
echo "== smoke benchmark"
bash benches/smoke.sh
