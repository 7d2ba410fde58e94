"""The geo-query as the query package offers it to the API (``api._add_geo`` looks here first).

The implementation — GeoJSON validation, clause 4.10 relations, distances, the bounding-box pre-filter — is
:mod:`sleutelbos.broker.geo`; this module only names the entry points the API calls.
"""

from sleutelbos.broker.geo import GeoQuery, InvalidGeometry, InvalidGeoQuery, parse_geoquery, validate_geometry

__all__ = ["GeoQuery", "InvalidGeoQuery", "InvalidGeometry", "parse_geoquery", "validate_geometry"]
