#!/usr/bin/env bash
# kube-score on the chart as `helm template` renders it, with every option that adds objects
# turned on: any CRITICAL finding not accepted in helm/kube-score-exceptions.txt fails.
# kube-score is built once from the Go module proxy and cached under /opt/loadlab-tools.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
version=v1.20.0
bin="${LOADLAB_TOOLS:-/opt/loadlab-tools}/kube-score/$version"

if [ ! -x "$bin/kube-score" ]; then
  # Go as the machine's own install puts it, when it is not on PATH.
  command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH="/usr/local/go/bin:$PATH"
  command -v go >/dev/null || { echo "chart-lint: go is needed to build kube-score" >&2; exit 1; }
  echo "chart-lint: building kube-score $version" >&2
  mkdir -p "$bin"
  GOBIN="$bin" go install "github.com/zegl/kube-score/cmd/kube-score@$version"
fi

flags=()
while read -r id _; do
  case "$id" in
    '' | '#'*) ;;
    container-cpu-limit) flags+=(--ignore-container-cpu-limit) ;;
    *) flags+=(--ignore-test "$id") ;;
  esac
done < "$repo/helm/kube-score-exceptions.txt"

rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT
helm template loadlab "$repo/helm/loadlab" --namespace lab \
  --set controller.tokenKey.existingSecret=loadlab-key --set apiToken.existingSecret=loadlab-api \
  --set readToken.existingSecret=loadlab-read \
  --set controller.replicas=2 > "$rendered"
if ! "$bin/kube-score" score "$rendered" --output-format ci "${flags[@]}" > "$rendered.out"; then
  grep -E '^\[CRITICAL\]' "$rendered.out" >&2 || cat "$rendered.out" >&2
  rm -f "$rendered.out"
  echo "chart-lint: kube-score found the above (fix it, or accept it in helm/kube-score-exceptions.txt with why)" >&2
  exit 1
fi
warnings="$(grep -c '^\[WARNING\]' "$rendered.out" || true)"
rm -f "$rendered.out"
echo "chart-lint: kube-score $version: no critical finding ($warnings warnings)"
