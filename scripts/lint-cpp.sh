#!/usr/bin/env bash
# Checks that native/ (our C++: native/core and native/js; native/compat is vendored) is formatted as
# .clang-format says. Exit status 0 when it is; otherwise the differences are printed and it fails.
# Fix with: clang-format -i native/core/* native/js/*
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
  echo "lint-cpp: clang-format not found (Debian: apt-get install clang-format)" >&2
  exit 2
fi
mapfile -t files < <(find native/core native/js -type f \( -name '*.cc' -o -name '*.h' \) | sort)
clang-format --dry-run --Werror "${files[@]}"
echo "lint-cpp: ${#files[@]} files formatted as .clang-format says"
