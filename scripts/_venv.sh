# Sourced by scripts/serve and scripts/test: make ./.venv and install the project into it.
# Usage: ensure_venv EXTRAS   (e.g. "" or "test,bench")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
    local extras="$1" spec="$ROOT" stamp
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV" || {
            echo "python3 -m venv failed; on Debian/Ubuntu run: apt-get install -y python3-venv" >&2
            exit 1
        }
        "$VENV/bin/pip" install --quiet --upgrade pip
    fi
    # Reinstall when setup.cfg changes or new extras are asked for.
    stamp="$VENV/.chatd-installed-$(cksum < "$ROOT/setup.cfg" | cut -d' ' -f1)-${extras//,/_}"
    if [ ! -f "$stamp" ]; then
        "$VENV/bin/pip" install --quiet -e "$spec"
        touch "$stamp"
    fi
}
