"""Schema additions of issue 3 (subscriptions, notification retries, temporal indexes; on PostgreSQL, the history
table natively partitioned by month), appended to the broker store's migration lists (``store/sqlite.py``,
``store/postgres.py``) so that one schema version covers the whole broker.

``broker_subscriptions(tenant, id, doc, created_at, modified_at, times_sent, times_failed, last_notification,
last_success, last_failure)``
    One row per subscription; ``doc`` is the subscription as the client gave it (compact terms) plus ``@context``,
    re-expanded on load; the status counters are columns so that the dispatcher updates them without rewriting ``doc``.
``broker_notifications_pending(seq, tenant, subscription_id, created_at, attempts, payload)``
    Notifications whose delivery failed, in order, retried with backoff by the dispatcher, deleted once delivered;
    they survive a restart.
``broker_attribute_instances``
    The core's append-only history. Indexed here on ``(tenant, entity_id, attr, observed_at)`` and
    ``(..., modified_at)`` for the temporal queries. On PostgreSQL it becomes ``PARTITION BY RANGE (modified_at)``
    (monthly partitions, text bounds in the "C" collation: the broker's timestamps sort lexically), with a DEFAULT
    partition for rows outside the prepared months; ``broker_temporal_retention_days`` drops whole old partitions.
"""

from __future__ import annotations

SQLITE_MIGRATIONS: list[str] = [
    """
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
    CREATE INDEX broker_attribute_instances_observed
        ON broker_attribute_instances (tenant, entity_id, attr, observed_at);
    CREATE INDEX broker_attribute_instances_modified
        ON broker_attribute_instances (tenant, entity_id, attr, modified_at);
    """,
]

POSTGRES_MIGRATIONS: list[str] = [
    """
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
    ALTER TABLE broker_attribute_instances RENAME TO broker_attribute_instances_unpartitioned;
    CREATE TABLE broker_attribute_instances (
        seq BIGINT NOT NULL, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, attr TEXT NOT NULL,
        dataset_id TEXT, observed_at TEXT COLLATE "C", modified_at TEXT COLLATE "C" NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT FALSE, instance JSONB, PRIMARY KEY (seq, modified_at)
    ) PARTITION BY RANGE (modified_at);
    ALTER TABLE broker_attribute_instances ALTER COLUMN seq
        SET DEFAULT nextval('broker_attribute_instances_seq_seq');
    ALTER SEQUENCE broker_attribute_instances_seq_seq OWNED BY broker_attribute_instances.seq;
    CREATE TABLE broker_attribute_instances_default PARTITION OF broker_attribute_instances DEFAULT;
    INSERT INTO broker_attribute_instances SELECT * FROM broker_attribute_instances_unpartitioned;
    DROP TABLE broker_attribute_instances_unpartitioned;
    CREATE INDEX broker_attribute_instances_observed
        ON broker_attribute_instances (tenant, entity_id, attr, observed_at);
    CREATE INDEX broker_attribute_instances_modified
        ON broker_attribute_instances (tenant, entity_id, attr, modified_at);
    """,
]
