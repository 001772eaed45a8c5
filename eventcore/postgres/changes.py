"""Change announcements for a PostgreSQL store: LISTEN/NOTIFY.

Every append transaction of the event store, and every projector transaction of the read store,
calls `pg_notify('eventcore_changes', position)` before it commits; PostgreSQL
delivers the notification to every listening session when (and only if) the transaction commits,
in commit order. One thread per process holds a LISTEN connection and announces each notification
on the hub. A lost connection is opened again (every second while the server is away), and the
first announcement after a reconnect is unconditional, since notifications sent meanwhile are lost.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from eventcore.changes import ChangeSource
from eventcore.postgres.connection import CHANGES_CHANNEL, connect, describe, redact

log = logging.getLogger(__name__)


class PostgresChanges(ChangeSource):
    """Announces each commit of the store at `url` to this process's signals."""

    def __init__(self, url: str, reconnect_interval: float = 1.0) -> None:
        super().__init__()
        self._url = url
        self._reconnect_interval = reconnect_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="changes-postgres", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with connect(self._url, application_name="eventcore-listen") as connection:
                    connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                    if failures:
                        log.info("listening to %s again", redact(self._url))
                        self.hub.announce()  # what was committed while away was not announced
                    failures = 0
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=0.25, stop_after=1):
                            self.hub.announce()
            except psycopg.Error as error:
                if failures == 0:
                    log.warning(
                        "change notifications from %s lost: %s", redact(self._url), describe(error, self._url)
                    )
                failures += 1
                self._stop.wait(self._reconnect_interval)
