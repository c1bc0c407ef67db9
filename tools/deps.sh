#!/bin/sh
# Installs the Debian packages medfed needs. Idempotent: does nothing when all are present.
#   deps.sh         what building medfed and its Debian packages needs (make all, make deb)
#   deps.sh test    also what the tests, the fuzzers and the benchmarks need: cmocka, clang's
#                   libFuzzer, python3-torch (reference), pydicom and gdcmconv (fixtures),
#                   a private Orthanc PACS and chromium (headless: the report's browser
#                   test). Orthanc's system service is not started: the tests start their
#                   own instance on free loopback ports.
set -eu
PKGS="build-essential pkg-config libtorch-dev libzmq3-dev libsodium-dev libssl-dev openssl
libmsgpack-dev libinih-dev zlib1g-dev libopenblas0-openmp dataset-fashion-mnist
libgdcm-dev libcurl4-openssl-dev libpng-dev libsystemd-dev scdoc debhelper lintian
libjansson-dev"
TEST_PKGS="libcmocka-dev clang libclang-rt-14-dev python3-torch python3-pydicom libgdcm-tools
orthanc orthanc-dicomweb chromium"
[ "${1:-}" = test ] && PKGS="$PKGS $TEST_PKGS"
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
# No package may start a service while we install (Orthanc's would listen on
# 4242/8042): a policy-rc.d that says "denied", removed afterwards unless it was
# there before.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    own_policy=1
fi
trap '[ $own_policy -eq 1 ] && $SUDO rm -f "$POLICY"' EXIT
$SUDO apt-get update -qq
# libopenblas0-openmp is named explicitly: the reference BLAS makes LibTorch 3.4x slower,
# and libopenblas0-pthread would oversubscribe the cores.
$SUDO apt-get install -y -qq $missing >/dev/null
echo "deps: done"
