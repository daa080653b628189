// Memory check to run before gds_project: the heap a projection of a model needs and what is free.
// Parameters: $model, e.g.  :param model => 'vgg16'
// needed_bytes is cnngraph's figure for a weighted projection (100 MiB, plus about 40 B per neuron
// and 18 B per relationship for weight and abs_weight, 26 B with the path cost); free_heap_bytes is what the
// server's heap can still give (gds.debug.sysInfo's availableHeapInBytes). Project only when needed_bytes < free_heap_bytes;
// otherwise select less (min_abs_weight) or give the server more heap (CNNGRAPH_NEO4J_HEAP).
MATCH (l:Layer {model: $model})
WITH sum(l.nodes) AS neurons, sum(l.edges) AS relationships
CALL gds.debug.sysInfo() YIELD key, value
WITH neurons, relationships, collect([key, value]) AS info
WITH neurons, relationships, [kv IN info WHERE kv[0] = 'availableHeapInBytes' | kv[1]][0] AS free,
     [kv IN info WHERE kv[0] = 'heapMaxInBytes' | kv[1]][0] AS max
RETURN neurons, relationships, 104857600 + 40 * neurons + 18 * relationships AS needed_bytes,
       104857600 + 40 * neurons + 26 * relationships AS needed_bytes_with_paths, free AS free_heap_bytes,
       max AS max_heap_bytes
