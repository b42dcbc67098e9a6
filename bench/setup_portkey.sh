#!/usr/bin/env bash
# Install Portkey's open-source AI gateway (npm @portkey-ai/gateway) into its own folder, bench/.portkey,
# as the second comparison peer of bench/gateway_overhead.py (beside LiteLLM, bench/setup_litellm.sh).
# It is never a dependency of Strata: a Node.js program in a gitignored folder, started by the benchmark
# with `node` and removed with `rm -rf bench/.portkey`. The version is pinned (override with
# PORTKEY_VERSION=x.y.z) so a re-run measures the same gateway; install scripts are not run (the package
# ships its built server, build/start-server.js, and needs none). Needs Node.js >= 18 and npm: if they are
# missing and apt-get is available (root), installs Debian's `nodejs npm`. Idempotent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$here/.portkey"
version="${PORTKEY_VERSION:-1.15.2}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q && apt-get install -y -q nodejs npm
    else
        echo "node and npm not found: install Node.js >= 18 (Debian: apt-get install -y nodejs npm)" >&2
        exit 1
    fi
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
    echo "node $(node --version) is too old for @portkey-ai/gateway; need >= 18" >&2
    exit 1
fi

mkdir -p "$dir"
# A package.json of its own, so npm installs here and never walks up to another project's.
[ -f "$dir/package.json" ] || echo '{"name": "strata-bench-portkey", "private": true}' > "$dir/package.json"
npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts --save-exact --loglevel=error \
    "@portkey-ai/gateway@$version"

# Keep the folder out of git (append once, never clobber).
gitignore="$here/../.gitignore"
touch "$gitignore"
if ! grep -qxF 'bench/.portkey/' "$gitignore"; then
    [ -s "$gitignore" ] && [ "$(tail -c1 "$gitignore")" != "" ] && echo >> "$gitignore"
    echo 'bench/.portkey/' >> "$gitignore"
fi

echo "node $(node --version), @portkey-ai/gateway $(node -p "require('$dir/node_modules/@portkey-ai/gateway/package.json').version")"
