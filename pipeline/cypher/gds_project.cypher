// Project a model's neuron graph into GDS (a Cypher aggregation projection, held in the heap).
// Parameters: $model, $graph (a name for the projection), $min_abs_weight (null: every edge), e.g.
//   :param {model: 'vgg16', graph: 'vgg16', min_abs_weight: null}
// Run gds_memory first: a projection that does not fit the heap fails after minutes of work.
// Relationship properties: `weight` (signed, as extracted) and `abs_weight` = |weight|. GDS takes
// negative weights silently and returns nonsense, so every weighted algorithm here uses abs_weight.
// Every neuron is projected, also one whose edges are all below min_abs_weight (the second part of
// the union, cheap: it stops at a neuron's first kept out-edge). For gds_strongest_path, project
// with gds_project_paths instead.
CALL () {
  MATCH (s:Neuron {model: $model})-[r:CONNECTS]->(t)
  WHERE abs(r.weight) >= coalesce($min_abs_weight, 0.0)
  RETURN s, r, t
  UNION ALL
  MATCH (s:Neuron {model: $model})
  WHERE NOT EXISTS { (s)-[r:CONNECTS]->() WHERE abs(r.weight) >= coalesce($min_abs_weight, 0.0) }
  RETURN s, null AS r, null AS t
}
WITH gds.graph.project($graph, s, t, {relationshipProperties: {weight: r.weight, abs_weight: abs(r.weight)}}) AS g
RETURN g.graphName AS graph, g.nodeCount AS nodes, g.relationshipCount AS relationships,
       g.projectMillis AS millis
