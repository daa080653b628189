"""Layer translators, one module per family, behind a registry keyed by Keras class name."""
