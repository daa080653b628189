// Strongest incoming connections of one neuron, by absolute weight.
// Parameters: $model, $id (the neuron id), $limit (how many), e.g.
//   :param {model: 'vgg16', id: 123456, limit: 10}
// Max-pooling edges all weigh 1.0 (the neuron takes the max of its window).
MATCH (n:Neuron {model: $model, id: $id})<-[r:CONNECTS]-(s:Neuron)
RETURN s.id AS source, s.layer AS layer, s.h AS h, s.w AS w, s.c AS c,
       r.weight AS weight, r.kind AS kind
ORDER BY abs(r.weight) DESC, source
LIMIT $limit
