// Weight statistics per layer (of the target neurons) and edge kind.
// Parameters: $model, e.g.  :param model => 'vgg16'
// Scans every relationship of the model: minutes for hundreds of millions of edges.
MATCH (l:Layer {model: $model})
CALL (l) {
  MATCH (:Neuron)-[r:CONNECTS]->(n:Neuron {model: l.model, layer: l.name})
  RETURN r.kind AS kind, count(r) AS edges, min(r.weight) AS min, max(r.weight) AS max,
         avg(r.weight) AS mean, stDevP(r.weight) AS std, avg(abs(r.weight)) AS mean_abs
}
RETURN l.index AS index, l.name AS layer, kind, edges, min, max, mean, std, mean_abs
ORDER BY index, kind
