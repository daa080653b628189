// Strength (weighted degree on |w|) per layer of a projected model graph: `in` is the sum of |w|
// into a neuron, `out` the sum of |w| out of it.
// Parameters: $graph (made by gds_project), e.g.  :param graph => 'vgg16'
// One row per layer and direction: neurons, mean, max and total strength.
CALL gds.degree.stream($graph, {relationshipWeightProperty: 'abs_weight', orientation: 'REVERSE'})
YIELD nodeId, score
RETURN gds.util.asNode(nodeId).layer AS layer, 'in' AS direction, count(*) AS neurons,
       avg(score) AS mean, max(score) AS max, sum(score) AS total
UNION ALL
CALL gds.degree.stream($graph, {relationshipWeightProperty: 'abs_weight', orientation: 'NATURAL'})
YIELD nodeId, score
RETURN gds.util.asNode(nodeId).layer AS layer, 'out' AS direction, count(*) AS neurons,
       avg(score) AS mean, max(score) AS max, sum(score) AS total
