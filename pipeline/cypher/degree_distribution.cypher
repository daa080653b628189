// Degree distribution per layer: how many neurons have each (in-degree, out-degree) pair.
// Parameters: $model, e.g.  :param model => 'vgg16'
// Degrees come from the store's counts (no relationship scan). Border neurons of 'same'
// convolutions have smaller in-degrees; neurons of the last layer have out-degree 0.
MATCH (n:Neuron {model: $model})
WITH n.layer AS layer, COUNT { (n)<-[:CONNECTS]-() } AS in_degree,
     COUNT { (n)-[:CONNECTS]->() } AS out_degree
RETURN layer, in_degree, out_degree, count(*) AS neurons
ORDER BY layer, in_degree, out_degree
