"""Tamper-evident audit log (RFC 9162 Merkle tree, signed C2SP checkpoints, inclusion and consistency proofs).

Other components do not import this package: they record through ``ctx.audit_sink`` (the ``AuditSink`` protocol of
``sleutelbos.core``). What is exported here is for the composition root, the console and tools: the service and the
types its answers carry.
"""

from sleutelbos.audit.checkpoint import Checkpoint, CheckpointError, NoteVerifier
from sleutelbos.audit.merkle import ProofError, verify_consistency, verify_inclusion
from sleutelbos.audit.service import (
    AuditLog,
    CheckpointRefused,
    ConsistencyProof,
    EntryNotFound,
    InclusionProof,
    InvalidProofRequest,
    InvalidSearch,
    TreeSizeBeyondLog,
)
from sleutelbos.audit.store import StoredCheckpoint, StoredEntry

__all__ = [
    "AuditLog",
    "Checkpoint",
    "CheckpointError",
    "CheckpointRefused",
    "ConsistencyProof",
    "EntryNotFound",
    "InclusionProof",
    "InvalidProofRequest",
    "InvalidSearch",
    "NoteVerifier",
    "ProofError",
    "StoredCheckpoint",
    "StoredEntry",
    "TreeSizeBeyondLog",
    "verify_consistency",
    "verify_inclusion",
]
