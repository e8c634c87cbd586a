#!/usr/bin/env bash
# Re-vendor the dashboard's chart library (uPlot, MIT) from npm into reports/dashboard/static/vendor/:
# the minified IIFE build, its CSS, its LICENSE and a VERSION file. No build step, no CDN: the
# dashboard must work offline. Usage: deploy/vendor-charts.sh [VERSION]  (default: the pinned one)
set -euo pipefail
VERSION="${1:-1.6.32}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/reports/dashboard/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "uplot@$VERSION" > /dev/null)
tar -xzf "$WORK"/uplot-*.tgz -C "$WORK"
mkdir -p "$DEST"
cp "$WORK/package/dist/uPlot.iife.min.js" "$DEST/uPlot.iife.min.js"
cp "$WORK/package/dist/uPlot.min.css" "$DEST/uPlot.min.css"
cp "$WORK/package/LICENSE" "$DEST/uPlot.LICENSE"
printf 'uplot %s (npm: https://www.npmjs.com/package/uplot, MIT)\n' "$VERSION" > "$DEST/VERSION"
echo "vendored uPlot $VERSION into $DEST"
