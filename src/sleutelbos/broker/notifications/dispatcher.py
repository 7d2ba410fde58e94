"""Notification dispatch (ETSI GS CIM 009 v1.8, clause 5.8.6 notification behaviour; 5.2.14 status members).

One worker task per subscription with a bounded queue, so that:

* the write path only puts :class:`~sleutelbos.broker.notifications.content.Item` objects on a queue (never awaits);
* a slow or unreachable receiver only holds its own subscription's worker — others keep their pace;
* notifications of one subscription go out in the order the changes were committed (per-entity order preserved);
* a failed delivery is recorded (``timesFailed``, ``lastFailure``), written to ``broker_notifications_pending`` with
  everything queued behind it, and retried with exponential backoff (``retry_base_s`` doubling up to
  ``retry_max_s``) before anything newer is sent; pending notifications survive a restart;
* ``throttling`` spaces notifications at least that many seconds apart; items that arrive meanwhile are sent
  together in the next notification's ``data``; a backlog is sent in notifications of up to ``max_batch`` entities.

A full queue (the receiver far behind the write rate) moves the backlog to the pending table rather than dropping it.
Status counters live on the subscription object and are flushed to the store once a second and at stop.

**The notifier thread** (``threaded=True``, the default; docs/decisions/0607). The workers, their HTTP and MQTT
clients and the rendering run on an event loop of their own in a separate thread. On the broker's loop a batch
upsert is long stretches of synchronous work (validation, SQL on the loop's thread for SQLite); a worker sharing that
loop waited behind each of them at every ``await`` of a send (connect, write, read the answer), so a notification
took several write requests' time and the delivery rate fell below the write rate at a few thousand updates/s. In
its own thread it is scheduled by the interpreter every few milliseconds whatever the write path does. The matcher
still runs on the write path and hands each transaction's items over with one ``call_soon_threadsafe``; everything
that touches the database (pending table, status counters) is run back on the broker's loop
(``run_coroutine_threadsafe``), so SQLite connections never cross threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from sleutelbos.broker.entity import now_iso
from sleutelbos.broker.notifications.content import Item, build_message
from sleutelbos.broker.notifications.delivery import DeliveryFailed, Message
from sleutelbos.broker.notifications.http import HttpSender
from sleutelbos.broker.notifications.mqtt import MqttSender
from sleutelbos.broker.subscriptions.model import Subscription
from sleutelbos.broker.subscriptions.store import SubscriptionStore
from sleutelbos.core.tasks import cancel_and_wait

log = logging.getLogger("sleutelbos.broker.notifications")


class Senders:
    """The bindings by URI scheme."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.http = HttpSender(timeout_s)
        self.mqtt = MqttSender(timeout_s)

    async def send(self, sub: Subscription, message: Message) -> None:
        endpoint = sub.endpoint
        if endpoint.scheme in ("mqtt", "mqtts"):
            await self.mqtt.send(endpoint.uri, message, endpoint.notifier("MQTT-Version", "mqtt3.1.1"),
                                 endpoint.notifier("MQTT-QoS", "0"))
        else:
            await self.http.send(endpoint.uri, message)

    async def close(self) -> None:
        await self.http.close()
        await self.mqtt.close()


