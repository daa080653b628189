// cnngraph schema: constraints and indexes (Neo4j 5.26 Community).
// The loaders apply exactly these statements (pipeline/neo4j/db.py reads this file's
// statements from SCHEMA_STATEMENTS; tests check both agree). Run them once in Neo4j Browser
// to prepare an empty database by hand. Every statement is idempotent (IF NOT EXISTS).
// Community has no NODE KEY constraints; a composite uniqueness constraint gives the same
// lookups (its backing range index serves MATCH (n:Neuron {model: $model, id: $id})).

// One node per model name.
CREATE CONSTRAINT model_name IF NOT EXISTS FOR (m:Model) REQUIRE m.name IS UNIQUE;

// A layer is unique within its model.
CREATE CONSTRAINT layer_key IF NOT EXISTS FOR (l:Layer) REQUIRE (l.model, l.name) IS UNIQUE;

// A neuron id is unique within its model; models reuse ids.
CREATE CONSTRAINT neuron_key IF NOT EXISTS FOR (n:Neuron) REQUIRE (n.model, n.id) IS UNIQUE;

// All neurons of one layer of one model.
CREATE INDEX neuron_layer IF NOT EXISTS FOR (n:Neuron) ON (n.model, n.layer);

// Resumable online loads keep their checkpoint here (deleted when a load completes).
CREATE CONSTRAINT load_state IF NOT EXISTS FOR (s:LoadState) REQUIRE s.model IS UNIQUE;
