"""Config models of the usage ledger and its crash journal. (Tracing's lives in ``observe.tracing``.)"""

from __future__ import annotations

from pydantic import Field

from strata.config.base import Strict


class JournalSettings(Strict):
    """Each ledger row is appended to a local file before its response ends, replayed after a crash."""

    enabled: bool = True
    fsync_interval: float = Field(1.0, gt=0, description="Seconds between fsyncs of the journal (a process "
                                  "crash needs none; a machine crash can take this window)")
    segment_bytes: int = Field(4 * 1024 * 1024, ge=4096, description="Start a new journal file at this size; "
                               "files whose rows are all in the database are deleted")
    adopt_interval: float = Field(30.0, gt=0, description="Seconds between looks for journals of dead processes "
                                  "that shared the data dir (a start always replays them)")


class LedgerSettings(Strict):
    flush_interval: float = Field(0.25, gt=0, description="Seconds between batched ledger writes")
    batch_size: int = Field(1000, ge=1)
    journal: JournalSettings = JournalSettings()
