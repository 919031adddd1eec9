#!/usr/bin/env bash
# mypy over the one import package `captcha_edge`, assembled from the four top-level folders the
# way pyproject's package_dir does it: a tree of symbolic links under build/typecheck, so that
# `from . import decoder` resolves without `type: ignore`. --strict for the runtime and the
# decoder (the parts users import on a device); the default checks for train/ and export/.
#
#   bash scripts/typecheck.sh            # what `make lint` runs
set -euo pipefail
cd "$(dirname "$0")/.."
MYPY=${MYPY:-$PWD/.venv/bin/mypy}
tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree/captcha_edge"
for f in runtime/*; do
  case "$(basename "$f")" in models|__pycache__) continue ;; esac
  ln -s "../../../$f" "$tree/captcha_edge/"
done
ln -s ../../../decoder_ext "$tree/captcha_edge/decoder"
ln -s ../../../train "$tree/captcha_edge/train"
ln -s ../../../export "$tree/captcha_edge/export"
cd "$tree"
"$MYPY" --config-file ../../pyproject.toml -p captcha_edge
