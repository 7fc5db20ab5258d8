"""Clinical named-entity recognition: char-CNN + BiLSTM + CRF in Keras 3."""

__version__ = "0.1.0"
