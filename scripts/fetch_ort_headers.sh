#!/usr/bin/env bash
# Fetch ONNX Runtime C/C++ headers into third_party/ort-headers (gitignored).
#
# Why: the onnxruntime pip wheel ships libonnxruntime.so but no headers. Debian 13 (trixie) packages the
# 1.21 headers as libonnxruntime-dev. We download that .deb with a private apt configuration (nothing is
# installed, no root needed, the system's apt sources are untouched) and unpack it with dpkg -x. The ORT C
# API is versioned, so a library built against 1.21 headers loads in newer runtimes (1.32 here).
#
# Trust: the index is verified against the system's Debian archive keyring (signed-by=; apt then checks the
# .deb's hash against the signed index), and any apt error or warning stops the script: nothing unverified
# is unpacked. The headers' ORT_API_VERSION is checked against the .deb's version and against the runtime
# in PYTHON's environment (default ../.venv/bin/python), which must be at least as new.
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
KEYRING="${ORT_HEADERS_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
[ -r "$KEYRING" ] || { echo "error: Debian archive keyring $KEYRING not found (apt-get install debian-archive-keyring)" >&2; exit 1; }
echo "deb [signed-by=$KEYRING] http://deb.debian.org/debian trixie main" > "$WORK/etc/sources.list"
: > "$WORK/status"
APT_OPTS=(-o Dir::Etc="$WORK/etc" -o Dir::Etc::sourcelist="$WORK/etc/sources.list"
  -o Dir::Etc::sourceparts="$WORK/etc/sources.list.d" -o Dir::State="$WORK" -o Dir::State::Lists="$WORK/lists"
  -o Dir::State::status="$WORK/status" -o Dir::Cache="$WORK/cache" -o Debug::NoLocking=1
  -o APT::Sandbox::User="$(id -un)" -o Acquire::Languages=none)
echo "fetching the trixie package index (private apt dir $WORK)..."
apt-get "${APT_OPTS[@]}" -q --error-on=any update >"$WORK/update.log" 2>&1 \
  || { echo "error: could not fetch a verified trixie index (nothing was unpacked):" >&2; tail -5 "$WORK/update.log" >&2; exit 1; }
(cd "$WORK" && apt-get "${APT_OPTS[@]}" -q download libonnxruntime-dev >/dev/null)
DEB="$(ls "$WORK"/libonnxruntime-dev_*.deb)"
echo "unpacking $(basename "$DEB")"
dpkg -x "$DEB" "$WORK/x"
FOUND="$(find "$WORK/x" -name onnxruntime_cxx_api.h | head -1)"
[ -n "$FOUND" ] || { echo "error: onnxruntime_cxx_api.h not found in $DEB" >&2; exit 1; }
HDR_DIR="$(dirname "$FOUND")"
API="$(sed -n 's/^#define ORT_API_VERSION \([0-9][0-9]*\).*/\1/p' "$HDR_DIR/onnxruntime_c_api.h")"
DEB_MINOR="$(basename "$DEB" | sed -n 's/^libonnxruntime-dev_1\.\([0-9][0-9]*\)\..*/\1/p')"
[ -n "$API" ] && [ "$API" = "$DEB_MINOR" ] \
  || { echo "error: headers in $DEB declare ORT_API_VERSION '${API}', expected 1.${DEB_MINOR}'s" >&2; exit 1; }
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
if [ -x "$PYTHON" ] && RUNTIME="$("$PYTHON" -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null)"; then
  RT_MINOR="$(echo "$RUNTIME" | cut -d. -f2)"
  [ "$RT_MINOR" -ge "$API" ] \
    || { echo "error: onnxruntime $RUNTIME in $PYTHON is older than these headers (1.$API): upgrade it" >&2; exit 1; }
fi
mkdir -p "$DEST/include"
cp -r "$HDR_DIR"/. "$DEST/include/"
basename "$DEB" > "$DEST/SOURCE"
echo "ORT headers in $DEST/include (from $(cat "$DEST/SOURCE"))"
