#!/usr/bin/env bash
# Fetch ONNX Runtime C/C++ headers into third_party/ort-headers (gitignored).
#
# Why: the onnxruntime pip wheel ships libonnxruntime.so but no headers. Debian 13 (trixie) packages the
# 1.21 headers as libonnxruntime-dev. We download that .deb with a private apt configuration (nothing is
# installed, no root needed, the system's apt sources are untouched) and unpack it with dpkg -x. The ORT C
# API is versioned, so a library built against 1.21 headers loads in newer runtimes (1.32 here).
#
# Usage: scripts/fetch_ort_headers.sh [DEST]      (default DEST: third_party/ort-headers)
# Result: DEST/include/onnxruntime_cxx_api.h, onnxruntime_c_api.h, ...
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/third_party/ort-headers}"
if [ -f "$DEST/include/onnxruntime_cxx_api.h" ]; then
  echo "ORT headers already present in $DEST"; exit 0
fi
command -v apt-get >/dev/null || { echo "error: apt-get not found; install ONNX Runtime headers (1.17+) into $DEST/include by hand" >&2; exit 1; }
command -v dpkg >/dev/null || { echo "error: dpkg not found (needed to unpack the .deb)" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/etc/preferences.d" "$WORK/etc/sources.list.d"
echo "deb [trusted=yes] http://deb.debian.org/debian trixie main" > "$WORK/etc/sources.list"
: > "$WORK/status"
APT_OPTS=(-o Dir::Etc="$WORK/etc" -o Dir::Etc::sourcelist="$WORK/etc/sources.list"
  -o Dir::Etc::sourceparts="$WORK/etc/sources.list.d" -o Dir::State="$WORK" -o Dir::State::Lists="$WORK/lists"
  -o Dir::State::status="$WORK/status" -o Dir::Cache="$WORK/cache" -o Debug::NoLocking=1
  -o APT::Sandbox::User="$(id -un)" -o Acquire::Languages=none)
echo "fetching the trixie package index (private apt dir $WORK)..."
apt-get "${APT_OPTS[@]}" -q update >/dev/null
(cd "$WORK" && apt-get "${APT_OPTS[@]}" -q download libonnxruntime-dev >/dev/null)
DEB="$(ls "$WORK"/libonnxruntime-dev_*.deb)"
echo "unpacking $(basename "$DEB")"
dpkg -x "$DEB" "$WORK/x"
mkdir -p "$DEST/include"
HDR_DIR="$(dirname "$(find "$WORK/x" -name onnxruntime_cxx_api.h | head -1)")"
[ -n "$HDR_DIR" ] || { echo "error: onnxruntime_cxx_api.h not found in $DEB" >&2; exit 1; }
cp -r "$HDR_DIR"/. "$DEST/include/"
basename "$DEB" > "$DEST/SOURCE"
echo "ORT headers in $DEST/include (from $(cat "$DEST/SOURCE"))"
