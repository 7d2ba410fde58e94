"""Group commit of the SQLite store's write transactions (docs/decisions/0740).

A single-entity update on SQLite spent about a fifth of the broker's CPU on ``BEGIN IMMEDIATE`` and ``COMMIT`` (the
commit writes the transaction's pages to the WAL). Under load several updates are ready in the same turn of the event
loop; committing them together writes each shared page (the history head's last page, the index pages) once and pays
one ``BEGIN``/``COMMIT`` for all.

How a group forms: a write transaction is a *member*. The first member of a group opens the SQL transaction
(``BEGIN IMMEDIATE``); each later member runs inside its own ``SAVEPOINT``, so a member that fails rolls back its own
statements only. A member that succeeds releases its savepoint and the writer lock, and waits for the group's commit.
The ``COMMIT`` runs from a callback scheduled on the event loop when a member leaves: the members whose tasks were
ready in the same turn join the group before it runs. Nothing waits on a timer.

That extra turn of the loop costs a lone writer (one client writing one entity after another) ~25 µs per write and
gains it nothing, so the deferral adapts: a member commits as it leaves (as without groups) until a second write
commits in the same turn of the loop — writers at once — and from then on members defer, until eight groups in a row
are of one member again (measured in decision 0740).

What a member is told holds as before: its write is committed when its ``async with`` ends without an error, so an
acknowledged write survives ``kill -9`` (tested). If the ``COMMIT`` fails, every member of the group gets the error
and none of their writes is kept — none of them had been acknowledged.

Everything else that works on the writer connection or the file's write lock (the temporal flusher's steps, hosted
@contexts through the store's transaction) takes :attr:`GroupCommit.writer_lock`, which commits an open group first,
so it never finds a transaction of others open.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from types import TracebackType

#: deferred groups of one member in a row after which members commit at once again
LONE_GROUPS = 8


class GroupCommit:
    """The writer connection's transactions, committed in groups (see module docstring)."""

    def __init__(self) -> None:
        #: one member (or one holder of :attr:`writer_lock`) at a time on the writer connection
        self.lock = asyncio.Lock()
        self.conn: sqlite3.Connection | None = None
        self._group: asyncio.Future[None] | None = None
        #: whether the member inside has a savepoint (the group's first member has none: see :meth:`join`)
        self._savepoint = False
        self._commit_scheduled = False
        self._size = 0  # members of the open group
        #: whether a member that leaves defers the commit to the end of the loop's turn, so that others can join
        #: (several writers at once), or commits at once (a lone writer, whom the extra turn only costs): see
        #: :meth:`_commit_at_once` and :meth:`_adapt`
        self.deferring = False
        self._streak = 0  # deferring: groups of one in a row
        self._turn_commits = 0  # not deferring: commits made at once in this turn of the loop
        self._turn_watched = False
        #: counters (tests and benchmarks): groups committed, members that joined one, groups whose commit was deferred
        self.commits = 0
        self.members = 0
        self.deferred = 0
        self.writer_lock = WriterLock(self)

    async def join(self, begin: Callable[[sqlite3.Connection], Awaitable[None] | None]) -> sqlite3.Connection:
        """Take the writer lock and enter the group: the first member opens the group's transaction with ``begin``,
        each later member enters a savepoint of its own. The first member needs none — it is alone in the group
        while it runs, so its failure rolls the whole transaction back — and a savepoint is not free: SQLite copies
        every page the member changes into a statement journal first, which spills to a temporary file past 64 KiB
        (a batch of 1,000 meters, measured: ~10 % more CPU per update). On an error the lock is released and no
        savepoint is left open."""
        await self.lock.acquire()
        try:
            conn = self.conn
            assert conn is not None
            if self._group is None:
                started = begin(conn)
                if started is not None:
                    await started
                self._group = asyncio.get_running_loop().create_future()
                self._savepoint = False
                self._size = 0
            else:
                conn.execute("SAVEPOINT member")
                self._savepoint = True
        except BaseException:
            self._commit_soon()  # a group of earlier members may be open
            self.lock.release()
            raise
        self.members += 1
        self._size += 1
        return conn

    def leave(self, ok: bool) -> asyncio.Future[None] | None:
        """End the member: its savepoint released (``ok``) or rolled back, the commit scheduled, the lock released.
        Returns the group to wait for (``ok``)."""
        group = self._group
        try:
            if ok:
                if self._savepoint:
                    try:
                        self._conn().execute("RELEASE member")
                    except BaseException:
                        self.undo()
                        raise
            else:
                self.undo()
        finally:
            if self.deferring:
                self._commit_soon()
            elif self._group is not None:
                self._commit_at_once()
            self.lock.release()
        return group

    def undo(self) -> None:
        """Roll back the member: inside its savepoint, or the whole transaction for the group's first member (alone
        in it). When SQLite has rolled back the whole transaction itself (an I/O or full-disk error does) the group's
        earlier members lost their writes too: the group fails."""
        conn = self._conn()
        if not self._savepoint:  # the first member: nobody else has joined yet
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._group = None
            return
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK TO member")
                conn.execute("RELEASE member")
                return
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        group, self._group = self._group, None
        if group is not None and not group.done():
            group.set_exception(sqlite3.OperationalError("the write transaction was rolled back by SQLite"))

    def commit_now(self) -> None:
        """``COMMIT`` the open group, if any. The caller holds the lock, or no member is inside (the loop callback)."""
        group, self._group = self._group, None
        if group is None:
            return
        try:
            self._conn().execute("COMMIT")
        except sqlite3.Error as exc:  # not committed: leave no transaction open for the next writer
            with contextlib.suppress(sqlite3.Error):
                self._conn().execute("ROLLBACK")
            group.set_exception(exc)
            return
        self.commits += 1
        self._adapt()
        group.set_result(None)

    def _commit_at_once(self) -> None:
        """A lone writer's commit, as if there were no groups. A second one in the same turn of the loop means writers
        at once: from the next member on, commits are deferred."""
        self.commit_now()
        self._turn_commits += 1
        if self._turn_commits > 1:
            self.deferring, self._streak = True, 0
        elif not self._turn_watched:
            self._turn_watched = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_commits = 0
        self._turn_watched = False

    def _adapt(self) -> None:
        """After a deferred group's commit: :data:`LONE_GROUPS` groups of one member in a row turn deferring off."""
        if self.deferring:
            self._streak = self._streak + 1 if self._size == 1 else 0
            if self._streak >= LONE_GROUPS:
                self.deferring, self._streak = False, 0

    def _commit_soon(self) -> None:
        if not self._commit_scheduled and self._group is not None:
            self._commit_scheduled = True
            self.deferred += 1
            asyncio.get_running_loop().call_soon(self._commit_turn)

    def _commit_turn(self) -> None:
        self._commit_scheduled = False
        # a member inside: it schedules the commit again when it leaves. A holder of writer_lock committed the
        # group when it took the lock.
        if not self.lock.locked():
            self.commit_now()

    def _conn(self) -> sqlite3.Connection:
        assert self.conn is not None
        return self.conn


async def committed(group: asyncio.Future[None]) -> None:
    """Wait for the member's group to commit; raises the ``COMMIT``'s error.

    A cancellation meanwhile (the client went away, the server stops) is held until the group has committed and then
    passed on at the caller's next ``await``: the member's writes are in the group whatever happens, and what the
    caller does right after its transaction (the change feed's notifications) must not be skipped for a write that
    was committed."""
    cancelled = False
    while not group.done():
        try:
            await asyncio.shield(group)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
            task.cancel()
    group.result()


class WriterLock:
    """The writer lock as taken by anything other than a write transaction (the temporal flusher's steps): the open
    group is committed first, so the holder finds the connection outside a transaction and the file's write lock
    free."""

    __slots__ = ("groups",)

    def __init__(self, groups: GroupCommit) -> None:
        self.groups = groups

    async def __aenter__(self) -> None:
        await self.groups.lock.acquire()
        self.groups.commit_now()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.groups.lock.release()
