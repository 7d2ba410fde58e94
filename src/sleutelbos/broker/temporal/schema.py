"""Schema additions of issue 3, appended to the broker store's migration lists (``store/sqlite.py``,
``store/postgres.py``) so that one schema version covers the whole broker.

``broker_subscriptions(tenant, id, doc, created_at, modified_at, times_sent, times_failed, last_notification,
last_success, last_failure)``
    One row per subscription; ``doc`` is the subscription as the client gave it (compact terms) plus ``@context``,
    re-expanded on load; the status counters are columns so that the dispatcher updates them without rewriting ``doc``.
``broker_notifications_pending(seq, tenant, subscription_id, created_at, attempts, payload)``
    Notifications whose delivery failed, in order, retried with backoff, deleted once delivered; survive a restart.
``broker_temporal_instances(seq, history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at,
deleted, instance)``
    The per-attribute materialisation of the core's ``broker_entity_history`` (one row per entity change, decision
    0502): one row per attribute instance, indexed on ``(tenant, entity_id, attr, observed_at)`` and
    ``(..., modified_at)`` so that a temporal query is an index range scan and aggregation runs in SQL
    (docs/decisions/0600). ``seq`` is the instance's ``instanceId``; ``observed_at`` is normalized to the broker's
    timestamp form so text order is time order. Filled from the history by :mod:`.materialise`, which keeps its
    position in ``broker_temporal_cursor``. PostgreSQL only since decision 0720; the SQLite migrations below created
    them too, and its latest turns them into the first bucket of ``broker_temporal_buckets`` and
    ``broker_temporal_chunks`` (the history in head and chunks, :mod:`.chunks`).
On PostgreSQL, ``broker_temporal_instances`` and the core's ``broker_entity_history`` are both
``PARTITION BY RANGE (modified_at)`` — monthly partitions with text bounds in the "C" collation (the broker's
timestamps sort lexically), a DEFAULT partition for rows outside the prepared months — and
``broker_temporal_retention_days`` drops whole old partitions of both (:mod:`.partitions`).
"""

from __future__ import annotations

_SUBSCRIPTIONS_SQLITE = """
    CREATE TABLE broker_subscriptions (
        tenant TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL, created_at TEXT NOT NULL,
        modified_at TEXT NOT NULL, times_sent INTEGER NOT NULL DEFAULT 0, times_failed INTEGER NOT NULL DEFAULT 0,
        last_notification TEXT, last_success TEXT, last_failure TEXT, PRIMARY KEY (tenant, id)
    );
    CREATE TABLE broker_notifications_pending (
        seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, subscription_id TEXT NOT NULL, created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, payload TEXT NOT NULL
    );
    CREATE INDEX broker_notifications_pending_sub ON broker_notifications_pending (tenant, subscription_id, seq);
"""

_TEMPORAL_INDEXES = """
    CREATE INDEX broker_temporal_instances_observed ON broker_temporal_instances (tenant, entity_id, attr, observed_at);
    CREATE INDEX broker_temporal_instances_modified ON broker_temporal_instances (tenant, entity_id, attr, modified_at);
    CREATE TABLE broker_temporal_cursor (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    INSERT INTO broker_temporal_cursor (name, seq) VALUES ('history', 0);
"""

_SQLITE = _SUBSCRIPTIONS_SQLITE + """
    CREATE TABLE broker_temporal_instances (
        seq INTEGER PRIMARY KEY, history_seq INTEGER NOT NULL, tenant TEXT NOT NULL, entity_id TEXT NOT NULL,
        attr TEXT NOT NULL, dataset_id TEXT, observed_at TEXT, modified_at TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0, instance TEXT NOT NULL
    );
"""

SQLITE_MIGRATIONS: list[str] = [_SQLITE + _TEMPORAL_INDEXES]

