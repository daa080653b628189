#!/usr/bin/env bash
# The main job on a default that finishes in a few minutes on a 2-core machine.
# Everything goes under $OUT (default out/), including the demo's own Neo4j server
# ($OUT/home, Bolt on 127.0.0.1:7688, Browser on 7475), so a database of yours is never touched.
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export CNNGRAPH_HOME="$OUT/home" CNNGRAPH_NEO4J_PORT=${CNNGRAPH_NEO4J_PORT:-7688}
export CNNGRAPH_NEO4J_HTTP_PORT=${CNNGRAPH_NEO4J_HTTP_PORT:-7475}
unset NEO4J_URI NEO4J_USERNAME NEO4J_PASSWORD
MODEL=(vgg16 --input-shape 32,32,3 --no-top)
# The header, a marker for the rows left out, and the last N lines of a command's table.
head_tail() { local n=$1 file=$2; head -n 1 "$file"; echo "   ... ($(($(wc -l <"$file") - n - 1)) rows; all in $file)"; tail -n "$n" "$file"; }

echo "== 1. How big is VGG16? Exact counts of the full model at 224x224, nothing generated"
cnngraph plan vgg16 >"$OUT/plan.txt"
head_tail 6 "$OUT/plan.txt"
echo
echo "== 2. Extract VGG16 at 32x32 without the classifier (247 M edges) to Parquet"
cnngraph extract "${MODEL[@]}" --out "$OUT/vgg16-32"
echo
echo "== 3. Verify: replay the forward pass over the written edges against Keras"
cnngraph verify "$OUT/vgg16-32" --samples 1 >"$OUT/verify.txt"
head_tail 4 "$OUT/verify.txt"
echo
echo "== 4. Extract block 5 (12.6 M edges) and bulk-load it into Neo4j; counts are checked against the manifest"
cnngraph run "${MODEL[@]}" --layers block5_conv1:block5_pool --out "$OUT/vgg16-32-block5" \
    --mode bulk --replace --model-name vgg16_block5
echo
echo "== 5. A shipped Cypher query (cypher/layer_summary.cypher, by its name): the layer summary"
cnngraph cypher layer_summary -p model=vgg16_block5
echo
echo "== 6. Export the upstream cone of one block5_pool neuron from Neo4j to GraphML"
cnngraph export neo4j:vgg16_block5 --upstream-of block5_pool:0,0,7 --depth 3 --top-k-in 16 --out "$OUT/cone.graphml" --overwrite
echo
echo "== 7. The README's NetworkX analysis (straight from the model, no database)"
python - <<'PY'
import re
text = open("README.md").read().split("## A NetworkX analysis", 1)[1]
exec(re.search(r"```python\n(.*?)```", text, re.S).group(1))
PY
echo
echo "== 8. Graph Data Science in the database: project block 5 (|w| and signed w), PageRank on |w|"
cnngraph gds drop vgg16_block5 >/dev/null
cnngraph gds project vgg16_block5
cnngraph cypher gds_pagerank -p graph=vgg16_block5 --limit 5
echo
echo "== 9. The report: pictures of the graph, its weights, strength and the influence of every input pixel"
cnngraph report "${MODEL[@]}" --target block5_pool:0,0,7 --out "$OUT/report" -s
ID=$(cnngraph cypher 'MATCH (n:Neuron {model: $m, layer: "block5_conv3"}) RETURN min(n.id) AS id' -p m=vgg16_block5 | tail -n 1)
echo
cat <<MSG
Done. Where everything is:
  $OUT/vgg16-32            the whole graph as Parquet (nodes/, edges/, manifest.json)
  $OUT/vgg16-32-block5     block 5 as Parquet, loaded into Neo4j as model 'vgg16_block5'
  $OUT/cone.graphml        a neuron's upstream cone (networkx.read_graphml(path, node_type=int))
  $OUT/report/index.html   the report (open it in a browser: file://$OUT/report/index.html)
  $OUT/home/neo4j          the demo's Neo4j server (still running, with GDS projection 'vgg16_block5')
Neo4j Browser: $(cnngraph neo4j status | sed -n 's/^browser: //p')  (user neo4j, password: cnngraph neo4j env)
  paste  :param {model: 'vgg16_block5', graph: 'vgg16_block5'}  then the text of cypher/gds_pagerank.cypher
Query it:
  export CNNGRAPH_HOME=$OUT/home CNNGRAPH_NEO4J_PORT=$CNNGRAPH_NEO4J_PORT
  eval "\$(cnngraph neo4j env)"      # NEO4J_URI, NEO4J_USERNAME, NEO4J_PASSWORD for any client
  cnngraph cypher cypher/strongest_incoming.cypher -p model=vgg16_block5 -p id=$ID -p limit=5
  cnngraph neo4j stop               # when done
Disk: $(du -sh "$OUT" | cut -f1) under $OUT; remove it all with: (the server above stopped) rm -rf $OUT
MSG
