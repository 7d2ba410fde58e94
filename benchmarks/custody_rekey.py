"""Per-meter DLMS key sets (4 AES-128 keys: master, unicast, broadcast, authentication) generated per second
through custody, and the projected time to produce the key material of a 1-million-meter campaign (goal: < 1 h
on SoftHSM2). Reference in the same run: a bare python-pkcs11 loop doing the token work alone (generate four
session keys, wrap each under a token key, destroy) — custody adds audit, planning and the metadata commits.

Also printed: the campaign re-key rate (three new keys per meter, each wrapped for storage and under the meter's
master key, plus the ``global_key_transfer`` payload and persisted progress), and, for contrast, the rate of
creating *token objects* on SoftHSM2 — the reason per-meter keys are stored wrapped (decision note 0201).

    PYTHONPATH=src python benchmarks/custody_rekey.py [--meters 2000] [--batch 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag

from sleutelbos.core.protocols import AuditEvent, AuditReceipt
from sleutelbos.core.settings import Settings
from sleutelbos.custody import open_custody
from sleutelbos.custody.softhsm import ensure_embedded_token

HOUR = 3600.0


class CountingSink:
    def __init__(self) -> None:
        self.n = 0

    async def record(self, event: AuditEvent) -> AuditReceipt:
        self.n += 1
        return AuditReceipt(self.n, "00" * 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=2000, help="meters per round")
    parser.add_argument("--batch", type=int, default=200, help="meters per provisioning call / campaign batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--token-objects", type=int, default=40, help="token objects for the contrast figure")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sleutelbos-bench-"))
    token = ensure_embedded_token(tmp, "bench")
    if token is None:
        sys.exit("SoftHSM2 is not installed (Debian package softhsm2)")
    settings = Settings(data_dir=tmp, pkcs11_module=token.module, pkcs11_token=token.label, pkcs11_pin=token.pin)
    custody = open_custody(settings, CountingSink(), embedded=False)
    asyncio.run(custody.meters.storage_key())
    session = pkcs11.lib(token.module).get_token(token_label=token.label).open(rw=True)
    kek = session.generate_key(KeyType.AES, 256, store=False, capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
                               template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})

    def bare_round(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            for _ in range(4):
                key = session.generate_key(
                    KeyType.AES, 128, store=False, capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                    template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
                )
                kek.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP)
                key.destroy()
        return n / (time.perf_counter() - start)

    def bare_rekey_round(n: int) -> float:
        """The token work of one meter's key change: unwrap its master key, then three new keys each wrapped
        under the storage key and the master key, and everything destroyed."""
        master_blob = kek.wrap_key(session.generate_key(
            KeyType.AES, 128, store=False, capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True}), mechanism=Mechanism.AES_KEY_WRAP)
        start = time.perf_counter()
        for _ in range(n):
            master = kek.unwrap_key(pkcs11.ObjectClass.SECRET_KEY, KeyType.AES, master_blob, store=False,
                                    mechanism=Mechanism.AES_KEY_WRAP,
                                    capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
                                    template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
            for _ in range(3):
                key = session.generate_key(
                    KeyType.AES, 128, store=False, capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                    template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
                )
                kek.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP)
                master.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP)
                key.destroy()
            master.destroy()
        return n / (time.perf_counter() - start)

    def custody_round(round_no: int, n: int) -> tuple[float, float]:
        meters = [f"R{round_no}-{i:07d}" for i in range(n)]
        start = time.perf_counter()
        for at in range(0, n, args.batch):
            asyncio.run(custody.meters.provision(meters[at : at + args.batch]))
        provision_rate = n / (time.perf_counter() - start)
        campaign = asyncio.run(custody.campaigns.start(f"bench-{round_no}", meters))
        start = time.perf_counter()
        asyncio.run(custody.campaigns.run(campaign, batch_size=args.batch))
        rekey_rate = n / (time.perf_counter() - start)
        return provision_rate, rekey_rate

    bare_round(100)  # warm-up
    provision, rekey, bare, bare_rekey = [], [], [], []
    for round_no in range(args.rounds):
        p, r = custody_round(round_no, args.meters)
        provision.append(p)
        rekey.append(r)
        bare.append(bare_round(args.meters))
        bare_rekey.append(bare_rekey_round(args.meters))
        print(f"  round {round_no}: provision {p:.0f}/s, re-key {r:.0f}/s, bare sets {bare[-1]:.0f}/s, "
              f"bare re-key {bare_rekey[-1]:.0f}/s", flush=True)

    start = time.perf_counter()
    for i in range(args.token_objects):
        session.generate_key(KeyType.AES, 128, store=True, id=b"contrast-%d" % i, label="contrast",
                             template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
    token_object_rate = args.token_objects / (time.perf_counter() - start)

    med_p, med_r, med_b = statistics.median(provision), statistics.median(rekey), statistics.median(bare)
    med_br = statistics.median(bare_rekey)
    print(f"SoftHSM2 token; {args.rounds} rounds × {args.meters} meters, batches of {args.batch}; medians")
    print(f"  custody: key sets (4 × AES-128) provisioned  {med_p:8.0f} meters/s  → 1M meters in {1e6 / med_p / 60:6.1f} min")
    print(f"  custody: campaign re-key (3 keys + payload)  {med_r:8.0f} meters/s  → 1M meters in {1e6 / med_r / 60:6.1f} min")
    print(f"  bare python-pkcs11: 4 keys generated+wrapped {med_b:8.0f} sets/s    → 1M in {1e6 / med_b / 60:6.1f} min")
    print(f"  bare python-pkcs11: re-key token work        {med_br:8.0f} meters/s  → 1M in {1e6 / med_br / 60:6.1f} min")
    print(f"custody provisioning / bare = {med_p / med_b:.3f}; custody re-key / bare re-key = {med_r / med_br:.3f}")
    worst = max(1e6 / med_p, 1e6 / med_r)
    print(f"projected 1M-meter key material: {worst / 60:.1f} min (goal < 60 min: {'met' if worst < HOUR else 'NOT met'})")
    print(f"contrast: SoftHSM2 token objects {token_object_rate:.1f} keys/s → 4M keys as token objects would take "
          f"{4e6 / token_object_rate / HOUR:.0f} h")
    session.close()
    custody.close()


if __name__ == "__main__":
    main()
