#!/usr/bin/env bash
# Installs the Toxiproxy client libraries that the Toxiproxy-compatible
# API's tests drive (node/tests/toxiproxy_process.rs runs
# ops/toxiproxy/python_cycle.py and ops/toxiproxy/node_cycle.js), from the
# package registries, at pinned versions, into target/toxiproxy-clients
# (never system-wide):
#   python/        toxiproxy-python (PyPI) and its dependencies (pip --target)
#   node/          toxiproxy-node-client (npm) in node/node_modules
# Needs python3 with pip, and node with npm; as root, installs Debian's
# packages for them when they are missing. Exits non-zero when anything
# cannot be installed: the suite then fails rather than skip the clients.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_CLIENT="toxiproxy-python==0.1.1"
NODE_CLIENT="toxiproxy-node-client@4.1.0"
dir=target/toxiproxy-clients
marker="$dir/installed ($PY_CLIENT, $NODE_CLIENT)"

if [ -e "$marker" ]; then
    echo "toxiproxy clients: already installed in $dir"
    exit 0
fi

missing=()
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "toxiproxy clients: installing ${missing[*]} (Debian packages)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "toxiproxy clients: missing ${missing[*]}; install them (or run as root)" >&2
        exit 1
    fi
fi

rm -rf "$dir"
mkdir -p "$dir/python" "$dir/node"
echo "toxiproxy clients: pip install $PY_CLIENT -> $dir/python"
python3 -m pip install --quiet --disable-pip-version-check --no-input --target "$dir/python" "$PY_CLIENT"
echo "toxiproxy clients: npm install $NODE_CLIENT -> $dir/node"
npm install --silent --no-audit --no-fund --no-save --prefix "$dir/node" "$NODE_CLIENT"
PYTHONPATH="$dir/python" python3 -c "import toxiproxy" || { echo "toxiproxy-python does not import" >&2; exit 1; }
node -e "require('./$dir/node/node_modules/toxiproxy-node-client')" \
    || { echo "toxiproxy-node-client does not load" >&2; exit 1; }
touch "$marker"
echo "toxiproxy clients: installed in $dir"
