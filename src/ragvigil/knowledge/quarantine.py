"""Which documents are kept out of answers, and the gauge operators watch.

Why at ingest: a document whose mojibake repair lost characters would put "会å‘˜" and "�以在�年" into
answers. The loader measures what the repair left (``TextDamage``); a document that kept less than
``ingest.quarantine_below_recovered`` of its characters is stored and listed but never retrieved until
an operator releases it or a clean copy replaces it. A repaired document that lost nothing is served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from ragvigil.knowledge.catalog import Catalog
from ragvigil.knowledge.loaders import LoadedDocument
from ragvigil.storage.models import DocumentQuality

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    quality: str  # DocumentQuality
    reason: str | None  # why it is quarantined; None: served

    @property
    def quarantined(self) -> bool:
        return self.reason is not None


def judge(doc: LoadedDocument, quarantine_below: float) -> Verdict:
    """Quality of a loaded document, and whether its damage keeps it out of answers."""
    damage = doc.damage
    if damage is not None and damage.lost:
        reason = damage.describe() if damage.recovered_share < quarantine_below else None
        return Verdict(DocumentQuality.DAMAGED, reason)
    return Verdict(DocumentQuality.REPAIRED if doc.repaired else DocumentQuality.CLEAN, None)


def log_quarantined(kb: str, document_id: str, source: str, reason: str) -> None:
    """The operator's warning line: ids and the measured reason, never the document's text."""
    log.warning(
        "document_quarantined", extra={"kb": kb, "document_id": document_id, "source": source, "reason": reason}
    )


class QuarantineGauge:
    """Sets ``ragvigil_documents_quarantined`` for every knowledge base when an instance starts (a background job:
    the catalog keeps it current on every change it sees)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def start(self) -> None:
        try:
            self.catalog.publish_quarantined()
        except SQLAlchemyError:  # the database is down at start: the next change or index refresh sets it
            log.warning("quarantine_gauge_unavailable")

    def stop(self) -> None:
        """Nothing runs between start and stop."""