# --- SQLite database files: the temporal tables in a file of their own (docs/decisions/0710) ---------------------
# ``broker_temporal_instances`` and ``broker_temporal_cursor`` move to ``<stem>-temporal<suffix>`` beside the store's
# file (see ``store/sqlite.py``), so that the materialiser's write step takes that file's writer lock and never the
# entity writes'. The move is two migrations in two files, each one transaction of one file (SQLite in WAL mode
# commits the files of a multi-file transaction one after the other, the main file first: a single transaction that
# created the new tables and dropped the old ones could, on a crash between the two commits, leave neither):
#
# 1. the temporal file's own component ``broker_temporal`` (its own ``schema_migrations``), applied on a connection
#    whose main database is the temporal file, with the store's file ATTACHed as ``broker``: creates the tables and
#    copies the instances and the cursor from the store's file — ``SQLITE_TEMPORAL_FILE_COPY`` when the store's file
#    still holds them, ``SQLITE_TEMPORAL_FILE`` (an empty table and the cursor at 0: the materialiser rebuilds the
#    instances from the history) when it does not (a new data directory, or a temporal file that was lost);
# 2. then the store's component ``broker``, one version later: drops the old tables (``SQLITE_TEMPORAL_MOVED``).
#
# A crash after 1 and before 2 leaves both copies and version 1 recorded in the temporal file: the next start skips 1
# and applies 2. A crash inside 1 or 2 rolls that file's transaction back. The shared in-memory database (no file)
# keeps the tables where they are: its version of 2 is a no-op (``SQLITE_TEMPORAL_KEPT``).
_TEMPORAL_FILE_TABLES = """
    CREATE TABLE broker_temporal_instances (
        seq INTEGER PRIMARY KEY, history_seq INTEGER NOT NULL, tenant TEXT NOT NULL, entity_id TEXT NOT NULL,
        attr TEXT NOT NULL, dataset_id TEXT, observed_at TEXT, modified_at TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0, instance TEXT NOT NULL
    );
    CREATE TABLE broker_temporal_cursor (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
"""
_TEMPORAL_FILE_INDEXES = """
    CREATE INDEX broker_temporal_instances_observed ON broker_temporal_instances (tenant, entity_id, attr, observed_at);
    CREATE INDEX broker_temporal_instances_modified ON broker_temporal_instances (tenant, entity_id, attr, modified_at);
"""
_CURSOR_AT_START = "INSERT INTO broker_temporal_cursor (name, seq) VALUES ('history', 0);"
SQLITE_TEMPORAL_FILE = _TEMPORAL_FILE_TABLES + _TEMPORAL_FILE_INDEXES + _CURSOR_AT_START
# the rows first, the indexes after (one sort each instead of a random insert per row)
_COPY = """
    INSERT INTO main.broker_temporal_instances
        (seq, history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at, deleted, instance)
        SELECT seq, history_seq, tenant, entity_id, attr, dataset_id, observed_at, modified_at, deleted, instance
        FROM broker.broker_temporal_instances ORDER BY seq;
    INSERT INTO main.broker_temporal_cursor (name, seq) SELECT name, seq FROM broker.broker_temporal_cursor;
    INSERT OR IGNORE INTO main.broker_temporal_cursor (name, seq) VALUES ('history', 0);
"""
SQLITE_TEMPORAL_FILE_COPY = _TEMPORAL_FILE_TABLES + _COPY + _TEMPORAL_FILE_INDEXES
SQLITE_TEMPORAL_MOVED = "DROP TABLE broker_temporal_instances; DROP TABLE broker_temporal_cursor;"
SQLITE_TEMPORAL_KEPT = "SELECT 1;"

_POSTGRES = """
    CREATE TABLE broker_subscriptions (
        tenant TEXT NOT NULL, id TEXT NOT NULL, doc JSONB NOT NULL, created_at TEXT NOT NULL,
        modified_at TEXT NOT NULL, times_sent BIGINT NOT NULL DEFAULT 0, times_failed BIGINT NOT NULL DEFAULT 0,
        last_notification TEXT, last_success TEXT, last_failure TEXT, PRIMARY KEY (tenant, id)
    );
    CREATE TABLE broker_notifications_pending (
        seq BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, subscription_id TEXT NOT NULL, created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, payload JSONB NOT NULL
    );
    CREATE INDEX broker_notifications_pending_sub ON broker_notifications_pending (tenant, subscription_id, seq);
    CREATE TABLE broker_temporal_instances (
        seq BIGSERIAL, history_seq BIGINT NOT NULL, tenant TEXT NOT NULL, entity_id TEXT NOT NULL,
        attr TEXT NOT NULL, dataset_id TEXT, observed_at TEXT COLLATE "C", modified_at TEXT COLLATE "C" NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT FALSE, instance JSONB NOT NULL, PRIMARY KEY (seq, modified_at)
    ) PARTITION BY RANGE (modified_at);
    CREATE TABLE broker_temporal_instances_default PARTITION OF broker_temporal_instances DEFAULT;
    ALTER TABLE broker_entity_history RENAME TO broker_entity_history_unpartitioned;
    CREATE TABLE broker_entity_history (
        seq BIGINT NOT NULL DEFAULT nextval('broker_entity_history_seq_seq'), tenant TEXT NOT NULL,
        entity_id TEXT NOT NULL, modified_at TEXT COLLATE "C" NOT NULL, deleted BOOLEAN NOT NULL DEFAULT FALSE,
        instances JSONB, PRIMARY KEY (seq, modified_at)
    ) PARTITION BY RANGE (modified_at);
    ALTER SEQUENCE broker_entity_history_seq_seq OWNED BY broker_entity_history.seq;
    CREATE TABLE broker_entity_history_default PARTITION OF broker_entity_history DEFAULT;
    INSERT INTO broker_entity_history SELECT * FROM broker_entity_history_unpartitioned;
    DROP TABLE broker_entity_history_unpartitioned;
    CREATE INDEX broker_entity_history_entity ON broker_entity_history (tenant, entity_id);
"""

