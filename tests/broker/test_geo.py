"""GeoJSON validation (RFC 7946 via clause 4.7) and geo-queries (clause 4.10) on every geometry type."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import shape

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.entity import LOCATION
from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.geo import (
    GeoQuery,
    InvalidGeometry,
    InvalidGeoQuery,
    distance_m,
    geometry_bbox,
    haversine_m,
    parse_geoquery,
    validate_geometry,
)

CTX = ContextStore().core
AMSTERDAM = [4.9041, 52.3676]
UTRECHT = [5.1214, 52.0907]
SQUARE = [[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]]
INNER = [[[2.0, 2.0], [4.0, 2.0], [4.0, 4.0], [2.0, 4.0], [2.0, 2.0]]]
HALF_OUT = [[[5.0, 5.0], [15.0, 5.0], [15.0, 15.0], [5.0, 15.0], [5.0, 5.0]]]
FAR = [[[20.0, 20.0], [21.0, 20.0], [21.0, 21.0], [20.0, 21.0], [20.0, 20.0]]]

VALID = {
    "Point": [5.0, 52.0],
    "Point3D": [5.0, 52.0, 3.5],
    "LineString": [[0, 0], [1, 1]],
    "Polygon": SQUARE,
    "MultiPoint": [[0, 0], [1, 1]],
    "MultiLineString": [[[0, 0], [1, 1]], [[2, 2], [3, 3]]],
    "MultiPolygon": [SQUARE, FAR],
}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_geometries(kind):
    geometry = {"type": kind.removesuffix("3D"), "coordinates": VALID[kind]}
    assert validate_geometry(geometry) is geometry


@pytest.mark.parametrize(("geometry", "fragment"), [
    ([5, 52], "is an object"),
    ({"type": "Circle", "coordinates": [0, 0]}, "must be one of"),
    ({"type": "GeometryCollection", "geometries": []}, "must be one of"),
    ({"type": "Point"}, "needs 'coordinates'"),
    ({"type": "Point", "coordinates": [5]}, "2 or 3 numbers"),
    ({"type": "Point", "coordinates": [5, 52, 1, 2]}, "2 or 3 numbers"),
    ({"type": "Point", "coordinates": [5, "52"]}, "coordinates[1]: expected a finite number"),
    ({"type": "Point", "coordinates": [True, 52]}, "coordinates[0]: expected a finite number"),
    ({"type": "Point", "coordinates": [181, 0]}, "longitude 181 is outside"),
    ({"type": "Point", "coordinates": [0, -91]}, "latitude -91 is outside"),
    ({"type": "LineString", "coordinates": [[0, 0]]}, "at least 2 positions"),
    ({"type": "LineString", "coordinates": [[0, 0], [1]]}, "coordinates[1]: a position"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}, "at least 4 positions"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, "must be closed"),
    ({"type": "Polygon", "coordinates": []}, "at least 1 linear rings"),
    ({"type": "MultiPoint", "coordinates": [[0, 0], [200, 0]]}, "coordinates[1][0]: longitude"),
    ({"type": "MultiLineString", "coordinates": [[[0, 0]]]}, "coordinates[0]: needs at least 2"),
    ({"type": "MultiPolygon", "coordinates": [SQUARE, [[[0, 0], [1, 0], [1, 1], [0, 1]]]]},
     "coordinates[1][0]: a linear ring must be closed"),
])
def test_invalid_geometries_say_where(geometry, fragment):
    with pytest.raises(InvalidGeometry) as info:
        validate_geometry(geometry)
    assert isinstance(info.value, BadRequestData)
    assert fragment in info.value.detail


def q(georel: str, geometry: str, coordinates) -> GeoQuery:
    query = parse_geoquery(georel, geometry, coordinates, None, CTX)
    assert query is not None
    return query


def test_haversine_amsterdam_utrecht():
    assert haversine_m(*AMSTERDAM, *UTRECHT) == pytest.approx(34_160, rel=0.002)


def test_near_max_and_min_distance_on_points():
    ams = {"type": "Point", "coordinates": AMSTERDAM}
    assert q("near;maxDistance==35000", "Point", UTRECHT).test(ams)
    assert not q("near;maxDistance==34000", "Point", UTRECHT).test(ams)
    assert q("near;minDistance==34000", "Point", UTRECHT).test(ams)
    assert not q("near;minDistance==35000", "Point", UTRECHT).test(ams)


def test_near_with_lines_and_polygons_uses_metres():
    # a line 0.01 degree of latitude (~1,112 m) north of the reference point
    line = {"type": "LineString", "coordinates": [[4.0, 52.01], [6.0, 52.01]]}
    assert q("near;maxDistance==1200", "Point", [5.0, 52.0]).test(line)
    assert not q("near;maxDistance==1000", "Point", [5.0, 52.0]).test(line)
    poly = {"type": "Polygon", "coordinates": [[[5.0, 52.0], [5.1, 52.0], [5.1, 52.1], [5.0, 52.1], [5.0, 52.0]]]}
    point_inside = {"type": "Point", "coordinates": [5.05, 52.05]}
    assert q("near;maxDistance==1", "Polygon", poly["coordinates"]).test(point_inside)
    assert distance_m(shape(point_inside), shape(poly)) == 0.0


@pytest.mark.parametrize(("georel", "target", "expected"), [
    ("within", {"type": "Point", "coordinates": [5, 5]}, True),
    ("within", {"type": "Point", "coordinates": [15, 5]}, False),
    ("within", {"type": "LineString", "coordinates": [[1, 1], [9, 9]]}, True),
    ("within", {"type": "LineString", "coordinates": [[1, 1], [19, 9]]}, False),
    ("within", {"type": "Polygon", "coordinates": INNER}, True),
    ("within", {"type": "MultiPoint", "coordinates": [[1, 1], [2, 2]]}, True),
    ("within", {"type": "MultiLineString", "coordinates": [[[1, 1], [2, 2]], [[3, 3], [4, 4]]]}, True),
    ("within", {"type": "MultiPolygon", "coordinates": [INNER, FAR]}, False),
    ("contains", {"type": "Polygon", "coordinates": HALF_OUT}, False),
    ("intersects", {"type": "Polygon", "coordinates": HALF_OUT}, True),
    ("intersects", {"type": "MultiPolygon", "coordinates": [FAR]}, False),
    ("intersects", {"type": "LineString", "coordinates": [[-5, 5], [5, 5]]}, True),
    ("disjoint", {"type": "Polygon", "coordinates": FAR}, True),
    ("disjoint", {"type": "MultiPoint", "coordinates": [[30, 30], [5, 5]]}, False),
    ("overlaps", {"type": "Polygon", "coordinates": HALF_OUT}, True),
    ("overlaps", {"type": "Polygon", "coordinates": INNER}, False),
    ("equals", {"type": "Polygon", "coordinates": [list(reversed(SQUARE[0]))]}, True),
    ("equals", {"type": "Polygon", "coordinates": INNER}, False),
])
def test_relations_against_a_polygon(georel, target, expected):
    assert q(georel, "Polygon", SQUARE).test(target) is expected


def test_contains_with_point_and_line_references():
    square = {"type": "Polygon", "coordinates": SQUARE}
    assert q("contains", "Point", [5, 5]).test(square)
    assert not q("contains", "Point", [50, 5]).test(square)
    assert q("contains", "LineString", [[1, 1], [2, 2]]).test(square)
    assert q("contains", "MultiPoint", [[1, 1], [2, 2]]).test(square)
    assert q("equals", "Point", [5, 5]).test({"type": "Point", "coordinates": [5, 5]})
    assert q("intersects", "MultiLineString", [[[0, 5], [20, 5]]]).test(square)
    assert q("within", "MultiPolygon", [SQUARE]).test({"type": "Point", "coordinates": [1, 1]})


def test_entity_matching_uses_any_instance_of_the_geoproperty():
    entity = {"id": "urn:x", "type": ["T"], LOCATION: [
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [50, 50]}},
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5, 5]}, "datasetId": "urn:ds:gps"},
    ]}
    assert q("within", "Polygon", SQUARE).matches(entity)
    assert not q("within", "Polygon", FAR).matches(entity)
    assert not q("within", "Polygon", SQUARE).matches({"id": "urn:y", "type": ["T"]})
    space = asyncio.run(ContextStore().compile({"observationSpace": "https://uri.etsi.org/ngsi-ld/observationSpace"}))
    other = parse_geoquery("within", "Polygon", SQUARE, "observationSpace", space)
    assert other.geoproperty == "https://uri.etsi.org/ngsi-ld/observationSpace"
    assert not other.matches(entity)
    assert other.bbox is None and q("within", "Polygon", SQUARE).bbox == (0.0, 0.0, 10.0, 10.0)


@pytest.mark.parametrize(("args", "fragment"), [
    (("near", "Point", "[5,52]"), "maxDistance"),
    (("near;maxDistance==0", "Point", "[5,52]"), "positive"),
    (("near;maxDistance==-5", "Point", "[5,52]"), "positive"),
    (("near;maxDistance==abc", "Point", "[5,52]"), "not a number"),
    (("near;radius==5", "Point", "[5,52]"), "maxDistance"),
    (("inside", "Point", "[5,52]"), "georel must be one of"),
    (("within;x", "Polygon", "[]"), "takes no modifier"),
    (("within", "Circle", "[5,52]"), "geometry must be one of"),
    (("within", "Polygon", "[[[0,0],[1,0]"), "not JSON"),
    (("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,0.5]]]"),
     "reference Polygon geometry: coordinates[0]: a linear ring"),
    (("within", None, "[5,52]"), "missing geometry"),
    ((None, "Point", None), "missing georel, coordinates"),
])
def test_geoquery_errors(args, fragment):
    with pytest.raises(InvalidGeoQuery) as info:
        parse_geoquery(*args, None, CTX)
    assert isinstance(info.value, BadRequestData)
    assert fragment in info.value.detail


def test_no_geoquery_and_lenient_spellings():
    assert parse_geoquery(None, None, None, None, CTX) is None
    assert parse_geoquery("within", "polygon", SQUARE, None, CTX).geometry["type"] == "Polygon"
    with pytest.raises(InvalidGeoQuery):
        parse_geoquery(None, None, None, "location", CTX)


@settings(max_examples=200, deadline=None)
@given(st.floats(-60, 60), st.floats(-170, 170), st.floats(-0.5, 0.5), st.floats(-0.5, 0.5),
       st.floats(10, 60_000))
def test_bbox_prefilter_never_excludes_a_match(lat, lon, dlat, dlon, distance):
    query = q(f"near;maxDistance=={distance}", "Point", [lon, lat])
    target = {"type": "Point", "coordinates": [lon + dlon, lat + dlat]}
    minx, miny, maxx, maxy = query.prefilter_bbox()
    tx, ty, _, _ = geometry_bbox(target)
    inside = minx <= tx <= maxx and miny <= ty <= maxy
    if query.test(target):
        assert inside


def test_prefilter_rectangles():
    assert q("within", "Polygon", SQUARE).prefilter_bbox() == (0.0, 0.0, 10.0, 10.0)
    assert q("disjoint", "Polygon", SQUARE).prefilter_bbox() is None
    assert q("near;minDistance==10", "Point", [5, 5]).prefilter_bbox() is None
    assert q("near;maxDistance==10", "Point", [5, 89.5]).prefilter_bbox()[0] == -180.0
