#!/usr/bin/env bash
# Does BPE help? Trains a character-level and a BPE (1024 tokens) model of the same shape on
# the first 90% of data/kjv.txt for the same wall time, and reports bits per byte of each on
# the held-out last 10% (gen eval; bits per byte makes the two tokenizations comparable).
# Usage: scripts/compare-tokenizers.sh [SECONDS]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-60}
swift build -c release >/dev/null
gen=.build/release/gen
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" <<'PY'
import sys
text = open("data/kjv.txt", encoding="utf-8").read()
cut = text.rindex("\n", 0, int(len(text) * 0.9)) + 1
open(sys.argv[1] + "/train.txt", "w", encoding="utf-8").write(text[:cut])
open(sys.argv[1] + "/heldout.txt", "w", encoding="utf-8").write(text[cut:])
PY
shape="--layers 4 --heads 4 --embd 128 --context 64 --batch 12"
for tok in char bpe; do
  extra=""; [ $tok = bpe ] && extra="--vocab-size 1024"
  # Steps for the time budget, from the measured speed of this shape and vocabulary.
  vocab=$([ $tok = bpe ] && echo 1024 || echo 80)
  ms=$($gen bench $shape --vocab $vocab --steps 30 --json | python3 -c "import json,sys; print(json.load(sys.stdin)['ms_per_step'])")
  steps=$(python3 -c "print(int($budget * 1000 / $ms))")
  start=$(date +%s.%N)
  $gen train $tmp/train.txt --tokenizer $tok $extra $shape --steps $steps --warmup 100 --val-fraction 0.05 \
      --out $tmp/$tok.safetensors --quiet
  end=$(date +%s.%N)
  result=$($gen eval --from $tmp/$tok.safetensors $tmp/heldout.txt --json)
  python3 -c "
import json; r = json.loads('$result')
print(f'$tok: {$steps} steps in {$end - $start:.0f} s, held-out {r[\"bits_per_byte\"]:.4f} bits/byte ({r[\"loss\"]:.4f} nats/token over {r[\"tokens\"]} tokens)')"
done
