#!/usr/bin/env bash
# Refresh the copy of MathJax 3 that the site ships in book/_static/mathjax, so formulas typeset
# without internet (Sphinx would otherwise load MathJax from a CDN). Needs npm; run it only to
# change the version: the copy is committed, so building the book needs neither npm nor internet.
#
# Kept: es5/tex-chtml.js (TeX input, HTML output, menu), the woff-v2 fonts it loads, and the TeX
# extensions it autoloads (\boldsymbol, \cancel, ...). Left out: the MathML/SVG builds, the speech
# engine and the other font formats (about 22 MB that no page of the book loads).
set -euo pipefail
VERSION=3.2.2
cd "$(dirname "$0")/.."
target=book/_static/mathjax
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "mathjax@$VERSION" >/dev/null && tar xzf "mathjax-$VERSION.tgz")
rm -rf "$target"
mkdir -p "$target/output/chtml/fonts" "$target/input/tex"
cp "$work/package/es5/tex-chtml.js" "$target/"
cp -r "$work/package/es5/output/chtml/fonts/woff-v2" "$target/output/chtml/fonts/"
cp -r "$work/package/es5/input/tex/extensions" "$target/input/tex/"
cp "$work/package/LICENSE" "$target/LICENSE"
echo "MathJax $VERSION (npm package mathjax, es5 build), trimmed by tools/vendor_mathjax.sh" \
  > "$target/VERSION"
du -sh "$target"
