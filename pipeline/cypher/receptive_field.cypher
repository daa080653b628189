// Receptive field: every neuron upstream of one neuron within $depth connections (1-6),
// with its distance (fewest connections to the neuron). Cypher cannot take a variable-length
// bound as a parameter, so the search expands one frontier per step, each step guarded by $depth.
// Parameters: $model, $id, $depth, e.g.  :param {model: 'vgg16', id: 123456, depth: 2}
MATCH (n:Neuron {model: $model, id: $id})
WITH [n] AS f0
CALL (f0) { UNWIND f0 AS f MATCH (s:Neuron)-[:CONNECTS]->(f) WHERE $depth >= 1
            RETURN collect(DISTINCT s) AS f1 }
CALL (f1) { UNWIND f1 AS f MATCH (s:Neuron)-[:CONNECTS]->(f) WHERE $depth >= 2
            RETURN collect(DISTINCT s) AS f2 }
CALL (f2) { UNWIND f2 AS f MATCH (s:Neuron)-[:CONNECTS]->(f) WHERE $depth >= 3
            RETURN collect(DISTINCT s) AS f3 }
CALL (f3) { UNWIND f3 AS f MATCH (s:Neuron)-[:CONNECTS]->(f) WHERE $depth >= 4
            RETURN collect(DISTINCT s) AS f4 }
CALL (f4) { UNWIND f4 AS f MATCH (s:Neuron)-[:CONNECTS]->(f) WHERE $depth >= 5
            RETURN collect(DISTINCT s) AS f5 }
CALL (f5) { UNWIND f5 AS f MATCH (s:Neuron)-[:CONNECTS]->(f) WHERE $depth >= 6
            RETURN collect(DISTINCT s) AS f6 }
UNWIND [[1, f1], [2, f2], [3, f3], [4, f4], [5, f5], [6, f6]] AS level
UNWIND level[1] AS s
WITH s, min(level[0]) AS distance
RETURN s.id AS id, s.layer AS layer, s.h AS h, s.w AS w, s.c AS c, distance
ORDER BY distance, id
