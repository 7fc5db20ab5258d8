"""Scoring models on gold data, and the model cards that report the scores."""
