"""GeoJSON geometries and the NGSI-LD Geoquery Language (ETSI GS CIM 009 v1.8/v1.9, clauses 4.7 and 4.10).

* :func:`validate_geometry` checks a GeoProperty value against IETF RFC 7946 for the six geometry types NGSI-LD
  supports (Point, LineString, Polygon, MultiPoint, MultiLineString, MultiPolygon — no GeometryCollection in
  geo-queries): positions of 2 or 3 finite numbers with longitude in [-180, 180] and latitude in [-90, 90], at least
  two positions per line, closed linear rings of at least four positions. A failure is an :class:`InvalidGeometry`
  (ETSI BadRequestData) whose detail names the member path (``coordinates[0][3]``).
* :func:`parse_geoquery` reads ``georel``, ``geometry``, ``coordinates`` and ``geoproperty`` (default ``location``)
  into a :class:`GeoQuery`; :meth:`GeoQuery.matches` evaluates it on an expanded entity with shapely — any instance of
  the target GeoProperty that satisfies the relation makes the entity match (entities without it never match).

Relations are DE-9IM relations (shapely) on longitude/latitude taken as planar coordinates, as PostGIS ``geometry``
does. ``near;maxDistance==d`` / ``near;minDistance==d`` use metres: between two points the haversine distance on a
sphere of radius 6,371,008.8 m; otherwise the shapely distance after projecting both geometries with a local
equirectangular projection centred on the reference geometry (error well under 1 % below ~100 km; not suitable across
the antimeridian or near the poles — a documented approximation). ``maxDistance`` matches at distance <= d,
``minDistance`` at distance > d (disjoint from the buffer, clause 4.10).

:meth:`GeoQuery.prefilter_bbox` gives the rectangle a candidate's bounding box must intersect for the entity to
possibly match — the store applies it to its ``geo_*`` columns before the exact test here. It never excludes a match.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from sleutelbos.broker.entity import LOCATION, Entity
from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.query.parser import TermExpander

GEOMETRY_TYPES: Final = ("Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon")
GEORELS: Final = ("near", "within", "contains", "intersects", "equals", "disjoint", "overlaps")
EARTH_RADIUS_M: Final = 6_371_008.8
_M_PER_DEG: Final = EARTH_RADIUS_M * math.pi / 180.0


class InvalidGeometry(BadRequestData):
    """A value that should be GeoJSON is not (or is a geometry type NGSI-LD does not support here)."""


class InvalidGeoQuery(BadRequestData):
    """``georel``/``geometry``/``coordinates``/``geoproperty`` do not form a valid geo-query (clause 4.10)."""


# --- validation ----------------------------------------------------------------------------------------------------

def _position(value: Any, where: str) -> None:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise InvalidGeometry(f"{where}: a position is an array of 2 or 3 numbers, got {json.dumps(value)[:80]}")
    for i, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise InvalidGeometry(f"{where}[{i}]: expected a finite number, got {json.dumps(number)[:40]}")
    lon, lat = value[0], value[1]
    if not -180.0 <= lon <= 180.0:
        raise InvalidGeometry(f"{where}[0]: longitude {lon} is outside [-180, 180]")
    if not -90.0 <= lat <= 90.0:
        raise InvalidGeometry(f"{where}[1]: latitude {lat} is outside [-90, 90]")


def _array(value: Any, where: str, minimum: int, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidGeometry(f"{where}: expected an array of {what}, got {json.dumps(value)[:80]}")
    if len(value) < minimum:
        raise InvalidGeometry(f"{where}: needs at least {minimum} {what}, got {len(value)}")
    return value


def _line(value: Any, where: str) -> None:
    for i, pos in enumerate(_array(value, where, 2, "positions")):
        _position(pos, f"{where}[{i}]")


def _polygon(value: Any, where: str) -> None:
    for r, ring in enumerate(_array(value, where, 1, "linear rings")):
        ring_at = f"{where}[{r}]"
        for i, pos in enumerate(_array(ring, ring_at, 4, "positions (a linear ring)")):
            _position(pos, f"{ring_at}[{i}]")
        if ring[0][:2] != ring[-1][:2]:
            raise InvalidGeometry(f"{ring_at}: a linear ring must be closed (first position == last position)")


_CHECKS: Final[dict[str, Callable[[Any, str], None]]] = {
    "Point": _position,
    "LineString": _line,
    "Polygon": _polygon,
    "MultiPoint": lambda v, w: [_position(p, f"{w}[{i}]") for i, p in enumerate(_array(v, w, 1, "positions"))],
    "MultiLineString": lambda v, w: [_line(p, f"{w}[{i}]") for i, p in enumerate(_array(v, w, 1, "line strings"))],
    "MultiPolygon": lambda v, w: [_polygon(p, f"{w}[{i}]") for i, p in enumerate(_array(v, w, 1, "polygons"))],
}


def validate_geometry(value: Any) -> dict[str, Any]:
    """Return ``value`` if it is a supported GeoJSON geometry, else raise :class:`InvalidGeometry`."""
    if not isinstance(value, dict):
        raise InvalidGeometry(f"a GeoJSON geometry is an object, got {json.dumps(value)[:80]}")
    kind = value.get("type")
    if kind not in _CHECKS:
        raise InvalidGeometry(f"geometry type must be one of {', '.join(GEOMETRY_TYPES)}, got {kind!r}")
    if "coordinates" not in value:
        raise InvalidGeometry(f"a {kind} needs 'coordinates'")
    _CHECKS[kind](value["coordinates"], "coordinates")
    return value


def geometry_bbox(value: dict[str, Any]) -> tuple[float, float, float, float]:
    """``(min lon, min lat, max lon, max lat)`` of a validated geometry."""
    minx, miny, maxx, maxy = shapely.bounds(shape(value)).tolist()
    return minx, miny, maxx, maxy


# --- distance ------------------------------------------------------------------------------------------------------

def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres on the mean-radius sphere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def distance_m(target: BaseGeometry, reference: BaseGeometry) -> float:
    """Metres between two geometries (haversine for two points, local equirectangular projection otherwise)."""
    if target.geom_type == "Point" and reference.geom_type == "Point":
        return haversine_m(target.x, target.y, reference.x, reference.y)
    centre = reference.centroid
    lon0, cos_lat0 = centre.x, math.cos(math.radians(centre.y))

    def project(geom: BaseGeometry) -> BaseGeometry:
        return shapely.transform(geom, lambda xy: (xy - [lon0, 0.0]) * [_M_PER_DEG * cos_lat0, _M_PER_DEG])

    return float(project(target).distance(project(reference)))


# --- the geo-query -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GeoQuery:
    """A parsed geo-query: relation, optional near distance, reference geometry, expanded target GeoProperty."""

    georel: str
    geometry: dict[str, Any]
    geoproperty: str = LOCATION
    max_distance: float | None = None
    min_distance: float | None = None

    @property
    def reference(self) -> BaseGeometry:
        return _shape_cached(json.dumps(self.geometry, sort_keys=True))

    def test(self, target: dict[str, Any]) -> bool:
        """Whether one target GeoJSON geometry satisfies the relation with the reference geometry."""
        try:
            geom = shape(validate_geometry(target))
        except (InvalidGeometry, ValueError, TypeError):
            return False
        ref = self.reference
        if self.georel == "near":
            distance = distance_m(geom, ref)
            if self.max_distance is not None:
                return distance <= self.max_distance
            return distance > (self.min_distance or 0.0)
        relation: Callable[[BaseGeometry], bool] = getattr(geom, self.georel)
        return bool(relation(ref))

    def matches(self, entity: Entity) -> bool:
        """Some instance of the target GeoProperty satisfies the relation (clause 4.10; absent → no match)."""
        for instance in entity.get(self.geoproperty, ()):
            if isinstance(instance, dict) and isinstance(instance.get("value"), dict) and self.test(instance["value"]):
                return True
        return False

    @property
    def bbox(self) -> tuple[float, float, float, float] | None:
        """:meth:`prefilter_bbox` when the target is ``location`` (the property the store keeps a bounding box of)."""
        return self.prefilter_bbox() if self.geoproperty == LOCATION else None

    def prefilter_bbox(self) -> tuple[float, float, float, float] | None:
        """The rectangle a matching target's bounding box must intersect, or None when no rectangle bounds it."""
        if self.georel == "disjoint" or (self.georel == "near" and self.max_distance is None):
            return None
        minx, miny, maxx, maxy = geometry_bbox(self.geometry)
        if self.georel != "near":
            return minx, miny, maxx, maxy
        margin = (self.max_distance or 0.0) * 1.01 + 1.0
        dlat = margin / _M_PER_DEG
        low, high = miny - dlat, maxy + dlat
        worst = max(abs(low), abs(high))
        if worst >= 89.0:
            return -180.0, max(-90.0, low), 180.0, min(90.0, high)
        dlon = margin / (_M_PER_DEG * math.cos(math.radians(worst)))
        return max(-180.0, minx - dlon), max(-90.0, low), min(180.0, maxx + dlon), min(90.0, high)


