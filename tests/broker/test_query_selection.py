"""EntitySelection: type/id/idPattern/attrs/q/scopeQ/geo together, as a subscription would evaluate them."""

from __future__ import annotations

import pytest

from sleutelbos.broker.context import ContextStore
from sleutelbos.broker.entity import LOCATION
from sleutelbos.broker.errors import BadRequestData
from sleutelbos.broker.query.selection import EntitySelection

V = "https://uri.etsi.org/ngsi-ld/default-context/"
CTX = ContextStore().core


def meter(n: int, kind: str = "Device", **extra):
    return {"id": f"urn:ngsi-ld:Device:meter-{n}", "type": [V + kind],
            V + "serialNumber": [{"type": "Property", "value": f"SN-{n}"}],
            LOCATION: [{"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5.0 + n / 100, 52.0]}}],
            **extra}


ENTITIES = [meter(1), meter(2, scope=["/nl/utrecht"]), meter(3, "DeviceModel"), meter(40)]


@pytest.mark.parametrize(("params", "expected"), [
    ({"type": "Device"}, [1, 2, 40]),
    ({"type": "Device,DeviceModel"}, [1, 2, 3, 40]),
    ({"type": "(Device;DeviceModel)"}, []),
    ({"id": "urn:ngsi-ld:Device:meter-1,urn:ngsi-ld:Device:meter-3"}, [1, 3]),
    ({"idPattern": "meter-[0-9]$"}, [1, 2, 3]),
    ({"attrs": "serialNumber"}, [1, 2, 3, 40]),
    ({"attrs": "nothing"}, []),
    ({"type": "Device", "q": 'serialNumber=="SN-2"|serialNumber=="SN-3"'}, [2]),
    ({"scopeQ": "/nl/#"}, [2]),
    ({"type": "Device", "georel": "near;maxDistance==3000", "geometry": "Point", "coordinates": "[5.0,52.0]"},
     [1, 2]),
])
def test_selection(params, expected):
    selection = EntitySelection.from_params(params, CTX)
    got = [int(e["id"].rsplit("-", 1)[1]) for e in ENTITIES if selection.matches(e)]
    assert got == expected


def test_bad_parameters_are_bad_request_data():
    for params in ({"idPattern": "("}, {"q": "a=="}, {"type": "A;B"}, {"scopeQ": "/"},
                   {"georel": "near", "geometry": "Point", "coordinates": "[0,0]"}):
        with pytest.raises(BadRequestData):
            EntitySelection.from_params(params, CTX)
