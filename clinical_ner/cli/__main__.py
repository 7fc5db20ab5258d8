"""``python -m clinical_ner.cli`` is ``clinical-ner``."""
import sys

from clinical_ner.cli import main

sys.exit(main())
