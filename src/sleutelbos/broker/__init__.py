"""NGSI-LD context broker (ETSI GS CIM 009 v1.8): entities, batch operations, queries, @context management.

What other components may use: :class:`BrokerService` (registered as ``ctx.services["broker"]`` by the component),
the expanded entity shape of :mod:`sleutelbos.broker.entity`, :class:`ContextStore`/:class:`CompiledContext` to
expand names, and the ETSI error types.
"""

from sleutelbos.broker.context import CompiledContext, ContextStore
from sleutelbos.broker.entity import AttributeInstance, Entity
from sleutelbos.broker.errors import NgsiLdError
from sleutelbos.broker.service import BatchResult, BrokerService, UpdateResult

__all__ = [
    "AttributeInstance",
    "BatchResult",
    "BrokerService",
    "CompiledContext",
    "ContextStore",
    "Entity",
    "NgsiLdError",
    "UpdateResult",
]
