#!/usr/bin/env bash
# Put the ipywidgets HTML manager, RequireJS and MathJax into _vendor/ (served from the site's _static/), so that
# widgets and equations render on the built pages with no internet. Fetched once from the npm registry at pinned
# versions; not committed (about 6 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
HTML_MANAGER=1.0.15   # @jupyter-widgets/html-manager 1.0.x pairs with ipywidgets 8.1
REQUIREJS=2.3.8
MATHJAX=3.2.2
dest=_vendor
want="html-manager $HTML_MANAGER, requirejs $REQUIREJS, mathjax $MATHJAX"
if [ "$(cat "$dest/VERSIONS" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is needed once to fetch the page JavaScript (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@jupyter-widgets/html-manager@$HTML_MANAGER" "requirejs@$REQUIREJS" \
   "mathjax@$MATHJAX" >/dev/null 2>&1)
for pkg in html-manager requirejs mathjax; do
  mkdir -p "$tmp/$pkg" && tar xzf "$tmp"/*"$pkg"-*.tgz -C "$tmp/$pkg"
done
rm -rf "$dest" && mkdir -p "$dest/mathjax/output/chtml/fonts"
cp "$tmp/html-manager/package/dist/embed-amd.js" "$dest/embed-amd.js"
cp "$tmp/requirejs/package/require.js" "$dest/require.min.js"
cp "$tmp/mathjax/package/es5/tex-mml-chtml.js" "$dest/mathjax/"
cp -r "$tmp/mathjax/package/es5/output/chtml/fonts/woff-v2" "$dest/mathjax/output/chtml/fonts/"
echo "$want" > "$dest/VERSIONS"
echo "page JavaScript vendored into $dest/ ($want)"