_SHAPES: dict[str, BaseGeometry] = {}


def _shape_cached(key: str) -> BaseGeometry:
    geom = _SHAPES.get(key)
    if geom is None:
        if len(_SHAPES) > 256:
            _SHAPES.clear()
        geom = shape(json.loads(key))
        shapely.prepare(geom)
        _SHAPES[key] = geom
    return geom


def _positive_number(text: str, georel: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidGeoQuery(f"georel {georel!r}: distance {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidGeoQuery(f"georel {georel!r}: distance must be a positive number of metres, got {text!r}")
    return value


def parse_georel(georel: str) -> tuple[str, float | None, float | None]:
    """``near;maxDistance==2000`` → ``("near", 2000.0, None)``; ``within`` → ``("within", None, None)``."""
    name, _, modifier = georel.partition(";")
    if name not in GEORELS:
        raise InvalidGeoQuery(f"georel must be one of {', '.join(GEORELS)}, got {name!r}")
    if name != "near":
        if modifier:
            raise InvalidGeoQuery(f"georel {name!r} takes no modifier, got {modifier!r}")
        return name, None, None
    key, sep, number = modifier.partition("==")
    if not sep or key not in ("maxDistance", "minDistance"):
        raise InvalidGeoQuery(f"georel near needs ';maxDistance==<metres>' or ';minDistance==<metres>', got {georel!r}")
    distance = _positive_number(number, georel)
    return ("near", distance, None) if key == "maxDistance" else ("near", None, distance)


def parse_geoquery(georel: str | None, geometry: str | None, coordinates: Any, geoproperty: str | None,
                   context: TermExpander) -> GeoQuery | None:
    """Build a :class:`GeoQuery` from the request parameters; None when none of them is given."""
    given = {"georel": georel, "geometry": geometry, "coordinates": coordinates}
    if all(v in (None, "") for v in given.values()):
        if geoproperty:
            raise InvalidGeoQuery("geoproperty needs georel, geometry and coordinates")
        return None
    missing = [k for k, v in given.items() if v in (None, "")]
    if missing:
        raise InvalidGeoQuery(f"a geo-query needs georel, geometry and coordinates; missing {', '.join(missing)}")
    assert georel is not None and geometry is not None
    name, max_d, min_d = parse_georel(georel)
    kind = next((t for t in GEOMETRY_TYPES if t.lower() == geometry.lower()), None)
    if kind is None:
        raise InvalidGeoQuery(f"geometry must be one of {', '.join(GEOMETRY_TYPES)}, got {geometry!r}")
    if isinstance(coordinates, str):
        try:
            coordinates = json.loads(coordinates)
        except json.JSONDecodeError as exc:
            raise InvalidGeoQuery(f"coordinates are not JSON: {exc.msg} at position {exc.pos}") from exc
    try:
        reference = validate_geometry({"type": kind, "coordinates": coordinates})
    except InvalidGeometry as exc:
        raise InvalidGeoQuery(f"reference {kind} geometry: {exc.detail}") from exc
    target = context.expand_term(geoproperty) if geoproperty else LOCATION
    return GeoQuery(georel=name, geometry=reference, geoproperty=target, max_distance=max_d, min_distance=min_d)
