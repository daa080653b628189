// Louvain communities of a projected model graph on |w|: how many there are and which layers
// each largest one spans.
// Parameters: $graph (made by gds_project), e.g.  :param graph => 'vgg16'
// Louvain treats the relationships as given (directed here) and maximises weighted modularity;
// every neuron gets a community. Shows the 20 largest communities.
CALL gds.louvain.stream($graph, {relationshipWeightProperty: 'abs_weight'})
YIELD nodeId, communityId
WITH communityId, collect(DISTINCT gds.util.asNode(nodeId).layer) AS layers, count(*) AS neurons
RETURN communityId AS community, neurons, layers
ORDER BY neurons DESC
LIMIT 20
