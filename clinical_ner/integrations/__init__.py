"""Bridges from clinical-ner to other libraries' pipelines, each behind its own extra.

Nothing here is imported by the rest of the package: a module of this
package imports its library (``spacy_component``: spaCy, ``pip install
"clinical-ner[spacy]"``) and is loaded by that library, through the entry
point the extra declares.
"""
