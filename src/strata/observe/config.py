"""Config models of the usage ledger, its crash journal and the audit log. (Tracing's lives in ``observe.tracing``.)"""

from __future__ import annotations

from pydantic import Field, SecretStr

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


class AuditSettings(Strict):
    """The hash-chained audit log (``observe.audit``)."""

    hmac_key: SecretStr | None = Field(None, description="Seal each audit entry with HMAC-SHA256 under this key "
                                       "(STRATA_AUDIT__HMAC_KEY), so a database writer without it cannot "
                                       "recompute the chain; the CLI needs it too to change keys")
