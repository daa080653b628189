// Strongest path between two neurons: the path of largest product of |w| (Dijkstra on the `cost`
// property, ln(top) - ln|w|, which gds_project_paths adds).
// Parameters: $graph, $model, $source, $target (neuron ids), e.g.
//   :param {graph: 'vgg16', model: 'vgg16', source: 10, target: 123456}
// Exact among paths with the same number of edges (every path between two neurons of a model
// without skip connections); `cnngraph analyze --target` gives the exact strongest path of any
// model. product is the path's |w| product, read from its relationships; no row when the target
// cannot be reached.
MATCH (a:Neuron {model: $model, id: $source}), (b:Neuron {model: $model, id: $target})
CALL gds.shortestPath.dijkstra.stream($graph, {sourceNode: a, targetNode: b,
                                               relationshipWeightProperty: 'cost'})
YIELD nodeIds
WITH gds.util.asNodes(nodeIds) AS path
UNWIND range(0, size(path) - 2) AS i
WITH path, i, path[i] AS x, path[i + 1] AS y
MATCH (x)-[r:CONNECTS]->(y)
WITH path, i, max(abs(r.weight)) AS w
ORDER BY i
WITH path, collect(w) AS weights
RETURN [n IN path | n.id] AS ids, [n IN path | n.layer] AS layers, weights,
       reduce(p = 1.0, w IN weights | p * w) AS product