# The materialiser follows the history by transaction id and snapshot, not under a table lock (docs/decisions/0630):
# every history row records its writing transaction (``xid``, a default, so the core's INSERTs are unchanged), and the
# cursor keeps the snapshot of the last step. Rows written before this migration keep ``xid`` NULL; they were all
# committed before it (ALTER TABLE waits for every writer) and are followed by ``seq`` as before.
_POSTGRES_XID = """
    ALTER TABLE broker_entity_history ADD COLUMN xid xid8;
    ALTER TABLE broker_entity_history ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
    CREATE INDEX broker_entity_history_xid ON broker_entity_history (xid);
    ALTER TABLE broker_temporal_cursor ADD COLUMN snap TEXT NOT NULL DEFAULT '1:1:';
"""

POSTGRES_MIGRATIONS: list[str] = [_POSTGRES + _TEMPORAL_INDEXES, _POSTGRES_XID]

# --- SQLite: the history in two tiers, head and chunks (docs/decisions/0720, temporal/chunks.py) -----------------
# The per-instance table and its cursor give way to buckets of chunks. The instances already materialised become
# bucket 1 — one chunk per entity of every history row they came from, rebuilt from the instances (which hold the
# modifications and deletions of past instances that the history rows do not) — whose ``seq_hi`` is the old cursor;
# the history rows up to it are then flushed rows, which the flusher deletes from the head. Instance ids change form
# (decision 0720). On a database file this is the temporal file's own version 2; on the shared in-memory database, a
# version of the store's component, where the tables are.
_CHUNK_TABLES = """
    CREATE TABLE broker_temporal_buckets (
        bucket INTEGER PRIMARY KEY, seq_hi INTEGER NOT NULL, observed_lo TEXT, observed_hi TEXT, modified_lo TEXT,
        modified_hi TEXT
    );
    CREATE TABLE broker_temporal_chunks (
        bucket INTEGER NOT NULL, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, observed_lo TEXT, observed_hi TEXT,
        body TEXT NOT NULL, UNIQUE (bucket, tenant, entity_id)
    );
"""
_INSTANCES_TO_BUCKET_ONE = """
    INSERT INTO broker_temporal_buckets (bucket, seq_hi, observed_lo, observed_hi, modified_lo, modified_hi)
        SELECT 1, c.seq, (SELECT substr(MIN(observed_at), 1, 19) FROM broker_temporal_instances WHERE deleted = 0),
               (SELECT substr(MAX(observed_at), 1, 19) FROM broker_temporal_instances WHERE deleted = 0),
               (SELECT substr(MIN(modified_at), 1, 19) FROM broker_temporal_instances WHERE deleted = 0),
               (SELECT substr(MAX(modified_at), 1, 19) FROM broker_temporal_instances WHERE deleted = 0)
        FROM broker_temporal_cursor c WHERE c.name = 'history' AND c.seq > 0;
    INSERT INTO broker_temporal_chunks (bucket, tenant, entity_id, observed_lo, observed_hi, body)
        SELECT 1, tenant, entity_id, MIN(lo), MAX(hi), '[' || group_concat(r, ',') || ']' FROM (
            SELECT tenant, entity_id, MIN(lo) AS lo, MAX(hi) AS hi,
                   json_array(history_seq, MIN(modified_at), json_group_object(attr, json(arr))) AS r
            FROM (SELECT tenant, entity_id, history_seq, MIN(modified_at) AS modified_at, attr,
                         substr(MIN(observed_at), 1, 19) AS lo, substr(MAX(observed_at), 1, 19) AS hi,
                         json_group_array(json(instance)) AS arr
                  FROM (SELECT * FROM broker_temporal_instances WHERE deleted = 0 ORDER BY seq)
                  GROUP BY tenant, entity_id, history_seq, attr)
            GROUP BY tenant, entity_id, history_seq ORDER BY tenant, entity_id, history_seq)
        GROUP BY tenant, entity_id ORDER BY tenant, entity_id;
    DROP TABLE broker_temporal_instances;
    DROP TABLE broker_temporal_cursor;
"""
SQLITE_TEMPORAL_CHUNKS = _CHUNK_TABLES + _INSTANCES_TO_BUCKET_ONE
#: the store's file: the head's index (one entity's rows of a table about one bucket large), and the span of a history
#: row's observedAt (first 19 characters; '' when it has none; NULL on rows written before, which the flush reads)
SQLITE_HISTORY_HEAD_INDEX = """
    ALTER TABLE broker_entity_history ADD COLUMN observed_lo TEXT;
    ALTER TABLE broker_entity_history ADD COLUMN observed_hi TEXT;
    CREATE INDEX broker_entity_history_entity ON broker_entity_history (tenant, entity_id);
"""
SQLITE_IN_MEMORY_CHUNKS = SQLITE_TEMPORAL_CHUNKS + SQLITE_HISTORY_HEAD_INDEX
