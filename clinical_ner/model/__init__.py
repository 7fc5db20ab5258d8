"""The network: its layers, features, vocabularies and the inference graph built around it."""
