"""The hand-off parts of one instance: the policy, the store with its spool, the stage and the replayer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ragvigil.chat.handoff.policy import HandoffPolicy, RecentFromStore
from ragvigil.chat.handoff.spool import HandoffSpool
from ragvigil.chat.handoff.stage import HandOff
from ragvigil.chat.handoff.store import HandoffReplayer, HandoffStore
from ragvigil.chat.history import SessionHistory
from ragvigil.config import HandoffSettings
from ragvigil.storage.db import Database


@dataclass
class Handoffs:
    store: HandoffStore
    policy: HandoffPolicy
    stage: HandOff
    replayer: HandoffReplayer  # background: append to the runtime's background jobs


def build_handoffs(settings: HandoffSettings, db: Database, data_dir: Path, history: SessionHistory) -> Handoffs:
    store = HandoffStore(db, HandoffSpool(data_dir / "handoff_spool", settings.spool_max_entries))
    policy = HandoffPolicy(settings, RecentFromStore(history))
    return Handoffs(store, policy, HandOff(policy, store), HandoffReplayer(store))
