"""Geo-queries (ETSI GS CIM 009 v1.8, clause 4.10): ``georel``, ``geometry``, ``coordinates``, ``geoproperty``.

A geo-query becomes a predicate over expanded entities (shapely, evaluated in Python on the candidates) and, where it
can, a bounding box that the store uses as a SQL pre-filter on the ``location`` bounding-box columns, so only entities
near the query geometry are decoded. Relations: ``near;maxDistance==m`` / ``near;minDistance==m`` (metres, on a local
equirectangular projection around the query geometry — accurate to well under 1 % at the distances a city-scale fleet
query uses), ``within``, ``contains``, ``intersects``, ``disjoint``, ``equals``, ``overlaps`` over Point, LineString,
Polygon and their Multi* forms.

This module is the broker's own minimal version; the query package's geo module (``query.geo``), when present, is
used instead (see ``api._add_geo``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from sleutelbos.broker.context import CompiledContext
from sleutelbos.broker.entity import LOCATION, Entity
from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.validation import check_geometry

_RELATIONS = ("near", "within", "contains", "intersects", "disjoint", "equals", "overlaps")
_GEOMETRIES = ("Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon")
_M_PER_DEG_LAT = 110_540.0
_M_PER_DEG_LON = 111_320.0


@dataclass
class GeoQuery:
    attribute: str
    matches: Callable[[Entity], bool]
    bbox: tuple[float, float, float, float] | None


def _projector(lon0: float, lat0: float) -> Callable[[BaseGeometry], BaseGeometry]:
    """Local equirectangular projection to metres around (lon0, lat0)."""
    k = math.cos(math.radians(lat0))
    scale = np.array([k * _M_PER_DEG_LON, _M_PER_DEG_LAT])
    origin = np.array([lon0, lat0])

    def project(geometry: BaseGeometry) -> BaseGeometry:
        return shapely.transform(geometry, lambda coords: (coords - origin) * scale)

    return project


def parse_geoquery(georel: str | None, geometry: str | None, coordinates: str | None, geoproperty: str | None,
                   ctx: CompiledContext) -> GeoQuery:
    if not georel or not geometry or not coordinates:
        raise BadRequestData("a geo-query needs georel, geometry and coordinates together")
    parts = georel.split(";")
    relation = parts[0]
    if relation not in _RELATIONS:
        raise BadRequestData(f"georel {relation!r} is not one of {', '.join(_RELATIONS)}")
    if geometry not in _GEOMETRIES:
        raise BadRequestData(f"geometry {geometry!r} is not one of {', '.join(_GEOMETRIES)}")
    try:
        coords = orjson.loads(coordinates)
    except orjson.JSONDecodeError as exc:
        raise BadRequestData(f"coordinates is not a JSON array: {coordinates!r}") from exc
    check_geometry({"type": geometry, "coordinates": coords}, "geo-query")
    query_shape = shape({"type": geometry, "coordinates": coords})
    attribute = ctx.expand_term(geoproperty) if geoproperty else LOCATION

    max_d: float | None = None
    min_d: float | None = None
    if relation == "near":
        for modifier in parts[1:]:
            name, sep, value = modifier.partition("==")
            try:
                distance = float(value)
            except ValueError:
                distance = -1.0
            if not sep or distance < 0 or name not in ("maxDistance", "minDistance"):
                raise BadRequestData(f"near needs maxDistance==<metres> or minDistance==<metres>, got {modifier!r}")
            if name == "maxDistance":
                max_d = distance
            else:
                min_d = distance
        if max_d is None and min_d is None:
            raise BadRequestData("near needs maxDistance or minDistance")
    elif len(parts) > 1:
        raise BadRequestData(f"georel {relation} takes no modifiers")

    minx, miny, maxx, maxy = query_shape.bounds
    center_lon, center_lat = (minx + maxx) / 2, (miny + maxy) / 2
    project = _projector(center_lon, center_lat)
    projected_query = project(query_shape)

    def related(candidate: BaseGeometry) -> bool:
        if relation == "near":
            distance = project(candidate).distance(projected_query)
            return (max_d is None or distance <= max_d) and (min_d is None or distance >= min_d)
        if relation == "within":
            return bool(candidate.within(query_shape))
        if relation == "contains":
            return bool(candidate.contains(query_shape))
        if relation == "intersects":
            return bool(candidate.intersects(query_shape))
        if relation == "disjoint":
            return bool(candidate.disjoint(query_shape))
        if relation == "equals":
            return bool(candidate.equals(query_shape))
        return bool(candidate.overlaps(query_shape))

    def matches(entity: Entity) -> bool:
        for instance in entity.get(attribute, ()):
            value = instance.get("value")
            if instance.get("type") != "GeoProperty" or not isinstance(value, dict):
                continue
            try:
                candidate = shape(value)
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            if related(candidate):
                return True
        return False

    bbox: tuple[float, float, float, float] | None = None
    if attribute == LOCATION:
        if relation in ("within", "contains", "intersects", "equals", "overlaps"):
            bbox = (minx, miny, maxx, maxy)
        elif relation == "near" and max_d is not None and min_d is None:
            dlat = max_d / _M_PER_DEG_LAT
            dlon = max_d / (_M_PER_DEG_LON * max(0.01, math.cos(math.radians(center_lat))))
            bbox = (minx - dlon, miny - dlat, maxx + dlon, maxy + dlat)
    return GeoQuery(attribute, matches, bbox)
