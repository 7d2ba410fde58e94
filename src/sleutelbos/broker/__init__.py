"""NGSI-LD context broker (ETSI GS CIM 009)."""
