"""Rotation campaigns: a key change for every meter of a group, with progress in the metadata store, resumable
after a crash without re-keying any meter twice.

Per batch of meters the campaign moves each meter ``pending → planned → keyed``:

1. **plan** (one transaction): choose the new key ids and versions and store them on the meter's row;
2. **audit**: one event names the batch's meters and their planned key ids (write-ahead);
3. **key** (one transaction per batch): generate the planned keys in the token, wrap them for storage and under
   the meter's master key, then insert the key records *and* mark the rows ``keyed`` with their payloads.

New per-meter keys are session objects until step 3 commits their wrapped blobs, so a crash before the commit
leaves nothing behind — no key stored, no payload, nothing sent to a meter — and the resumed run re-does the
batch *with the same planned ids and versions*. A crash after the commit finds the rows ``keyed`` and skips
them. Hence each meter gets exactly one new key set per campaign. Delivering payloads and confirming the switch
(:meth:`~sleutelbos.custody.meter_keys.MeterKeys.confirm`) is the head-end's part and not in here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sleutelbos.core.protocols import SYSTEM_ACTOR, Actor
from sleutelbos.custody.errors import CampaignError, KeyNotFound
from sleutelbos.custody.meter_keys import check_meter_id
from sleutelbos.custody.models import KeyAlgorithm, KeyRecord
from sleutelbos.custody.service import KeyCustody
from sleutelbos.custody.store import utcnow

PENDING, PLANNED, KEYED = "pending", "planned", "keyed"


@dataclass(frozen=True)
class CampaignProgress:
    campaign_id: str
    meter_group: str
    state: str  # running, finished
    total: int
    keyed: int
    planned: int
    pending: int
    created_at: datetime
    finished_at: datetime | None

    def as_dict(self) -> dict[str, object]:
        return {
            "campaign": self.campaign_id, "group": self.meter_group, "state": self.state, "total": self.total,
            "keyed": self.keyed, "planned": self.planned, "pending": self.pending,
            "created": self.created_at.isoformat(),
            "finished": self.finished_at.isoformat() if self.finished_at else None,
        }


def _plan_to_json(plans: dict[str, KeyRecord]) -> str:
    return json.dumps({p: {"key_id": r.key_id, "version": r.version, "algorithm": r.algorithm.value}
                       for p, r in plans.items()})


class RotationCampaigns:
    """Campaigns over :class:`KeyCustody`'s meter keys (reached as ``custody.campaigns``)."""

    def __init__(self, custody: KeyCustody) -> None:
        self.custody = custody
        self.store = custody.store

    async def start(
        self, meter_group: str, meter_ids: Sequence[str], *, actor: Actor = SYSTEM_ACTOR, reason: str = ""
    ) -> str:
        """Register a campaign over ``meter_ids`` (all pending); returns its id. Nothing is keyed yet."""
        if not meter_ids:
            raise CampaignError("a campaign needs at least one meter")
        if len(set(meter_ids)) != len(meter_ids):
            raise CampaignError("a meter is listed twice")
        for meter_id in meter_ids:
            check_meter_id(meter_id)
        missing = set(meter_ids) - self.store.meters_with_keys(meter_ids)
        if missing:
            raise KeyNotFound(f"{len(missing)} meter(s) have no keys to rotate (e.g. {sorted(missing)[0]})")
        campaign_id = f"campaign-{secrets.token_hex(8)}"
        await self.custody.audit_first(self.custody.audit_event(
            actor, "campaign-start", campaign_id, reason, meter_group=meter_group, meters=len(meter_ids),
        ))
        now = self.store._ts(utcnow())
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO custody_campaigns (campaign_id, meter_group, state, reason, actor, total, created_at) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (campaign_id, meter_group, reason, json.dumps(actor.as_dict()), len(meter_ids), now),
            )
            self.store.execute_many(
                "INSERT INTO custody_campaign_meters (campaign_id, meter_id, position, state, updated_at) "
                "VALUES (?, ?, ?, 'pending', ?)",
                [(campaign_id, meter_id, position, now) for position, meter_id in enumerate(meter_ids)],
            )
        return campaign_id

    def progress(self, campaign_id: str) -> CampaignProgress:
        rows = self.store.execute(
            "SELECT meter_group, state, total, created_at, finished_at FROM custody_campaigns WHERE campaign_id = ?",
            (campaign_id,),
        )
        if not rows:
            raise CampaignError(f"no campaign {campaign_id!r}")
        group, state, total, created, finished = rows[0]
        counts = dict(self.store.execute(
            "SELECT state, COUNT(*) FROM custody_campaign_meters WHERE campaign_id = ? GROUP BY state",
            (campaign_id,),
        ))
        return CampaignProgress(
            campaign_id=campaign_id, meter_group=group, state=state, total=int(total),
            keyed=int(counts.get(KEYED, 0)), planned=int(counts.get(PLANNED, 0)),
            pending=int(counts.get(PENDING, 0)), created_at=self.store._parse_ts(created),  # type: ignore[arg-type]
            finished_at=self.store._parse_ts(finished),
        )

    def payload(self, campaign_id: str, meter_id: str) -> bytes:
        """The ``global_key_transfer`` data produced for a keyed meter."""
        rows = self.store.execute(
            "SELECT state, payload FROM custody_campaign_meters WHERE campaign_id = ? AND meter_id = ?",
            (campaign_id, meter_id),
        )
        if not rows or rows[0][0] != KEYED:
            raise CampaignError(f"meter {meter_id!r} is not keyed in campaign {campaign_id!r}")
        return bytes(rows[0][1])

    def _next_batch(self, campaign_id: str, size: int) -> list[tuple[str, str, str | None]]:
        rows = self.store.execute(
            "SELECT meter_id, state, planned FROM custody_campaign_meters "
            "WHERE campaign_id = ? AND state IN ('pending', 'planned') ORDER BY position LIMIT ?",
            (campaign_id, size),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def _restore_plans(self, meter_id: str, planned: str) -> dict[str, KeyRecord]:
        """The plan stored before a crash, as records with the same ids and versions."""
        meters = self.custody.meters
        plans: dict[str, KeyRecord] = {}
        for purpose, spec in json.loads(planned).items():
            fresh = meters._new_record(meter_id, purpose, KeyAlgorithm(spec["algorithm"]), int(spec["version"]))
            plans[purpose] = replace(fresh, key_id=spec["key_id"])
        return plans

    async def run(
        self, campaign_id: str, *, batch_size: int = 50, actor: Actor = SYSTEM_ACTOR, max_batches: int | None = None,
    ) -> CampaignProgress:
        """Key the campaign's remaining meters, batch by batch; call again after a crash to resume."""
        progress = self.progress(campaign_id)
        if progress.state == "finished":
            return progress
        batches = 0
        while max_batches is None or batches < max_batches:
            batch = self._next_batch(campaign_id, batch_size)
            if not batch:
                await self._finish(campaign_id, actor)
                break
            await self._key_batch(campaign_id, batch, actor)
            batches += 1
        return self.progress(campaign_id)

    async def _key_batch(self, campaign_id: str, batch: list[tuple[str, str, str | None]], actor: Actor) -> None:
        meters = self.custody.meters
        plans: dict[str, dict[str, KeyRecord]] = {}
        resumed: list[str] = []
        now = self.store._ts(utcnow())
        planned_rows: list[tuple[str, str, str, str]] = []
        stored, versions = meters.current_keys([meter_id for meter_id, _, _ in batch])  # one read plans the batch
        for meter_id, state, planned in batch:
            if state == PLANNED and planned:
                plans[meter_id] = self._restore_plans(meter_id, planned)
                resumed.append(meter_id)
            else:
                plans[meter_id] = meters.plan_from(meter_id, stored[meter_id], versions[meter_id])
                planned_rows.append((_plan_to_json(plans[meter_id]), now, campaign_id, meter_id))
        with self.store.transaction():
            self.store.execute_many(
                "UPDATE custody_campaign_meters SET state = 'planned', planned = ?, updated_at = ? "
                "WHERE campaign_id = ? AND meter_id = ?",
                planned_rows,
            )
        await self.custody.audit_first(self.custody.audit_event(
            actor, "campaign-rekey", campaign_id, "rotation campaign batch",
            meters={m: {p: r.key_id for p, r in keys.items()} for m, keys in plans.items()}, resumed=resumed,
        ))
        records: list[KeyRecord] = []
        payloads: dict[str, bytes] = {}
        storage = meters._storage()
        for meter_id, meter_plans in plans.items():
            master = meters.active_master(stored[meter_id])
            if storage is None or master is None:
                raise KeyNotFound(f"meter {meter_id!r}: storage or master key missing")
            made, payload = meters.make_key_change(meter_id, meter_plans, storage=storage, master=master)
            records.extend(made)
            payloads[meter_id] = payload.data
        done = self.store._ts(utcnow())
        with self.store.transaction():
            self.store.insert_many(records)
            self.store.execute_many(
                "UPDATE custody_campaign_meters SET state = 'keyed', payload = ?, updated_at = ? "
                "WHERE campaign_id = ? AND meter_id = ?",
                [(data, done, campaign_id, meter_id) for meter_id, data in payloads.items()],
            )

    async def _finish(self, campaign_id: str, actor: Actor) -> None:
        event = self.custody.audit_event(actor, "campaign-finish", campaign_id, "all meters keyed")
        await self.custody.audit_first(event)
        self.store.execute(
            "UPDATE custody_campaigns SET state = 'finished', finished_at = ? WHERE campaign_id = ?",
            (self.store._ts(utcnow()), campaign_id),
        )

