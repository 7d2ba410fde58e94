"""NGSI-LD subscriptions (ETSI GS CIM 009 v1.8, clauses 5.2.12 Subscription, 5.8.1-5.8.5 and 6.10-6.11)."""
