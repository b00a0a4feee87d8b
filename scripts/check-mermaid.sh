#!/usr/bin/env bash
# Renders every ```mermaid block of the Markdown files given (default: README.md and
# shell-tokio/README.md) with the real mermaid library in headless Chromium, as GitHub
# does, and fails if a diagram does not render (a syntax error shows on GitHub as an
# error box instead of the diagram). Needs chromium (Debian package) and npm (installed
# with apt when missing and root); mermaid
# is fetched once from the npm registry into target/mermaid (pinned version).
# scripts/test-all.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
MERMAID_VERSION=11.17.2
files=("$@")
[ "${#files[@]}" -gt 0 ] || files=(README.md shell-tokio/README.md)

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "check-mermaid.sh: chromium is missing (apt-get install chromium)" >&2
  exit 1
fi
dir=target/mermaid
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "check-mermaid.sh: npm is missing (apt-get install npm)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
if [ ! -f "$dir/node_modules/mermaid/dist/mermaid.min.js" ]; then
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --silent "mermaid@$MERMAID_VERSION" >/dev/null
fi

page="$dir/diagrams.html"
count=$(python3 - "$page" "${files[@]}" <<'PY'
import html, re, sys
page, files = sys.argv[1], sys.argv[2:]
blocks = []
for f in files:
    text = open(f, encoding="utf-8").read()
    for i, b in enumerate(re.findall(r"```mermaid\n(.*?)```", text, re.S)):
        blocks.append((f"{f} #{i + 1}", b))
divs = "\n".join(
    f'<pre class="mermaid" data-name="{html.escape(n)}">{html.escape(b)}</pre>' for n, b in blocks
)
open(page, "w", encoding="utf-8").write(f"""<!doctype html><html><body>{divs}
<script src="node_modules/mermaid/dist/mermaid.min.js"></script>
<script>
mermaid.initialize({{ startOnLoad: false }});
mermaid.run({{ querySelector: "pre.mermaid", suppressErrors: false }})
  .then(() => {{ document.title = "RENDERED " + document.querySelectorAll("pre.mermaid svg").length; }})
  .catch(e => {{ document.title = "ERROR " + String(e.message || e).split("\\n")[0]; }});
</script></body></html>""")
print(len(blocks))
PY
)
out=$(timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --allow-file-access-from-files --virtual-time-budget=10000 \
  --dump-dom "file://$PWD/$page" 2>/dev/null)
title=$(grep -o '<title>[^<]*</title>' <<<"$out" | sed 's/<[^>]*>//g' || true)
if [ "$title" != "RENDERED $count" ] || grep -q "Syntax error" <<<"$out"; then
  echo "check-mermaid.sh: the diagrams in ${files[*]} do not all render: ${title:-no result} (of $count)" >&2
  exit 1
fi
echo "check-mermaid.sh: $count mermaid diagrams render (mermaid $MERMAID_VERSION)"
