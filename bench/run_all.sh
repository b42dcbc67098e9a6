#!/usr/bin/env bash
# Runs the benchmarks in one go; results (JSON) land in bench/results/.
# Needs wrk (apt-get install -y wrk), and for the comparison the LiteLLM venv (bench/setup_litellm.sh) and
# Portkey's gateway (bench/setup_portkey.sh, needs node + npm); both are created here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p bench/results
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
[ -x bench/.venv-litellm/bin/litellm ] || bash bench/setup_litellm.sh
[ -f bench/.portkey/node_modules/@portkey-ai/gateway/build/start-server.js ] || bash bench/setup_portkey.sh
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== gateway overhead (direct vs Strata vs LiteLLM vs Portkey)"
$PY bench/gateway_overhead.py --json-out bench/results/gateway_overhead.json
echo "== serving (llama.cpp direct vs through Strata)"
$PY bench/serving.py --json-out bench/results/serving.json
echo "== cold start"
$PY bench/cold_start.py --json-out bench/results/cold_start.json
echo "== failover (one of two deployments killed mid-load)"
$PY bench/failover.py --json-out bench/results/failover.json
echo "== complexity routing (router vs all-strong, all-cheap and random routing)"
$PY bench/routing.py --json-out bench/results/routing.json
echo "== semantic cache (paraphrases vs hard negatives, hit latency)"
$PY bench/semantic_cache.py --json-out bench/results/semantic_cache.json
