#!/usr/bin/env bash
# Fetch the authors' reference code used by the generators (never committed) into $REFGEN_THIRDPARTY
# (default ~/refgen-thirdparty/<owner>+<repo>), pinned to the commits the fixtures were made with.
set -euo pipefail
DEST="${REFGEN_THIRDPARTY:-$HOME/refgen-thirdparty}"
mkdir -p "$DEST"
while read -r repo commit; do
  dir="$DEST/${repo/\//+}"
  [ -d "$dir" ] && continue
  git clone -q "https://github.com/$repo" "$dir"
  git -C "$dir" checkout -q "$commit"
done <<'LIST'
zichongli5/NorMuon d45c9a4280d758e2cf0b2b8333765d040e953937
KellerJordan/Muon 857d1adc159e098212f828d927460782d3da59e9
kyleliang919/C-Optim 2c0517c4db2e50b56d389ba4803eab1f4b3b8ae3
AGI-Arena/MARS 4831e28eba863a4e69d7e9474ff8e73bc1b410fe
sail-sg/Adan 2c65beaf400775753b155da4082c3819fea689b9
iShohei220/adopt 6468572b4b3688a2f056b796b071da540568520e
evanatyourservice/kron_torch 884427c32bc45e8293e20c26c85e4ccc4f68c9d1
facebookresearch/optimizers f60660661194de26d3ee78bae6d15820ff8e583d
microsoft/dion 0a059a4542e5aa74b40dcd1dce363836c7afcd48
LIST
