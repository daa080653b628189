// Layer summary: every layer of a model in order, with its neurons and incoming connections.
// Parameters: $model (model name), e.g.  :param model => 'vgg16'
// Columns: index, layer, type, output_shape, params, inputs (layers feeding it), neurons,
// edges (CONNECTS whose target is in the layer). Flatten/Dropout own no neurons (they alias).
MATCH (l:Layer {model: $model})
CALL (l) {
  MATCH (n:Neuron {model: l.model, layer: l.name})
  RETURN count(n) AS neurons, sum(COUNT { (n)<-[:CONNECTS]-() }) AS edges
}
RETURN l.index AS index, l.name AS layer, l.type AS type, l.output_shape AS output_shape,
       l.params AS params, [(p:Layer)-[:FEEDS]->(l) | p.name] AS inputs, neurons, edges
ORDER BY index
