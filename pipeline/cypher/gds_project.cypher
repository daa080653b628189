// Project a model's neuron graph into GDS (a Cypher aggregation projection, held in the heap).
// Parameters: $model, $graph (a name for the projection), $min_abs_weight (null: every edge),
// $paths (true adds the `cost` property gds_strongest_path needs), e.g.
//   :param {model: 'vgg16', graph: 'vgg16', min_abs_weight: null, paths: false}
// Run gds_memory first: a projection that does not fit the heap fails after minutes of work.
// Relationship properties: `weight` (signed, as extracted) and `abs_weight` = |weight|. GDS takes
// negative weights silently and returns nonsense, so every weighted algorithm here uses abs_weight.
// With $paths, `cost` = ln(top) - ln|weight| (top: the model's largest |weight|), never negative,
// so Dijkstra's cheapest path is the path of largest |weight| product among paths of one length.
// Every neuron is projected, also one whose edges are all below min_abs_weight.
CALL () {
  MATCH (:Neuron {model: $model})-[r:CONNECTS]->()
  WHERE $paths
  RETURN coalesce(max(abs(r.weight)), 1.0) AS top
}
MATCH (s:Neuron {model: $model})
OPTIONAL MATCH (s)-[r:CONNECTS]->(t:Neuron)
WHERE abs(r.weight) >= coalesce($min_abs_weight, 0.0)
WITH s, t, r, top
WITH gds.graph.project($graph, s, t, {
  relationshipProperties: CASE WHEN $paths
    THEN {weight: r.weight, abs_weight: abs(r.weight),
          cost: CASE WHEN r.weight = 0 THEN 1.0e9 ELSE log(top) - log(abs(r.weight)) END}
    ELSE {weight: r.weight, abs_weight: abs(r.weight)} END
}) AS g
RETURN g.graphName AS graph, g.nodeCount AS nodes, g.relationshipCount AS relationships,
       g.projectMillis AS millis
