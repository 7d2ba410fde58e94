"""The NGSI-LD temporal API (ETSI GS CIM 009 v1.8, clauses 5.6.11-5.6.16 and 5.7.3-5.7.4; HTTP binding 6.18-6.24):
the history of every attribute instance, kept by the
broker's store (``broker_entity_history``): on PostgreSQL materialised per attribute in ``broker_temporal_instances``
(:mod:`.materialise`), on SQLite moved into buckets of per-entity chunks (:mod:`.chunks`, decision 0720)."""
