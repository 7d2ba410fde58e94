"""Sample events for the audit tests (a module of its own: ``conftest`` is not importable by name reliably)."""

from __future__ import annotations

from sleutelbos.core.protocols import Actor, AuditEvent

ORIGIN = "test.sleutelbos.local/audit"


def event(i: int, actor: str = "alice", action: str = "custody.key.generate", target: str | None = None) -> AuditEvent:
    return AuditEvent(
        actor=Actor(actor, organisation="Operator", kind="operator", country="NL"),
        action=action,
        target=target or f"key-{i}",
        reason="test",
        request_id=f"req-{i}",
        details={"n": i, "note": "ünïcode ✓"},
    )
