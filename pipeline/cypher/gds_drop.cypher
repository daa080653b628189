// Drop a GDS projection, freeing its heap (projections live until dropped or the server stops).
// Parameters: $graph, e.g.  :param graph => 'vgg16'
// Returns the dropped projection's name and size; no row when there was none of that name.
// `CALL gds.graph.list()` shows the projections that remain and the heap each holds.
CALL gds.graph.drop($graph, false) YIELD graphName, nodeCount, relationshipCount
RETURN graphName AS dropped, nodeCount AS nodes, relationshipCount AS relationships
