"""``python -m clinical_ner`` is ``clinical-ner`` (as ``python -m clinical_ner.cli``).

The command line's entry point, not a library module: nothing imports it.
"""
import sys

from clinical_ner.cli import main

sys.exit(main())
