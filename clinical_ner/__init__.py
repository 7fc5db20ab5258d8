"""Clinical named-entity recognition: char-CNN + BiLSTM + CRF in Keras 3, served by TF Serving.

``ClinicalNER.load(path)`` annotates with any model artifact (see
:mod:`clinical_ner.annotators.load`).
"""

from clinical_ner.version import __version__

__all__ = ["ClinicalNER", "Entity", "__version__"]


def __getattr__(name: str):
    # Lazy, so that light modules (text, formats, the gRPC client's protos)
    # do not pay for importing the annotators through the package.
    if name == "ClinicalNER":
        from clinical_ner.annotators.load import ClinicalNER

        return ClinicalNER
    if name == "Entity":
        from clinical_ner.text.document import Entity

        return Entity
    raise AttributeError(f"module 'clinical_ner' has no attribute {name!r}")
