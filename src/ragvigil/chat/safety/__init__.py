"""The safety check of a turn and of an answer: normalisation, a lexicon of terms and patterns, probes
over the turn's e5 embedding, combined by one documented rule (``checker``), and the responses.

Public face: ``SafetyChecker`` (the ``SafetyCheck`` of ``chat.understanding``), ``load_lexicon`` /
``LexiconError`` for validating a lexicon file, ``load_resources`` for the responses.
"""

from .checker import SafetyChecker, Thresholds, combine
from .lexicon import DEFAULT_LEXICON, Lexicon, LexiconError, load_lexicon, reload_lexicon
from .normalize import Normalized, normalize
from .responses import DEFAULT_RESOURCES, Resources, ResourcesError, load_resources

__all__ = [
    "DEFAULT_LEXICON",
    "DEFAULT_RESOURCES",
    "Lexicon",
    "LexiconError",
    "Normalized",
    "Resources",
    "ResourcesError",
    "SafetyChecker",
    "Thresholds",
    "combine",
    "load_lexicon",
    "load_resources",
    "normalize",
    "reload_lexicon",
]
