"""ECDSA P-256 signatures per second: through the custody API vs a bare python-pkcs11 loop on the same token and
key, with ``cryptography``'s in-process software signing as the ceiling. Goal: custody / bare ≥ 0.8.

Runs on a fresh SoftHSM2 token under a temporary directory (custody's own embedded set-up), or on the token named
by ``SLEUTELBOS_PKCS11_*`` with ``--configured``. Rounds are interleaved and medians reported, because the
machine is shared.

    PYTHONPATH=src python benchmarks/custody_sign.py [--n 2000] [--rounds 5] [--encoding raw|der]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, Mechanism, ObjectClass

from sleutelbos.core.protocols import AuditEvent, AuditReceipt
from sleutelbos.core.settings import Settings
from sleutelbos.custody import open_custody
from sleutelbos.custody.softhsm import ensure_embedded_token


class CountingSink:
    def __init__(self) -> None:
        self.n = 0

    async def record(self, event: AuditEvent) -> AuditReceipt:
        self.n += 1
        return AuditReceipt(self.n, "00" * 32)


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="signatures per round and contender")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--encoding", choices=("raw", "der"), default="raw")
    parser.add_argument("--configured", action="store_true", help="use the SLEUTELBOS_PKCS11_* token")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sleutelbos-bench-"))
    if args.configured:
        settings = Settings(data_dir=tmp)
    else:
        token = ensure_embedded_token(tmp, "bench")
        if token is None:
            sys.exit("SoftHSM2 is not installed (Debian package softhsm2)")
        settings = Settings(data_dir=tmp, pkcs11_module=token.module, pkcs11_token=token.label,
                            pkcs11_pin=token.pin)
    custody = open_custody(settings, CountingSink(), embedded=False)
    signer = custody.signer_for("bench-signing")
    identity = custody.token_identity()

    # The bare loop: the same private key object, found by its CKA_ID through a second session.
    session = pkcs11.lib(identity.module).get_token(token_label=identity.label).open()
    [private] = session.get_objects({Attribute.ID: bytes.fromhex(signer.key_id),
                                     Attribute.CLASS: ObjectClass.PRIVATE_KEY})
    software = ec.generate_private_key(ec.SECP256R1())
    messages = [b"payload %d " % i + b"x" * 200 for i in range(args.n)]

    contenders = {
        "custody": lambda i: signer.sign(messages[i], args.encoding),
        "bare python-pkcs11": lambda i: private.sign(hashlib.sha256(messages[i]).digest(),
                                                     mechanism=Mechanism.ECDSA),
        "cryptography (software)": lambda i: software.sign(messages[i], ec.ECDSA(hashes.SHA256())),
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up
        rate(fn, min(200, args.n))
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            results[name].append(rate(fn, args.n))

    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"token: {identity.manufacturer} {identity.model} (label {identity.label}); "
          f"{args.rounds} rounds × {args.n} signatures, encoding {args.encoding}; medians")
    for name, value in med.items():
        spread = f"{min(results[name]):.0f}–{max(results[name]):.0f}"
        print(f"  {name:<26} {value:10.0f} signs/s   (range {spread})")
    ratio = med["custody"] / med["bare python-pkcs11"]
    print(f"custody / bare python-pkcs11 = {ratio:.3f}   (goal ≥ 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
    print(f"custody / cryptography ceiling = {med['custody'] / med['cryptography (software)']:.3f}")
    session.close()
    custody.close()


if __name__ == "__main__":
    main()
