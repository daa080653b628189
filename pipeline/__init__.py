"""cnngraph: exact neuron-level graphs of Keras CNNs, for Neo4j, NetworkX and GraphML."""

__version__ = "0.1.0"