class SubscriptionWorker:
    def __init__(self, sub: Subscription, dispatcher: Dispatcher) -> None:
        self.sub = sub
        self.dispatcher = dispatcher
        # A plain deque and one wake-up event instead of an asyncio.Queue: the write path hands over a whole
        # transaction's items with one ``extend`` (an asyncio.Queue costs a put per item and a get per item).
        self.queue: deque[Item] = deque()
        self.overflow: list[Item] = []
        self.has_pending = True  # look in the table first: a restart may have left some
        self.last_sent = 0.0
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()

    def offer(self, item: Item) -> None:
        self.offer_many([item])

    def offer_many(self, items: list[Item]) -> None:
        """Called from the write path: never awaits; beyond ``queue_size`` items go to ``overflow`` (spilled to the
        pending table by the worker) so nothing is dropped and order is kept."""
        if self.overflow or len(self.queue) + len(items) > self.dispatcher.queue_size:
            self.overflow.extend(items)
        else:
            self.queue.extend(items)
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"notify {self.sub.id}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None
        await self._spill()

    def _drain(self, limit: int) -> list[Item]:
        queue = self.queue
        count = min(limit, len(queue))
        return [queue.popleft() for _ in range(count)]

    async def _spill(self) -> None:
        """Move everything queued (and overflowed) to the pending table, in order."""
        items = self._drain(len(self.queue))
        if self.overflow:
            items = [*items, *self.overflow]
            self.overflow = []
        if not items:
            return
        size = self.dispatcher.max_batch
        payloads = [build_message(self.sub, group[i:i + size]).body
                    for group in by_reason(items) for i in range(0, len(group), size)]
        try:
            await self.dispatcher.worker_store.add_pending(self.sub.tenant, self.sub.id, payloads, now_iso())
            self.has_pending = True
        except Exception:
            log.exception("could not persist pending notifications", extra={"subscription": self.sub.id})

    async def _run(self) -> None:
        backoff = self.dispatcher.retry_base_s
        while True:
            try:
                if self.overflow:
                    await self._spill()
                if self.has_pending:
                    ok = await self._send_pending()
                    if ok:
                        backoff = self.dispatcher.retry_base_s
                        continue
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, self.dispatcher.retry_max_s)
                    await self._spill()
                    continue
                if not self.queue:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                await self._throttle()
                items = self._drain(self.dispatcher.max_batch)
                if not items:
                    continue
                messages = [build_message(self.sub, group) for group in by_reason(items)]
                for n, message in enumerate(messages):
                    if not await self._deliver(message):
                        await self.dispatcher.worker_store.add_pending(self.sub.tenant, self.sub.id,
                                                                       [m.body for m in messages[n:]], now_iso())
                        self.has_pending = True
                        await self._spill()
                        await self._sleep(backoff)
                        backoff = min(backoff * 2, self.dispatcher.retry_max_s)
                        break
                else:
                    backoff = self.dispatcher.retry_base_s
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification worker error", extra={"subscription": self.sub.id})
                await asyncio.sleep(backoff)

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _throttle(self) -> None:
        if self.sub.throttling > 0:
            wait = self.last_sent + self.sub.throttling - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)

    async def _send_pending(self) -> bool:
        """Send pending notifications oldest first; True when all went out, False at the first failure."""
        store = self.dispatcher.worker_store
        while True:
            batch = await store.pending(self.sub.tenant, self.sub.id)
            if not batch:
                self.has_pending = False
                return True
            for pending in batch:
                message = build_message_from_body(self.sub, pending.payload)
                if not await self._deliver(message):
                    await store.attempted(pending.seq)
                    return False
                await store.delivered(pending.seq)

    async def _deliver(self, message: Message) -> bool:
        sub = self.sub
        now = now_iso()
        sub.last_notification = now
        self.last_sent = asyncio.get_running_loop().time()
        try:
            await self.dispatcher.senders.send(sub, message)
        except DeliveryFailed as exc:
            sub.times_failed += 1
            sub.last_failure = now_iso()
            self.dispatcher.dirty(sub)
            log.warning("notification failed", extra={"subscription": sub.id, "reason": str(exc)})
            return False
        sub.times_sent += 1
        sub.last_success = now_iso()
        self.dispatcher.dirty(sub)
        self.dispatcher.delivered_hook(sub, message)
        return True


def by_reason(items: list[Item]) -> list[list[Item]]:
    """Consecutive items with the same trigger reason go in one notification (it has one ``triggerReason``)."""
    groups: list[list[Item]] = []
    for item in items:
        if groups and groups[-1][-1].reason == item.reason:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def build_message_from_body(sub: Subscription, body: dict[str, Any]) -> Message:
    """A pending notification as stored (its body), with the headers of the subscription as it is now."""
    template = build_message(sub, [])
    return Message(body=body, headers=template.headers)


