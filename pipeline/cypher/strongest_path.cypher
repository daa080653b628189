// Path of largest absolute weight product between two neurons (up to 6 connections).
// Parameters: $model, $source, $target (neuron ids), e.g.
//   :param {model: 'vgg16', source: 10, target: 123456}
// Enumerates every path, so keep the two neurons a few layers apart (the number of paths
// grows with the product of the fan-ins). Returns no row when no path exists.
MATCH p = (a:Neuron {model: $model, id: $source})-[:CONNECTS*1..6]->(b:Neuron {model: $model, id: $target})
WITH p, reduce(x = 1.0, r IN relationships(p) | x * abs(r.weight)) AS strength
RETURN [n IN nodes(p) | n.id] AS ids, [n IN nodes(p) | n.layer] AS layers,
       [r IN relationships(p) | r.weight] AS weights, strength
ORDER BY strength DESC
LIMIT 1
