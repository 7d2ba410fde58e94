"""C2SP signed-note checkpoints with Ed25519 (0x01) and ECDSA P-256 (0x02) signers, the checkpoint policy, the
refusal to sign an inconsistent checkpoint, the software key, and the lazy signer lookup of the component."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import stat
from pathlib import Path

import pytest
from audit_samples import ORIGIN, event
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sleutelbos.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    load_verifier,
    open_note,
    sign_checkpoint,
)
from sleutelbos.audit.component import build
from sleutelbos.audit.merkle import EMPTY_ROOT
from sleutelbos.audit.service import AuditLog, CheckpointRefused
from sleutelbos.audit.software_signer import KEY_FILE, SoftwareSigner
from sleutelbos.audit.store import open_store
from sleutelbos.core.protocols import PublicKeyInfo, SignatureEncoding
from sleutelbos.core.settings import Settings
from sleutelbos.stack import StackContext


class EcdsaSigner:
    """An ES256 signer with the custody Signer shape (software here; custody's lives in the HSM)."""

    algorithm = "ES256"
    sovereign = False
    key_id = "ecdsa-test-1"

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def sign(self, message: bytes, encoding: SignatureEncoding = "raw") -> bytes:
        assert encoding == "der"
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    def public_key(self) -> PublicKeyInfo:
        spki = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return PublicKeyInfo(self.key_id, "ES256", spki)


CP = Checkpoint(ORIGIN, 20852163, base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="))


def test_checkpoint_body_is_the_tlog_checkpoint_text() -> None:
    assert CP.body() == f"{ORIGIN}\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert Checkpoint.parse_body(CP.body()) == CP
    for bad in (f"{ORIGIN}\n012\n{base64.b64encode(EMPTY_ROOT).decode()}\n", f"{ORIGIN}\n1\nAAAA\n", f"{ORIGIN}\n1\n",
                f"\n1\n{base64.b64encode(EMPTY_ROOT).decode()}\n"):
        with pytest.raises(CheckpointError):
            Checkpoint.parse_body(bad)


def test_ed25519_note_follows_signed_note(signer: SoftwareSigner) -> None:
    note, verifier = sign_checkpoint(CP, signer)
    text, sig_line = note.split("\n\n")
    assert text + "\n" == CP.body()
    assert sig_line.startswith(f"\u2014 {ORIGIN} ")
    raw_pub = verifier.public_key
    assert verifier.key_id == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw_pub).digest()[:4]
    blob = base64.b64decode(sig_line.split(" ")[2])
    assert blob[:4] == verifier.key_id and len(blob) == 4 + 64
    assert open_note(note, [verifier])[0] == CP
    assert NoteVerifier.from_vkey(verifier.vkey) == verifier


def test_ecdsa_note_uses_type_0x02_and_the_spki_key_id() -> None:
    ecdsa = EcdsaSigner()
    note, verifier = sign_checkpoint(CP, ecdsa)
    spki = ecdsa.public_key().spki_der
    assert verifier.sig_type == 0x02 and verifier.key_id == hashlib.sha256(spki).digest()[:4]
    assert verifier.vkey.split("+", 2)[2] == base64.b64encode(b"\x02" + spki).decode()
    assert open_note(note, [verifier])[0] == CP
    assert NoteVerifier.from_vkey(verifier.vkey) == verifier


def test_unknown_signatures_are_ignored_and_a_bad_known_one_rejects(signer: SoftwareSigner) -> None:
    note, verifier = sign_checkpoint(CP, signer)
    other_note, _ = sign_checkpoint(CP, EcdsaSigner())
    combined = note + other_note.split("\n\n")[1]
    assert open_note(combined, [verifier])[0] == CP
    tampered = note.replace("20852163", "20852164")
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(tampered, [verifier])
    with pytest.raises(CheckpointError, match="not signed by any trusted key"):
        open_note(other_note, [verifier])
    with pytest.raises(CheckpointError):
        open_note(CP.body(), [verifier])


def test_verifier_keys_load_from_vkey_text_files_and_pem(signer: SoftwareSigner, tmp_path: Path) -> None:
    verifier = NoteVerifier.for_public_key(ORIGIN, signer.public_key())
    (tmp_path / "k.vkey").write_text(verifier.vkey + "\n")
    pem = serialization.load_der_public_key(signer.public_key().spki_der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "k.pem").write_bytes(pem)
    assert load_verifier(verifier.vkey, ORIGIN) == verifier
    assert load_verifier(str(tmp_path / "k.vkey"), ORIGIN) == verifier
    assert load_verifier(str(tmp_path / "k.pem"), ORIGIN) == verifier
    with pytest.raises(CheckpointError, match="does not match"):
        NoteVerifier.from_vkey(verifier.vkey.replace(verifier.key_id.hex(), "00000000"))


def test_software_key_is_0600_and_not_sovereign(tmp_path: Path) -> None:
    first = SoftwareSigner.load_or_create(tmp_path)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.sovereign is False and first.algorithm == "EdDSA"
    assert SoftwareSigner.load_or_create(tmp_path).public_key() == first.public_key()
    path.chmod(0o644)
    with pytest.raises(Exception, match="0600"):
        SoftwareSigner.load_or_create(tmp_path)


async def test_checkpoint_every_m_entries(store_url: str, signer: SoftwareSigner) -> None:
    log = AuditLog(open_store(store_url), origin=ORIGIN, signer_source=lambda: signer,
                   checkpoint_interval_s=3600, checkpoint_entries=25)
    await log.start()
    await asyncio.gather(*(log.record(event(i)) for i in range(30)))
    for _ in range(100):
        if await log.latest_checkpoint() is not None:
            break
        await asyncio.sleep(0.05)
    latest = await log.latest_checkpoint()
    assert latest is not None and latest.tree_size == 30
    await log.stop(final_checkpoint=False)


async def test_checkpoint_every_n_seconds_only_when_the_tree_grew(tmp_path: Path, signer: SoftwareSigner) -> None:
    log = AuditLog(open_store(f"sqlite:///{tmp_path / 'a.sqlite'}"), origin=ORIGIN, signer_source=lambda: signer,
                   checkpoint_interval_s=0.1, checkpoint_entries=10**6)
    await log.start()
    await log.record(event(0))
    await asyncio.sleep(0.5)
    first = await log.store.checkpoints()
    assert [c.tree_size for c in first] == [1]
    await log.record(event(1))
    await asyncio.sleep(0.5)
    assert [c.tree_size for c in await log.store.checkpoints()] == [1, 2]
    await log.stop(final_checkpoint=False)


async def test_no_checkpoint_inconsistent_with_the_last_one(tmp_path: Path, signer: SoftwareSigner) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    log = AuditLog(open_store(url), origin=ORIGIN, signer_source=lambda: signer)
    await log.start()
    await asyncio.gather(*(log.record(event(i)) for i in range(8)))
    assert (await log.checkpoint()) is not None
    await log.stop(final_checkpoint=False)
    with sqlite3.connect(tmp_path / "a.sqlite") as conn:  # rewrite history under the log: the subtree of 0..7
        conn.execute("UPDATE audit_entries SET subtrees = ? WHERE idx = 7", (b"\x05" * 96,))
    log = AuditLog(open_store(url), origin=ORIGIN, signer_source=lambda: signer)
    await log.start()
    await log.record(event(8))
    with pytest.raises(CheckpointRefused, match="not consistent"):
        await log.checkpoint()
    assert [c.tree_size for c in await log.store.checkpoints()] == [8]
    await log.stop(final_checkpoint=False)


async def test_missing_signer_refuses_the_checkpoint_but_appends_go_on(tmp_path: Path) -> None:
    def no_hsm() -> SoftwareSigner:
        raise RuntimeError("token not present")

    log = AuditLog(open_store(f"sqlite:///{tmp_path / 'a.sqlite'}"), origin=ORIGIN, signer_source=no_hsm)
    await log.start()
    await log.record(event(0))
    with pytest.raises(CheckpointRefused, match="no checkpoint signer"):
        await log.checkpoint()
    await log.stop(final_checkpoint=False)


class Provider:
    def __init__(self) -> None:
        self.signer = EcdsaSigner()
        self.asked: list[str] = []

    def signer_for(self, purpose: str) -> EcdsaSigner:
        self.asked.append(purpose)
        return self.signer

    def public_keys_for(self, purpose: str) -> list[PublicKeyInfo]:
        return [self.signer.public_key()]


async def test_component_registers_the_sink_and_asks_custody_lazily(tmp_path: Path) -> None:
    ctx = StackContext(settings=Settings(data_dir=tmp_path, audit_origin=ORIGIN))
    component = build(ctx)
    assert ctx.audit_sink is component.log and ctx.services["audit"] is component.log
    await component.start()
    await component.log.record(event(0))
    software = await component.log.checkpoint()
    assert software is not None and NoteVerifier.from_vkey(software.vkey).sig_type == 0x01
    assert (tmp_path / KEY_FILE).exists()
    provider = Provider()
    ctx.signers = provider  # custody is built after audit
    await component.log.record(event(1))
    custody = await component.log.checkpoint()
    assert custody is not None and provider.asked == ["audit-checkpoint"]
    verifier = NoteVerifier.from_vkey(custody.vkey)
    assert verifier.sig_type == 0x02 and open_note(custody.note, [verifier])[0].tree_size == 2
    await component.stop()


async def test_checkpoint_is_retried_after_the_signer_comes_back(tmp_path: Path, signer: SoftwareSigner) -> None:
    available = {"hsm": False}

    def source() -> SoftwareSigner:
        if not available["hsm"]:
            raise RuntimeError("token not present")
        return signer

    log = AuditLog(open_store(f"sqlite:///{tmp_path / 'a.sqlite'}"), origin=ORIGIN, signer_source=source,
                   checkpoint_interval_s=0.1, checkpoint_entries=1)
    await log.start()
    await asyncio.gather(*(log.record(event(i)) for i in range(3)))
    await asyncio.sleep(0.3)
    assert await log.latest_checkpoint() is None
    available["hsm"] = True
    for _ in range(50):
        if await log.latest_checkpoint() is not None:
            break
        await asyncio.sleep(0.05)
    latest = await log.latest_checkpoint()
    assert latest is not None and latest.tree_size == 3
    await log.stop(final_checkpoint=False)
