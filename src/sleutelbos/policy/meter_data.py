"""The project's ABAC policy for meter data (``policies/meter-data.xml``) and the requests it expects.

The policy (read its header for the rules): the operator reads every meter, a household its own meters, a supplier
the meters it has a contract for, a vendor a meter only under an unexpired grant; nobody reads a quarantined meter
or while break-glass is active. :class:`MeterDataRequest` writes the XACML request a PEP sends for one read, in XML
or in the JSON Profile, with the attribute identifiers the policy uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files

import orjson
from lxml import etree

METER_DATA_POLICY_ID = "urn:sleutelbos:policy:meter-data"

SUBJECT_ID = "urn:oasis:names:tc:xacml:1.0:subject:subject-id"
ORGANISATION = "urn:sleutelbos:names:subject:organisation"
ORGANISATION_KIND = "urn:sleutelbos:names:subject:organisation-kind"
GRANTED_METER = "urn:sleutelbos:names:subject:granted-meter"
GRANT_EXPIRES = "urn:sleutelbos:names:subject:grant-expires"
RESOURCE_ID = "urn:oasis:names:tc:xacml:1.0:resource:resource-id"
RESOURCE_TYPE = "urn:sleutelbos:names:resource:type"
OWNER = "urn:sleutelbos:names:resource:owner"
CONTRACTED_SUPPLIER = "urn:sleutelbos:names:resource:contracted-supplier"
QUARANTINED = "urn:sleutelbos:names:resource:quarantined"
ACTION_ID = "urn:oasis:names:tc:xacml:1.0:action:action-id"
BREAK_GLASS = "urn:sleutelbos:names:environment:break-glass"

ACCESS_SUBJECT = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject"
RESOURCE = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource"
ACTION = "urn:oasis:names:tc:xacml:3.0:attribute-category:action"
ENVIRONMENT = "urn:oasis:names:tc:xacml:3.0:attribute-category:environment"

XS = "http://www.w3.org/2001/XMLSchema#"
XACML = "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"


def meter_data_policy() -> bytes:
    """The policy set as shipped (``PolicySetId`` :data:`METER_DATA_POLICY_ID`)."""
    return files("sleutelbos.policy").joinpath("policies/meter-data.xml").read_bytes()


@dataclass(frozen=True)
class MeterDataRequest:
    """One request to read a meter's data, with what the PEP knows about the caller, the meter and the moment."""

    subject_id: str
    organisation: str
    kind: str  # operator, household, supplier, vendor, ...
    meter_id: str
    owner: str | None = None
    contracted_suppliers: tuple[str, ...] = ()
    granted_meters: tuple[str, ...] = ()
    grant_expires: datetime | None = None
    quarantined: bool = False
    break_glass: bool = False
    action: str = "read"
    extra: dict[str, str] = field(default_factory=dict)

    def _categories(self) -> list[tuple[str, list[tuple[str, str, list[str]]]]]:
        subject = [(SUBJECT_ID, "string", [self.subject_id]), (ORGANISATION, "string", [self.organisation]),
                   (ORGANISATION_KIND, "string", [self.kind])]
        if self.granted_meters:
            subject.append((GRANTED_METER, "string", list(self.granted_meters)))
        if self.grant_expires is not None:
            subject.append((GRANT_EXPIRES, "dateTime", [self.grant_expires.isoformat()]))
        resource = [(RESOURCE_ID, "string", [self.meter_id]), (RESOURCE_TYPE, "string", ["meter"]),
                    (QUARANTINED, "boolean", ["true" if self.quarantined else "false"])]
        if self.owner is not None:
            resource.append((OWNER, "string", [self.owner]))
        if self.contracted_suppliers:
            resource.append((CONTRACTED_SUPPLIER, "string", list(self.contracted_suppliers)))
        return [
            (ACCESS_SUBJECT, subject),
            (RESOURCE, resource),
            (ACTION, [(ACTION_ID, "string", [self.action])]),
            (ENVIRONMENT, [(BREAK_GLASS, "boolean", ["true" if self.break_glass else "false"])]),
        ]

    def to_json(self) -> bytes:
        """JSON Profile of XACML 3.0, with data type shorthands."""
        return orjson.dumps({"Request": {"Category": [
            {"CategoryId": category, "Attribute": [
                {"AttributeId": attribute_id, "DataType": datatype, "Value": values if len(values) > 1 else values[0]}
                for attribute_id, datatype, values in attributes
            ]}
            for category, attributes in self._categories()
        ]}})

    def to_xml(self) -> bytes:
        request = etree.Element(f"{{{XACML}}}Request", nsmap={None: XACML}, CombinedDecision="false",
                                ReturnPolicyIdList="false")
        for category, attributes in self._categories():
            element = etree.SubElement(request, f"{{{XACML}}}Attributes", Category=category)
            for attribute_id, datatype, values in attributes:
                attribute = etree.SubElement(element, f"{{{XACML}}}Attribute", AttributeId=attribute_id,
                                             IncludeInResult="false")
                for value in values:
                    etree.SubElement(attribute, f"{{{XACML}}}AttributeValue", DataType=XS + datatype).text = value
        return etree.tostring(request, xml_declaration=True, encoding="UTF-8")
