"""Delivery of NGSI-LD notifications (ETSI GS CIM 009 v1.8, clauses 5.8.x and 5.2.14/5.2.15; HTTP binding 7.2,
MQTT binding annex): the write path's change feed, per-subscription dispatch with retries, HTTP and MQTT senders."""
