// PageRank of a projected model graph on |w|: the neurons with the highest scores.
// Parameters: $graph (made by gds_project), e.g.  :param graph => 'vgg16'
// GDS's formula: PR(v) = (1 - d) + d * sum over u->v of PR(u) * |w(u,v)| / out_strength(u),
// d = 0.85; scores are not normalised (a neuron without inputs scores 0.15). Signed weights would
// give nonsense (negative scores), hence abs_weight. Community GDS runs at most 4 threads.
CALL gds.pageRank.stream($graph, {relationshipWeightProperty: 'abs_weight', dampingFactor: 0.85,
                                  maxIterations: 100, tolerance: 1.0e-9})
YIELD nodeId, score
WITH gds.util.asNode(nodeId) AS n, score
RETURN n.id AS id, n.layer AS layer, n.h AS h, n.w AS w, n.c AS c, score
ORDER BY score DESC
LIMIT 25
