"""Intent per user turn: an intents file (``RAGVIGIL_INTENTS_FILE``, else the shipped customer-service
defaults) classified in the e5 space of the turn's query embedding.

The public face: ``build_intent_classifier(settings, embedder)`` for the composition root,
``ExampleIntentClassifier`` (``classify``, ``reload``, ``reply_for``), and the file's validation
(``load_file``, ``IntentFileError``: every problem with its location).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragvigil.chat.intent.classifier import ExampleIntentClassifier
from ragvigil.chat.intent.spec import DEFAULT_FILE, IntentFileError, IntentSet, IntentSpec, Limits, load_file, parse
from ragvigil.chat.intent.vectors import ExampleVectors, QueryEmbedder

if TYPE_CHECKING:
    from ragvigil.config import Settings

__all__ = [
    "DEFAULT_FILE",
    "ExampleIntentClassifier",
    "ExampleVectors",
    "IntentFileError",
    "IntentSet",
    "IntentSpec",
    "Limits",
    "build_intent_classifier",
    "load_file",
    "parse",
]

CACHE_NAME = "intent_vectors.npz"


def build_intent_classifier(settings: Settings, embedder: QueryEmbedder | None) -> ExampleIntentClassifier:
    """The classifier of ``settings.intents_file`` (else the defaults), its example vectors under the data dir."""
    path = settings.intents_file or DEFAULT_FILE
    return ExampleIntentClassifier(load_file(path), embedder, settings.data_dir / "cache" / CACHE_NAME)
