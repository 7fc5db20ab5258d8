"""The ``[vectors]`` extra's packages (gensim, tqdm), imported when first needed."""
from __future__ import annotations

import importlib

from clinical_ner.errors import ClinicalNERError


class MissingExtraError(ClinicalNERError):
    """An optional dependency is not installed."""


def require_extra(module: str):
    """The module ``module``; :class:`MissingExtraError` naming the extra when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{module} is not installed; install the extra: pip install 'clinical-ner[vectors]'"
        ) from None


def progress_bar(total: int, description: str, unit: str, enabled: bool, **options):
    r"""A tqdm bar counting to ``total`` ``unit``\ s, or None when not ``enabled``."""
    if not enabled:
        return None
    tqdm = require_extra("tqdm")
    return tqdm.tqdm(total=total, desc=description, unit=unit, unit_scale=True,
                     dynamic_ncols=True, **options)
