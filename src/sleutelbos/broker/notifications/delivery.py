"""What a sender gets and how it reports failure (shared by the HTTP and MQTT bindings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class DeliveryFailed(Exception):
    """The receiver could not be reached or refused the notification; the dispatcher retries with backoff."""


@dataclass(frozen=True)
class Message:
    """A notification ready to send: its JSON body and the headers (HTTP headers; MQTT ``metadata``)."""

    body: dict[str, Any]
    headers: dict[str, str]
