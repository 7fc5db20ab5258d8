"""Corpus readers and writers: CoNLL, i2b2/VA 2010 concepts, brat standoff.

Every reader returns a :class:`Corpus`. Conventions shared by all of them:

* Files are UTF-8. A UTF-8 byte-order mark is accepted and stripped, so
  offsets (brat) count code points after it. Anything that is not UTF-8
  (Latin-1, UTF-16 with or without BOM) raises :class:`DataFormatError`
  with the line and byte offset of the first bad byte; a NUL byte counts
  as not UTF-8, since that is how UTF-16 without a BOM decodes.
* Errors name the file, the line and the problem, never the clinical text.
* ``skip_invalid=False`` stops at the first problem. With ``True`` the
  reader skips the smallest unit that is wrong (a CoNLL sentence, an i2b2
  concept line, a brat annotation, a document whose partner file is
  missing or unreadable) and lists each problem in ``Corpus.skipped``.
  Nothing is dropped silently: what cannot be represented is an error or
  is listed in ``skipped``.
"""
from clinical_ner.formats.corpus import Corpus
from clinical_ner.formats.readers import FORMATS, detect_format, load_corpus

__all__ = ["Corpus", "FORMATS", "detect_format", "load_corpus"]
