#!/usr/bin/env bash
# Vendor uPlot from npm: download the given version's package with npm, check the tarball against
# the integrity (sha512) the npm registry publishes for it, and copy its minified IIFE build, its
# CSS and its LICENSE here. With --check, only verify that the files here are that version's.
# Usage: bash serving/api/static/vendor/refresh-uplot.sh [--check] VERSION   (e.g. 1.6.32)
# Afterwards (not --check): update the version and the sha256 lines in README.md here, and run
# the browser tests (pytest tests/system/test_browser.py).
set -euo pipefail

check=false
if [ "${1:-}" = "--check" ]; then
    check=true
    shift
fi
version=${1:?usage: refresh-uplot.sh [--check] VERSION}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "npm is not installed" >&2; exit 1; }
(cd "$work" && npm pack --silent "uplot@$version" >/dev/null)
tarball="$work/uplot-$version.tgz"
[ -f "$tarball" ] || { echo "npm pack did not produce $tarball" >&2; exit 1; }

expected=$(npm view "uplot@$version" dist.integrity)
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$expected" != "$actual" ]; then
    echo "uplot@$version: the tarball's integrity $actual is not the registry's $expected" >&2
    exit 1
fi
echo "uplot@$version: tarball integrity matches the registry ($expected)"

tar -xzf "$tarball" -C "$work"
files=(dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE)
status=0
for file in "${files[@]}"; do
    name=$(basename "$file")
    if $check; then
        if cmp -s "$work/package/$file" "$here/$name"; then
            echo "ok       $name"
        else
            echo "DIFFERS  $name (not uplot@$version's)" >&2
            status=1
        fi
    else
        cp "$work/package/$file" "$here/$name"
        echo "copied   $name"
    fi
done
(cd "$here" && sha256sum uPlot.iife.min.js uPlot.min.css LICENSE)
exit $status
