"""Shared pieces of the PAP tests: an audit sink that records (and can fail), database URLs for both stores."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sleutelbos.core.protocols import AuditEvent, AuditReceipt, AuditUnavailable


class RecordingAuditSink:
    """An in-memory stand-in for the audit component: keeps the events in order, can be made to fail, and can run a
    probe at the moment of recording (to check that the change has not taken effect yet)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.failing = False
        self.probe: Callable[[AuditEvent], Awaitable[None]] | None = None

    async def record(self, event: AuditEvent) -> AuditReceipt:
        if self.failing:
            raise AuditUnavailable("audit log unavailable (test)")
        if self.probe is not None:
            await self.probe(event)
        self.events.append(event)
        return AuditReceipt(index=len(self.events) - 1, leaf_hash="00" * 32)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]


def simple_policy(policy_id: str, version: str = "1.0", effect: str = "Permit", action: str = "read") -> bytes:
    """A Policy with one rule: ``effect`` when action-id is ``action``."""
    return f"""<Policy xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicyId="{policy_id}"
    Version="{version}" RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides">
  <Target/>
  <Rule RuleId="r1" Effect="{effect}">
    <Target><AnyOf><AllOf>
      <Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
        <AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">{action}</AttributeValue>
        <AttributeDesignator Category="urn:oasis:names:tc:xacml:3.0:attribute-category:action"
          AttributeId="urn:oasis:names:tc:xacml:1.0:action:action-id"
          DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
      </Match>
    </AllOf></AnyOf></Target>
  </Rule>
</Policy>""".encode()


def referencing_set(set_id: str, version: str, *policy_ids: str) -> bytes:
    """A PolicySet (permit-overrides) made of references to ``policy_ids``."""
    refs = "".join(f"<PolicyIdReference>{p}</PolicyIdReference>" for p in policy_ids)
    return f"""<PolicySet xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicySetId="{set_id}"
    Version="{version}"
    PolicyCombiningAlgId="urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:permit-overrides">
  <Target/>{refs}
</PolicySet>""".encode()


def action_request_json(action: str) -> bytes:
    return (
        b'{"Request":{"Action":{"Attribute":[{"AttributeId":"urn:oasis:names:tc:xacml:1.0:action:action-id",'
        b'"Value":"' + action.encode() + b'"}]}}}'
    )


def action_request_xml(action: str) -> bytes:
    return f"""<Request xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" CombinedDecision="false"
    ReturnPolicyIdList="false">
  <Attributes Category="urn:oasis:names:tc:xacml:3.0:attribute-category:action">
    <Attribute AttributeId="urn:oasis:names:tc:xacml:1.0:action:action-id" IncludeInResult="false">
      <AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">{action}</AttributeValue>
    </Attribute>
  </Attributes>
</Request>""".encode()
