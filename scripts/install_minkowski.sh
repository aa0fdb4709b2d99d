#!/usr/bin/env bash
# Build and install MinkowskiEngine 0.5.4 (CPU only) from its PyPI sdist into a Python env.
#
# MinkowskiEngine is optional for relkd (the `native` backend needs nothing); install it to use
# the `minkowski` backend or to check parity with it. Its last release (2021) does not install
# with a current pip and Python as is; this script applies the minimum source fixes:
#   1. `from collections import Sequence` -> `collections.abc` (removed in Python 3.10);
#   2. setup.py reads the BLAS choice and CPU-only flag from the environment (ME_BLAS,
#      CPU_ONLY): pip's PEP 517 build cannot pass --blas/--cpu_only to it, and without --blas
#      setup.py probes BLAS through numpy.distutils, which fails with current setuptools;
#   3. setup.py's module-level `pip uninstall MinkowskiEngine -y` is removed (it silently
#      uninstalled a working copy whenever pip merely read the metadata).
# The build needs the env's torch at build time, hence --no-build-isolation; torch is pinned on
# every pip command line so that pip never swaps it for another build.
#
# Usage:  scripts/install_minkowski.sh [PYTHON]        (default: python3 on PATH)
# Env:    TORCH_SPEC (default torch==2.13.0), MAX_JOBS (default 2), ME_SKIP_APT=1 to skip apt,
#         ME_KEEP_BUILD=1 to keep the temporary build folder.
# Takes about 4 minutes on 2 cores. Never run it against an env you cannot rebuild.
set -euo pipefail

PYTHON=${1:-python3}
# An absolute path: the smoke test at the end runs from the build folder.
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export MAX_JOBS=${MAX_JOBS:-2}
ME_VERSION=0.5.4
SDIST_URL="https://files.pythonhosted.org/packages/21/5c/c543c4bc5fbe73ac3e38465b3da4f24a61f7a4ac5baec867e582e94aa551/MinkowskiEngine-${ME_VERSION}.tar.gz"
SDIST_SHA256=b1879c00d0b0b1d30ba622cce239886a7e3c78ee9da1064cdfe2f64c2ab15f94

work=$(mktemp -d -t minkowski-build.XXXXXX)
if [[ "${ME_KEEP_BUILD:-0}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi
echo "building MinkowskiEngine ${ME_VERSION} in $work for $PYTHON"

# OpenBLAS headers and library for the CPU kernels (Debian/Ubuntu).
if [[ "${ME_SKIP_APT:-0}" != 1 ]] && ! [[ -e /usr/include/x86_64-linux-gnu/cblas.h || -e /usr/include/cblas.h ]]; then
    sudo_cmd=""
    [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
    $sudo_cmd apt-get update
    $sudo_cmd apt-get install -y --no-install-recommends libopenblas-dev
fi

# Build requirements, with torch pinned so pip never replaces the env's torch.
"$PYTHON" -m pip install "$TORCH_SPEC" numpy ninja setuptools wheel

# The sdist, from PyPI's file host, checked against the hash PyPI publishes. (`pip download`
# cannot fetch it: it builds the metadata, which runs the unpatched setup.py.)
curl -fsSL --retry 3 -o "$work/me.tar.gz" "$SDIST_URL"
echo "$SDIST_SHA256  $work/me.tar.gz" | sha256sum -c -
tar -xzf "$work/me.tar.gz" -C "$work"
src="$work/MinkowskiEngine-${ME_VERSION}"

# Fix 1: collections.abc.
grep -rl --include='*.py' -E '^from collections import (Sequence|.*Sequence)' "$src/MinkowskiEngine" \
    | xargs sed -i -E 's/^from collections import Sequence, namedtuple$/from collections import namedtuple\nfrom collections.abc import Sequence/; s/^from collections import Sequence$/from collections.abc import Sequence/'
# Fix 2 and 3: environment-driven flags; no self-uninstall.
"$PYTHON" - "$src/setup.py" <<'EOF'
import pathlib, sys
path = pathlib.Path(sys.argv[1])
text = path.read_text()
uninstall = 'run_command("pip", "uninstall", "MinkowskiEngine", "-y")\n'
assert uninstall in text, "setup.py changed: the uninstall line was not found"
text = text.replace(uninstall, "")
anchor = "from sys import argv, platform\n"
assert anchor in text, "setup.py changed: the argv import was not found"
env_flags = (
    anchor
    + "import os as _os\n"
    + "if _os.environ.get('ME_BLAS'):\n"
    + "    argv.append('--blas=' + _os.environ['ME_BLAS'])\n"
    + "if _os.environ.get('CPU_ONLY', '') in ('1', 'true', 'yes'):\n"
    + "    argv.append('--cpu_only')\n"
)
path.write_text(text.replace(anchor, env_flags, 1))
EOF
if grep -rn --include='*.py' -E '^from collections import .*Sequence' "$src/MinkowskiEngine"; then
    echo "collections.abc fix incomplete" >&2
    exit 1
fi

# Build the wheel, then install it without touching torch.
echo "$TORCH_SPEC" > "$work/constraints.txt"
ME_BLAS=openblas CPU_ONLY=1 "$PYTHON" -m pip wheel --no-deps --no-build-isolation \
    -c "$work/constraints.txt" -w "$work/dist" "$src"
"$PYTHON" -m pip install --no-deps "$work"/dist/[Mm]inkowski[Ee]ngine-*.whl "$TORCH_SPEC"

# Smoke test, from outside the source tree (ME puts its own folder on sys.path).
(cd "$work" && "$PYTHON" -c "import MinkowskiEngine as ME; print('MinkowskiEngine', ME.__version__, 'OK')")
