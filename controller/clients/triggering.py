"""Starting a backup exactly once, even when the server's answer is lost.

Used by the three backup clients (``element``, ``vcda``, ``commvault``). None of their
"start a backup" calls is idempotent: when the answer is lost after the request was sent
(``TransientApiError(maybe_applied=True)``), the backup may be running already. Why the
look happens here, once: the rule "list first, and trigger again only if no new backup or
job appeared" (apis.md, "For every API") is the same for every product; only how to list
and how to turn a found backup into a handle differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from controller.clients.backups import BackupState, LiveBackup
from controller.errors import TransientApiError

# Lost answers in a row before giving up: each one was followed by a look that found
# nothing, so the server is not acting on our requests at all.
TRIGGER_ATTEMPTS = 3


def trigger_once(
    *,
    start: Callable[[], str],
    listing: Callable[[], Iterable[LiveBackup]],
    handle_for: Callable[[LiveBackup], str] = lambda backup: backup.id,
    attempts: int = TRIGGER_ATTEMPTS,
) -> str:
    """Call ``start``; after a lost answer, adopt a backup that appeared since instead.

    ``listing`` lists the backups that count for the policy (running ones included). Its
    ids are taken before the first start, so "new" means "not there before we asked",
    whatever the server's clock says. A running newcomer is preferred to a finished one:
    it is most likely ours.
    """
    before = {backup.id for backup in listing()}
    lost: TransientApiError | None = None
    for _ in range(max(1, attempts)):
        try:
            return start()
        except TransientApiError as exc:
            if not exc.maybe_applied:
                raise  # the session already spent its retries on a call that did nothing
            lost = exc
        newcomers = [backup for backup in listing() if backup.id not in before]
        if newcomers:
            newcomers.sort(key=lambda b: (b.state is BackupState.RUNNING, b.created or _EPOCH))
            return handle_for(newcomers[-1])
    assert lost is not None
    raise lost


_EPOCH = datetime.fromtimestamp(0, UTC)
