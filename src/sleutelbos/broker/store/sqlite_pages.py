"""The page size of a broker's SQLite files, and its offline conversion (``sleutelbos broker page-size``).

A new store file gets ``broker_sqlite_page_size`` (decision 0760), but SQLite fixes a file's page size when it gets
its first table, and in WAL mode not even ``VACUUM`` changes it. A data directory of an older version therefore keeps
4 KiB pages until an operator converts it, with the broker stopped: leave WAL for a rollback journal, set the size,
``VACUUM`` (which rewrites the whole file through the journal, so a crash leaves the old file), and return to WAL.

The check that the broker is stopped is SQLite's own: leaving WAL needs the only connection to the file, so any
other process (or connection) that has it open makes the conversion fail with :class:`FileInUse`, before anything
is written.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

#: what SQLite accepts (it silently ignores any other value)
PAGE_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class PageSizeError(Exception):
    """A file's page size cannot be read or changed."""


class FileInUse(PageSizeError):
    """Another connection has the file open (a running broker): nothing was changed."""


@dataclass(frozen=True, slots=True)
class Conversion:
    path: Path
    before: int
    after: int

    @property
    def changed(self) -> bool:
        return self.before != self.after


def page_size(path: Path) -> int:
    """The page size of an existing SQLite file."""
    if not path.is_file():
        raise PageSizeError(f"no SQLite file at {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)  # as_uri: a '?' or '#' in a name
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise PageSizeError(f"{path} is not a readable SQLite file: {exc}") from None
    finally:
        conn.close()


def convert(path: Path, size: int) -> Conversion:
    """Rewrite ``path`` with pages of ``size`` bytes (a no-op when it has them); it needs about the file's size of
    free space beside it for the journal. Raises :class:`FileInUse` when another connection has the file open."""
    if size not in PAGE_SIZES:
        raise PageSizeError(f"page size must be one of {', '.join(map(str, PAGE_SIZES))}")
    before = page_size(path)
    if before == size:
        return Conversion(path, before, size)
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        try:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        except sqlite3.OperationalError:
            mode = None
        if mode != "delete":  # SQLite answers the mode it stayed in when it cannot leave WAL
            raise FileInUse(f"{path.name} is open elsewhere (is the broker running?): stop it first; nothing changed")
        try:
            conn.execute(f"PRAGMA page_size={size}")
            conn.execute("VACUUM")
        except sqlite3.Error as exc:  # disk full, say: the journal rolls the file back
            raise PageSizeError(f"{path.name} was not converted ({exc}); it is unchanged") from None
        finally:
            conn.execute("PRAGMA journal_mode=WAL")  # as the broker keeps it, whether or not VACUUM went through
        after = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    if after != size:
        raise PageSizeError(f"{path.name} kept {after}-byte pages")
    return Conversion(path, before, after)
