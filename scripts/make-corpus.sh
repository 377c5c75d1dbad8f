#!/usr/bin/env bash
# Rebuilds data/kjv.txt, gen's default corpus: the King James Version of Genesis through Ruth
# (public domain), as Debian's bible-kjv package prints it, without verse numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bible >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y bible-kjv
fi
COLUMNS=100000 bible -l100000 "Genesis 1:1-Ruth 4:22" \
  | sed -E 's/^ +[0-9]+ //' | sed '1{/^$/d}' > data/kjv.txt
wc -c data/kjv.txt