class _OnLoop:
    """The subscription store seen from the notifier thread: each call runs on the broker's loop."""

    def __init__(self, inner: SubscriptionStore, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.loop = loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self.loop))

        return call


class Dispatcher:
    """Owns the workers; :meth:`offer_many` is what the matcher calls from the write path."""

    def __init__(self, store: SubscriptionStore, *, queue_size: int = 10_000, max_batch: int = 500,
                 retry_base_s: float = 1.0, retry_max_s: float = 60.0, timeout_s: float = 5.0,
                 threaded: bool = True) -> None:
        self.store = store
        self.worker_store: Any = store
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.senders = Senders(timeout_s)
        self.workers: dict[tuple[str, str], SubscriptionWorker] = {}
        self._dirty: dict[tuple[str, str], Subscription] = {}
        self._dirty_lock = threading.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self.delivered_hook: Callable[[Subscription, Message], None] = lambda sub, message: None
        self.threaded = threaded
        self._loop: asyncio.AbstractEventLoop | None = None  # the workers' loop
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="notification status flush")
        if not self.threaded:
            self._loop = asyncio.get_running_loop()
            return
        self.worker_store = _OnLoop(self.store, asyncio.get_running_loop())
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="sleutelbos-notifier", daemon=True)
        self._thread.start()

    async def _on_workers_loop(self, coro: Any) -> Any:
        if self._thread is None or self._loop is None:  # not threaded, or never started
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        if self.threaded and self._loop is not None:
            self._loop.call_soon_threadsafe(fn, *args)
        else:
            fn(*args)

    async def _stop_workers(self) -> None:
        for worker in list(self.workers.values()):
            await worker.stop()
        self.workers.clear()
        await self.senders.close()

    async def stop(self) -> None:
        await self._on_workers_loop(self._stop_workers())
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
            self._loop.close()
            self._thread = None
        self._loop = None
        await cancel_and_wait(self._flusher)
        await self.flush()

    def attach(self, sub: Subscription) -> None:
        self._soon(self._attach, sub)

    def _attach(self, sub: Subscription) -> None:
        key = (sub.tenant, sub.id)
        worker = self.workers.get(key)
        if worker is not None:
            worker.sub = sub  # an update: same queue, new parameters
            return
        worker = self.workers[key] = SubscriptionWorker(sub, self)
        worker.start()

    async def detach(self, tenant: str, sub_id: str) -> None:
        await self._on_workers_loop(self._detach(tenant, sub_id))

    async def _detach(self, tenant: str, sub_id: str) -> None:
        worker = self.workers.pop((tenant, sub_id), None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker.task

    def offer(self, sub: Subscription, item: Item) -> None:
        self.offer_many(sub, [item])

    def offer_many(self, sub: Subscription, items: list[Item]) -> None:
        """One transaction's items for one subscription, in commit order (the matcher's call; never blocks)."""
        self._soon(self._offer_many, sub, items)

    def offer_all(self, batches: list[tuple[Subscription, list[Item]]]) -> None:
        """One transaction's items for every subscription it fired, in one hand-over to the notifier thread (one
        wake-up of that thread per transaction, not one per subscription)."""
        self._soon(self._offer_all, batches)

    def _offer_all(self, batches: list[tuple[Subscription, list[Item]]]) -> None:
        for sub, items in batches:
            self._offer_many(sub, items)

    def _offer_many(self, sub: Subscription, items: list[Item]) -> None:
        worker = self.workers.get((sub.tenant, sub.id))
        if worker is not None:
            worker.offer_many(items)

    def dirty(self, sub: Subscription) -> None:
        with self._dirty_lock:
            self._dirty[(sub.tenant, sub.id)] = sub

    async def flush(self) -> None:
        with self._dirty_lock:
            if not self._dirty:
                return
            subs, self._dirty = list(self._dirty.values()), {}
        await self.store.save_status([(s.times_sent, s.times_failed, s.last_notification, s.last_success,
                                       s.last_failure, s.tenant, s.id) for s in subs])

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.flush()
            except Exception:
                log.exception("could not save subscription status")
