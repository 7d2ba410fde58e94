"""Identity manager throughput: token issuance, local JWT validation, and Keyrock-compatible ``/user`` over HTTP.

    PYTHONPATH=src python benchmarks/identity_tokens.py            # default sizes, a minute or two
    PYTHONPATH=src python benchmarks/identity_tokens.py --full     # larger samples

Figures (each a median over rounds, with the reference measured in the same run):

1. client-credentials token issuance/s through ``IdentityService`` (client authentication, principal facts,
   claims, ES256 signature by custody's ``identity-token`` key on a SoftHSM2 token — or the software key store
   when SoftHSM2 is not installed, which the output says); reference: bare custody signatures/s on the same key.
2. local JWT validations/s by ``TokenVerifier`` with the JWKS cached versus PyJWT ``jwt.decode`` verifying the same
   token with the same key (ratio): (a) with an ECDSA verification on every call; (b) as a resource server sees a
   token it has verified before (signature result cached; ``exp``/``aud``/revocation still checked every call).
3. ``GET /user?access_token=…&app_id=…`` requests/s over HTTP, served by uvicorn in one process and driven by a
   load generator in a separate process (keep-alive connections); references: ``GET /health`` on the same server
   in the same run, and Keyrock's published rating of 77 responses/s (published, not measured here).

Goals (issue 7): ≥ 1,000 issuances/s, ≥ 20,000 validations/s in process, ``/user`` ≥ 3,000 req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                   "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so")
KEYROCK_PUBLISHED_RPS = 77


class MemorySink:
    """Audit sink for the benchmark (issuance and validation are not audited; the setup's admin changes are)."""

    def __init__(self) -> None:
        self.count = 0

    async def record(self, event: Any) -> Any:
        from sleutelbos.core.protocols import AuditReceipt

        self.count += 1
        return AuditReceipt(self.count, "00" * 32)


def softhsm_env(workdir: Path) -> dict[str, str] | None:
    """A fresh SoftHSM2 token in ``workdir``; the environment custody reads it from (None: not installed)."""
    module = next((m for m in SOFTHSM_MODULES if Path(m).exists()), None)
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        return None
    tokens = workdir / "softhsm-tokens"
    tokens.mkdir()
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    pin = secrets.token_hex(4)
    subprocess.run([util, "--init-token", "--free", "--label", "bench", "--pin", pin, "--so-pin", pin],
                   check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(conf)})
    return {"SOFTHSM2_CONF": str(conf), "SLEUTELBOS_PKCS11_MODULE": module, "SLEUTELBOS_PKCS11_TOKEN": "bench",
            "SLEUTELBOS_PKCS11_PIN": pin}


def open_custody(data_dir: Path, software: bool) -> Any:
    from sleutelbos.custody import custody_for_tests

    return custody_for_tests(data_dir / "custody", MemorySink(), software=software)


async def open_identity(data_dir: Path, custody: Any, issuer: str) -> Any:
    from sleutelbos.identity.service import IdentityConfig, IdentityService
    from sleutelbos.identity.store import IdentityStore

    store = IdentityStore()
    await store.connect(f"sqlite:///{data_dir / 'identity.sqlite'}")
    service = IdentityService(store, custody, MemorySink(), IdentityConfig(issuer=issuer))
    await service.start()
    return service


def median_rate(samples: list[float]) -> float:
    return statistics.median(samples)


