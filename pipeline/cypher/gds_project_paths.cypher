// Project a model's neuron graph into GDS with the path cost gds_strongest_path needs.
// Parameters: $model, $graph (a name for the projection), $min_abs_weight (null: every edge), e.g.
//   :param {model: 'vgg16', graph: 'vgg16', min_abs_weight: null}
// As gds_project (weight, abs_weight; run gds_memory first: +8 B per relationship here), plus
// `cost` = ln(top) - ln|weight| (top: the model's largest |weight|, found by a first scan), never
// negative, so Dijkstra's cheapest path is the path of largest |weight| product among paths of
// one length.
CALL () {
  MATCH (:Neuron {model: $model})-[r:CONNECTS]->()
  RETURN coalesce(max(abs(r.weight)), 1.0) AS top
}
CALL () {
  MATCH (s:Neuron {model: $model})-[r:CONNECTS]->(t)
  WHERE abs(r.weight) >= coalesce($min_abs_weight, 0.0)
  RETURN s, r, t
  UNION ALL
  MATCH (s:Neuron {model: $model})
  WHERE NOT EXISTS { (s)-[r:CONNECTS]->() WHERE abs(r.weight) >= coalesce($min_abs_weight, 0.0) }
  RETURN s, null AS r, null AS t
}
WITH gds.graph.project($graph, s, t, {relationshipProperties: {weight: r.weight, abs_weight: abs(r.weight),
  cost: CASE WHEN r.weight = 0 THEN 1.0e9 ELSE log(top) - log(abs(r.weight)) END}}) AS g
RETURN g.graphName AS graph, g.nodeCount AS nodes, g.relationshipCount AS relationships,
       g.projectMillis AS millis
