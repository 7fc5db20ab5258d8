"""Word vectors: reading pretrained files, and training new ones on unlabeled notes."""
