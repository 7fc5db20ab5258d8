"""Clinical named-entity recognition: char-CNN + BiLSTM + CRF in Keras 3, served by TF Serving."""

__version__ = "0.4.0"
__all__ = ["ClinicalNER", "Entity", "__version__"]


def __getattr__(name: str):
    # Lazy, so that light modules (text, formats, the gRPC client's protos)
    # do not pay for importing TensorFlow and Keras through the package.
    if name == "ClinicalNER":
        from clinical_ner.annotators.keras_annotator import ClinicalNER

        return ClinicalNER
    if name == "Entity":
        from clinical_ner.text.document import Entity

        return Entity
    raise AttributeError(f"module 'clinical_ner' has no attribute {name!r}")
