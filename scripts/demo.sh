#!/usr/bin/env bash
# The main job on a default that finishes in a few minutes on a 2-core machine.
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
echo "== 1. How big is VGG16? (exact counts, nothing generated)"
cnngraph plan vgg16 | tail -n 6
echo
echo "== 2. Extract VGG16 at 32x32 without the classifier (247 M edges) to Parquet"
cnngraph extract vgg16 --input-shape 32,32,3 --no-top --out "$OUT/vgg16-32"
echo
echo "== 3. Verify: replay the forward pass over the written edges against Keras"
cnngraph verify "$OUT/vgg16-32" --samples 1
echo
echo "Done. The graph is in $OUT/vgg16-32 (nodes/ and edges/ are Parquet datasets; manifest.json has the counts)."
echo "Read it with: python -c \"import pyarrow.dataset as ds; print(ds.dataset('$OUT/vgg16-32/edges').head(5))\""
