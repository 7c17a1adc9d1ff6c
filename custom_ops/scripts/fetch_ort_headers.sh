#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ headers into a build folder (never a system install).
#
#   fetch_ort_headers.sh DEST_DIR
#
# Tries, in order: Debian trixie's libonnxruntime-dev .deb (apt download + dpkg -x, no
# install), then ORT's release tarball from GitHub (ORT_HEADER_SOURCES="debian tarball"
# picks and orders them). On success prints the include directory (the folder holding
# onnxruntime_c_api.h) as the last line of stdout and exits 0.
set -euo pipefail

DEST="${1:?usage: fetch_ort_headers.sh DEST_DIR}"
ORT_TARBALL_VERSION="${ORT_TARBALL_VERSION:-1.21.0}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"

log() { echo "fetch_ort_headers: $*" >&2; }

find_header_dir() {
    local hit
    hit="$(find "$1" -name onnxruntime_c_api.h -print -quit 2>/dev/null || true)"
    [ -n "$hit" ] && dirname "$hit"
}

from_debian() {
    command -v apt-get >/dev/null && command -v dpkg >/dev/null || return 1
    [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || return 1
    local d="$DEST/debian"
    rm -rf "$d" && mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/x"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        >"$d/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
                -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o Debug::NoLocking=1)
    # As root, apt drops to the _apt user, which cannot write into this folder.
    [ "$(id -u)" = 0 ] && opts+=(-o APT::Sandbox::User=root)
    log "apt-get update (Debian trixie, private lists under $d)"
    apt-get -qq "${opts[@]}" update >&2 || return 1
    (cd "$d" && apt-get -qq "${opts[@]}" download libonnxruntime-dev >&2) || return 1
    local deb
    deb="$(ls "$d"/libonnxruntime-dev_*.deb 2>/dev/null | head -n1)"
    [ -n "$deb" ] || return 1
    dpkg -x "$deb" "$d/x" || return 1
    rm -rf "$d/lists" "$d/cache"
    find_header_dir "$d/x"
}

from_tarball() {
    local name="onnxruntime-linux-x64-$ORT_TARBALL_VERSION"
    local url="https://github.com/microsoft/onnxruntime/releases/download/v$ORT_TARBALL_VERSION/$name.tgz"
    local d="$DEST/tarball"
    rm -rf "$d" && mkdir -p "$d"
    log "downloading $url"
    if command -v curl >/dev/null; then
        curl -fsSL --connect-timeout 15 "$url" -o "$d/ort.tgz" || return 1
    elif command -v wget >/dev/null; then
        wget -q -T 15 "$url" -O "$d/ort.tgz" || return 1
    else
        return 1
    fi
    tar -xzf "$d/ort.tgz" -C "$d" "$name/include" || return 1
    rm -f "$d/ort.tgz"
    find_header_dir "$d"
}

for source in ${ORT_HEADER_SOURCES:-debian tarball}; do
    case "$source" in
        debian | tarball) ;;
        *) log "unknown source '$source' in ORT_HEADER_SOURCES (use: debian tarball)"; continue ;;
    esac
    if dir="$("from_$source")" && [ -n "$dir" ]; then
        log "headers from $source: $dir"
        echo "$dir"
        exit 0
    fi
    log "$source source failed"
done
log "could not fetch ONNX Runtime headers; set ONNXRUNTIME_INCLUDE_DIR to a folder holding onnxruntime_c_api.h"
exit 1
