#!/bin/sh
# Installs the Debian packages medfed needs. Idempotent: does nothing when all are present.
set -eu
PKGS="build-essential pkg-config libtorch-dev libzmq3-dev libsodium-dev libssl-dev
libmsgpack-dev libcmocka-dev libinih-dev zlib1g-dev libopenblas0-openmp
dataset-fashion-mnist python3-torch clang libclang-rt-14-dev
libgdcm-dev libgdcm-tools libcurl4-openssl-dev libpng-dev orthanc orthanc-dicomweb dcmtk
python3-pydicom openssl"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "deps: need root (or sudo) to install:$missing" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# libopenblas0-openmp is named explicitly: the reference BLAS makes LibTorch 3.4x slower,
# and libopenblas0-pthread would oversubscribe the cores.
$SUDO apt-get install -y -qq $missing >/dev/null
echo "deps: done"