# --- 1 and 2: in process -------------------------------------------------------------------------------------
async def in_process(data_dir: Path, software: bool, issue_n: int, verify_n: int, rounds: int,
                     issuer: str) -> dict[str, Any]:
    import jwt as pyjwt
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    from sleutelbos.core.protocols import SYSTEM_ACTOR
    from sleutelbos.identity.models import ClientType
    from sleutelbos.identity.oauth2.rfc6749 import grants

    custody = open_custody(data_dir, software)
    service = await open_identity(data_dir, custody, issuer)
    creds = await service.bootstrap("Bench Operator", "NL")
    assert creds is not None
    client, secret = await service.create_client_for("Bench Operator", "bench-service", "meters:read",
                                                     ClientType.SERVICE_ACCOUNT)
    app, app_secret = await service.directory.create_client(SYSTEM_ACTOR, ClientType.APPLICATION, {
        "organisation_id": creds.organisation_id, "name": "bench-app", "grant_types": ["client_credentials"],
        "scope": "meters:read"})
    form = {"grant_type": "client_credentials", "scope": "meters:read"}
    signer = custody.signer_for("identity-token")

    async def issue_round(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            authenticated = await service.authenticate_client(client.id, secret)
            await grants.token(service, authenticated, form, None)
        return n / (time.perf_counter() - start)

    def sign_round(n: int) -> float:
        message = b"x" * 400
        start = time.perf_counter()
        for _ in range(n):
            signer.sign(message, "raw")
        return n / (time.perf_counter() - start)

    await issue_round(min(200, issue_n))  # warm caches
    issue, sign = [], []
    for _ in range(rounds):
        issue.append(await issue_round(issue_n))
        sign.append(sign_round(issue_n))

    token = (await grants.token(service, await service.authenticate_client(client.id, secret), form, None))[
        "access_token"]
    from sleutelbos.identity.verifier import TokenVerifier

    cached = service.verifier  # the verifier /user and introspection use: verified-signature cache on
    uncached = TokenVerifier(issuer=issuer, jwks=service.jwks_async, feed=service.feed, verified_cache_size=0)
    await uncached.start()
    key = load_der_public_key(signer.public_key().spki_der)
    cached.verify(token, audience="sleutelbos")
    uncached.verify(token, audience="sleutelbos")
    pyjwt.decode(token, key, algorithms=["ES256"], audience="sleutelbos", issuer=issuer)

    def ours(verifier: TokenVerifier, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            verifier.verify(token, audience="sleutelbos")
        return n / (time.perf_counter() - start)

    def reference(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            pyjwt.decode(token, key, algorithms=["ES256"], audience="sleutelbos", issuer=issuer)
        return n / (time.perf_counter() - start)

    cold, warm, theirs = [], [], []
    for _ in range(rounds):  # interleaved, so all three see the same machine load
        cold.append(ours(uncached, verify_n // 5))
        warm.append(ours(cached, verify_n))
        theirs.append(reference(verify_n // 5))
    await uncached.stop()
    result = {
        "sovereign": custody.sovereign, "issue": median_rate(issue), "sign": median_rate(sign),
        "cold": median_rate(cold), "warm": median_rate(warm), "pyjwt": median_rate(theirs),
        "app_id": app.id, "app_secret": app_secret,
    }
    await service.close()
    custody.close()
    return result


# --- 3: /user over HTTP from another process -------------------------------------------------------------------
def serve(data_dir: Path, port: int, software: bool) -> None:
    """Child process: the identity component's routes on uvicorn, on the prepared data dir (one of ``--workers``
    such processes; each follows the revocation feed on the shared database, as scaled workers do)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sleutelbos.identity import api

    async def main() -> None:
        custody = open_custody(data_dir, software)
        custody.bind_loop()
        service = await open_identity(data_dir, custody, f"http://127.0.0.1:{port}")

        async def health(request: Any) -> JSONResponse:
            return JSONResponse({"status": "ok"})

        app = Starlette(routes=[*api.routes(service), Route("/health", health)])
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                loop="uvloop", http="httptools", lifespan="off")
        # SO_REUSEPORT: several of these processes share the port, the kernel spreads the connections
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        await uvicorn.Server(config).serve(sockets=[sock])

    import uvloop

    uvloop.run(main())


def load(port: int, path: str, connections: int, seconds: float) -> None:
    """Child process: keep-alive HTTP/1.1 GETs on ``connections`` sockets for ``seconds``; prints ok/errors/rate."""
    import uvloop

    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    async def worker(deadline: float, counts: list[int]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            counts[0 if status == 200 else 1] += 1
        writer.close()

    async def main() -> None:
        counts = [0, 0]
        start = time.perf_counter()
        await asyncio.gather(*[worker(start + seconds, counts) for _ in range(connections)])
        elapsed = time.perf_counter() - start
        print(f"{counts[0]} {counts[1]} {counts[0] / elapsed:.1f}")

    uvloop.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_load(port: int, path: str, connections: int, seconds: float, env: dict[str, str]) -> tuple[int, int, float]:
    out = subprocess.run([sys.executable, __file__, "--load", str(port), path, str(connections), str(seconds)],
                         check=True, capture_output=True, text=True, env=env).stdout.split()
    return int(out[0]), int(out[1]), float(out[2])


def over_http(data_dir: Path, software: bool, app_id: str, app_secret: str, seconds: float, rounds: int,
              connections: int, env: dict[str, str], workers: int) -> dict[str, Any]:
    import httpx

    port = free_port()
    servers = [subprocess.Popen([sys.executable, __file__, "--serve", str(data_dir), str(port)]
                                + (["--software"] if software else []), env=env) for _ in range(workers)]
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("identity server did not start")
        time.sleep(2.0 if workers > 1 else 0)  # let the other workers bind too
        token = httpx.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                           auth=(app_id, app_secret)).json()["access_token"]
        user_path = f"/user?access_token={token}&app_id={app_id}"
        shape = httpx.get(base + user_path).json()
        assert shape["app_id"] == app_id and "roles" in shape and "organizations" in shape
        run_load(port, user_path, connections, 1.0, env)  # warm-up
        user, health, errors = [], [], 0
        for _ in range(rounds):
            _ok, bad, rate = run_load(port, user_path, connections, seconds, env)
            user.append(rate)
            errors += bad
            health.append(run_load(port, "/health", connections, seconds, env)[2])
        return {"user": median_rate(user), "health": median_rate(health), "errors": errors}
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="larger samples (several minutes)")
    parser.add_argument("--software", action="store_true", help="use custody's software key store, not SoftHSM2")
    parser.add_argument("--workers", type=int, default=1, help="server processes sharing the port for /user")
    parser.add_argument("--serve", nargs=2, metavar=("DATA_DIR", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=4, metavar=("PORT", "PATH", "CONNECTIONS", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), args.software)
        return
    if args.load:
        load(int(args.load[0]), args.load[1], int(args.load[2]), float(args.load[3]))
        return

    issue_n, verify_n, rounds, seconds = (10_000, 50_000, 5, 10.0) if args.full else (2_000, 10_000, 3, 4.0)
    with tempfile.TemporaryDirectory(prefix="sb-bench-identity-") as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        data_dir.mkdir()
        software = args.software
        env = dict(os.environ)
        if not software:
            hsm = softhsm_env(workdir)
            if hsm is None:
                print("SoftHSM2 not installed: falling back to custody's software key store")
                software = True
            else:
                env.update(hsm)
                os.environ.update(hsm)
        env["PYTHONPATH"] = str(ROOT / "src")
        issuer = "http://bench.invalid"
        r = asyncio.run(in_process(data_dir, software, issue_n, verify_n, rounds, issuer))
        store = "SoftHSM2 (PKCS#11, sovereign)" if r["sovereign"] else "software key store (not sovereign)"
        print(f"identity tokens benchmark — signing key in: {store}; {rounds} rounds, medians; machine shared")
        print(f"1. client-credentials issuance: {r['issue']:>9,.0f} tokens/s   (goal ≥ 1,000)   "
              f"reference: bare custody ES256 signatures {r['sign']:,.0f}/s → issuance at "
              f"{r['issue'] / r['sign']:.0%} of the signing ceiling")
        print(f"2a. JWT validation, ECDSA every call: {r['cold']:>9,.0f} tokens/s   "
              f"reference: PyJWT jwt.decode same token {r['pyjwt']:,.0f}/s → ratio {r['cold'] / r['pyjwt']:.2f}×")
        print(f"2b. JWT validation, JWKS cached + token seen before (signature cached, claims and revocation "
              f"checked): {r['warm']:>9,.0f} tokens/s   (goal ≥ 20,000)  "
              f"vs PyJWT {r['pyjwt']:,.0f}/s → ratio {r['warm'] / r['pyjwt']:.1f}×")
        h = over_http(data_dir, software, r["app_id"], r["app_secret"], seconds, rounds, 32, env, args.workers)
        print(f"3. GET /user over HTTP, {args.workers} server process(es): {h['user']:>9,.0f} req/s  (goal ≥ 3,000) "
              f"reference: GET /health same server {h['health']:,.0f}/s → {h['user'] / h['health']:.0%}; "
              f"Keyrock's published {KEYROCK_PUBLISHED_RPS}/s → {h['user'] / KEYROCK_PUBLISHED_RPS:.0f}× "
              f"(non-200 answers: {h['errors']})")


if __name__ == "__main__":
    main()
