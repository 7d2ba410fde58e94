"""A resource server in its own process: follows the IdM's JWKS and revocation feed over HTTP, validates one token
every 10 ms, prints ``accepted`` once and ``refused <unix time> <reason>`` when the token stops being accepted.

    python verifier_process.py ISSUER TOKEN
"""

from __future__ import annotations

import asyncio
import sys
import time

from sleutelbos.identity import InvalidToken, TokenVerifier


async def main(issuer: str, token: str) -> None:
    verifier = TokenVerifier(issuer=issuer, audience="sleutelbos", jwks=f"{issuer}/.well-known/jwks.json",
                             feed=f"{issuer}/oauth2/revocations", poll_interval_s=0.25)
    await verifier.start()
    verifier.verify(token)
    print("accepted", flush=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            verifier.verify(token)
        except InvalidToken as exc:
            print(f"refused {time.time():.3f} {exc.detail}", flush=True)
            break
        await asyncio.sleep(0.01)
    await verifier.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
