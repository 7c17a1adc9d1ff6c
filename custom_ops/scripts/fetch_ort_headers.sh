#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ headers (and their licence) into a build folder (never a
# system install).
#
#   fetch_ort_headers.sh DEST_DIR
#
# Tries, in order: Debian trixie's libonnxruntime-dev .deb (apt download + dpkg -x, no
# install), then ORT's release tarball from GitHub (ORT_HEADER_SOURCES="debian tarball"
# picks and orders them). On success prints the include directory (the folder holding
# onnxruntime_c_api.h) as the last line of stdout and exits 0. Each source that fails
# says why on stderr as "fetch_ort_headers: <source>: <reason>".
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
    command -v apt-get >/dev/null && command -v dpkg >/dev/null \
        || { log "debian: apt-get/dpkg not found (not a Debian-like system)"; return 1; }
    [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] \
        || { log "debian: no /usr/share/keyrings/debian-archive-keyring.gpg to check Debian's archive"; return 1; }
    local d="$DEST/debian"
    rm -rf "$d" && mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/x"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        >"$d/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
                -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o Debug::NoLocking=1)
    # As root, apt drops to the _apt user, which cannot write into this folder.
    [ "$(id -u)" = 0 ] && opts+=(-o APT::Sandbox::User=root)
    log "apt-get update (Debian trixie, private lists under $d)"
    local out
    if ! out="$(apt-get -qq "${opts[@]}" update 2>&1)"; then
        log "debian: apt-get update against deb.debian.org failed: $(echo "$out" | tail -n1)"
        return 1
    fi
    if ! out="$(cd "$d" && apt-get -qq "${opts[@]}" download libonnxruntime-dev 2>&1)"; then
        log "debian: apt-get download libonnxruntime-dev failed: $(echo "$out" | tail -n1)"
        return 1
    fi
    local deb
    deb="$(ls "$d"/libonnxruntime-dev_*.deb 2>/dev/null | head -n1)"
    [ -n "$deb" ] || { log "debian: apt-get download left no libonnxruntime-dev .deb"; return 1; }
    dpkg -x "$deb" "$d/x" || { log "debian: dpkg -x $deb failed"; return 1; }
    rm -rf "$d/lists" "$d/cache"
    find_header_dir "$d/x" || { log "debian: the .deb holds no onnxruntime_c_api.h"; return 1; }
}

from_tarball() {
    local name="onnxruntime-linux-x64-$ORT_TARBALL_VERSION"
    local url="https://github.com/microsoft/onnxruntime/releases/download/v$ORT_TARBALL_VERSION/$name.tgz"
    local d="$DEST/tarball"
    rm -rf "$d" && mkdir -p "$d"
    log "downloading $url"
    local out
    if command -v curl >/dev/null; then
        out="$(curl -fsSL --connect-timeout 15 "$url" -o "$d/ort.tgz" 2>&1)" \
            || { log "tarball: download of $url failed: $(echo "$out" | tail -n1)"; return 1; }
    elif command -v wget >/dev/null; then
        out="$(wget -q -T 15 "$url" -O "$d/ort.tgz" 2>&1)" \
            || { log "tarball: download of $url failed: $(echo "$out" | tail -n1)"; return 1; }
    else
        log "tarball: neither curl nor wget is installed"
        return 1
    fi
    tar -xzf "$d/ort.tgz" -C "$d" "$name/include" "$name/LICENSE" \
        || { log "tarball: $name.tgz has no $name/include"; return 1; }
    rm -f "$d/ort.tgz"
    find_header_dir "$d" || { log "tarball: $name.tgz holds no onnxruntime_c_api.h"; return 1; }
}

for source in ${ORT_HEADER_SOURCES:-debian tarball}; do
    case "$source" in
        debian | tarball) ;;
        *) log "$source: unknown source in ORT_HEADER_SOURCES (use: debian tarball)"; continue ;;
    esac
    if dir="$("from_$source")" && [ -n "$dir" ]; then
        log "headers from $source: $dir"
        echo "$dir"
        exit 0
    fi
done
log "could not fetch ONNX Runtime headers; set ONNXRUNTIME_INCLUDE_DIR to a folder holding onnxruntime_c_api.h"
exit 1
