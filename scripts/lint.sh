#!/usr/bin/env bash
# Lint and format checks, as CI runs them: biome (TypeScript and JavaScript: lint rules and format),
# no line over 140 columns in lib/, clang-format over native/, and the examples type-check.
set -euo pipefail
cd "$(dirname "$0")/.."
npx biome ci --reporter=github .
long=$(grep -rnE '^.{141,}$' lib --include='*.ts' || true)
if [ -n "$long" ]; then
  echo "lines over 140 columns in lib/:" >&2
  echo "$long" | cut -c1-200 >&2
  exit 1
fi
bash scripts/lint-cpp.sh
npx tsc -p examples/tsconfig.json --noEmit
echo "lint: ok"
