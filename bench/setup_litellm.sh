#!/usr/bin/env bash
# Create an isolated venv for the LiteLLM proxy, the comparison baseline of
# bench/gateway_overhead.py. LiteLLM must never be installed into the main venv
# (its dependency pins would fight Strata's). 1.82.7 and 1.82.8 are excluded on
# purpose (known-bad releases). Idempotent: reuses bench/.venv-litellm if present.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-litellm"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet 'litellm[proxy]!=1.82.7,!=1.82.8'

# Keep the venv out of git (append once, never clobber).
gitignore="$here/../.gitignore"
touch "$gitignore"
if ! grep -qxF 'bench/.venv-litellm/' "$gitignore"; then
    # Add a newline first if the file does not end with one.
    [ -s "$gitignore" ] && [ "$(tail -c1 "$gitignore")" != "" ] && echo >> "$gitignore"
    echo 'bench/.venv-litellm/' >> "$gitignore"
fi

"$venv/bin/litellm" --version 2>/dev/null || "$venv/bin/python" -c 'import litellm, importlib.metadata as m; print("litellm", m.version("litellm"))'
