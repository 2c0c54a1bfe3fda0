#!/usr/bin/env bash
# Fetches the Python documentation's reST sources (Debian package python3.11-doc) into a cache
# outside the repository, for `hola train` / `hola eval` on real English text.
#   usage: scripts/fetch_python_docs.sh [CACHE_DIR]   (default: $HOLA_DATA_DIR or ~/.cache/hola-dsl/data)
# Result: CACHE_DIR/python3.11-doc/usr/share/doc/python3.11/html/_sources/**/*.rst.txt
# Needs apt-get and dpkg-deb (Debian/Ubuntu); run `apt-get update` first on a fresh machine.
set -euo pipefail
PKG=python3.11-doc
CACHE=${1:-${HOLA_DATA_DIR:-$HOME/.cache/hola-dsl/data}}
DEST="$CACHE/$PKG"
SOURCES="$DEST/usr/share/doc/python3.11/html/_sources"
if [ -d "$SOURCES" ] && [ -n "$(ls -A "$SOURCES")" ]; then
    echo "fetch_python_docs: already present: $SOURCES"
    exit 0
fi
mkdir -p "$CACHE"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# apt-get download writes the .deb into the current directory and needs no root for that.
(cd "$WORK" && apt-get download "$PKG")
DEB=$(ls "$WORK"/"$PKG"_*.deb)
rm -rf "$DEST.partial"
dpkg-deb -x "$DEB" "$DEST.partial"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "fetch_python_docs: $(find "$SOURCES" -name '*.rst.txt' | wc -l) reST files in $SOURCES"
