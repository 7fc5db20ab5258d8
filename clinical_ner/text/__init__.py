"""Texts and their annotations: documents, the tokenizer (in Python and in the graph), tag schemes."""
