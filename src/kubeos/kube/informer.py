"""List-then-watch informer with a local cache, the way client-go's reflector works.

Why: a controller must decide from a consistent, cheap view of the cluster instead of
listing on every pass. The informer lists once (paginated), then watches from the list's
resourceVersion; when the server says 410 Gone (our version was compacted away) it lists
again and reports the difference as events, so handlers never miss a change. Each watch
request carries a server-side timeout, and a client-side deadline slightly longer catches a
connection that went silent without closing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any, Generic, Literal, TypeVar

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

log = logging.getLogger(__name__)

T = TypeVar("T")
EventType = Literal["ADDED", "MODIFIED", "DELETED"]
# (event type, new object or None when deleted, previous cached object or None)
Handler = Callable[[EventType, Any, Any], None]


def meta_of(obj: Any) -> Any:
    """The metadata of a lightkube object, typed model or generic dict alike."""
    if isinstance(obj, dict):
        return _DictMeta(obj.get("metadata") or {})
    return obj.metadata


class _DictMeta:
    """Attribute access to a generic resource's metadata without building an ObjectMeta."""

    __slots__ = ("_m",)

    def __init__(self, meta: dict[str, Any]) -> None:
        self._m = meta

    def __getattr__(self, name: str) -> Any:
        return self._m.get(name)


def object_key(obj: Any) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = meta_of(obj)
    return f"{meta.namespace}/{meta.name}" if meta.namespace else str(meta.name)


def resource_version(obj: Any) -> str:
    return str(meta_of(obj).resourceVersion or "")


class Informer(Generic[T]):
    """Cache of one resource type (optionally one namespace and selectors), kept by watching.

    Handlers are plain callables run on the event loop; they should be quick (typically they
    only add keys to a work queue).
    """

    def __init__(
        self,
        client: AsyncClient,
        resource: Any,
        *,
        namespace: str | None = None,
        labels: dict[str, Any] | None = None,
        fields: dict[str, Any] | None = None,
        watch_timeout: int = 300,
        page_size: int = 500,
        name: str | None = None,
    ) -> None:
        self._client = client
        self._resource = resource
        self._namespace = namespace
        self._labels = labels
        self._fields = fields
        self._watch_timeout = max(1, watch_timeout)
        self._page_size = page_size
        self.name = name or getattr(resource, "__name__", "informer")
        self._store: dict[str, Any] = {}
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()
        self._resource_version = ""
        self.relists = 0

    # -- reading ----------------------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        return self._store.get(key)

    def items(self) -> Iterator[Any]:
        return iter(list(self._store.values()))

    def keys(self) -> list[str]:
        return list(self._store)

    def __len__(self) -> int:
        return len(self._store)

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    @property
    def last_resource_version(self) -> str:
        return self._resource_version

    def add_handler(self, handler: Handler) -> None:
        """Call *handler* on every change; it also sees the current contents as ADDED."""
        self._handlers.append(handler)
        for obj in list(self._store.values()):
            self._call(handler, "ADDED", obj, None)

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch forever; relist on 410 Gone; back off on other errors."""
        failures = 0
        while True:
            try:
                await self._list()
                failures = 0
                await self._watch()
            except asyncio.CancelledError:
                raise
            except ApiError as error:
                if error.status.code == 410:
                    log.info("%s: resourceVersion too old, listing again", self.name)
                    self._resource_version = ""
                    continue
                failures += 1
                log.warning("%s: API error %s: %s", self.name, error.status.code, error)
            except (httpx2.HTTPError, OSError, TimeoutError) as error:
                failures += 1
                log.warning("%s: connection problem: %r", self.name, error)
            await asyncio.sleep(min(30.0, 0.2 * 2 ** min(failures, 8)) * random.uniform(0.5, 1))

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"labels": self._labels, "fields": self._fields}
        if self._namespace is not None:
            params["namespace"] = self._namespace
        elif _is_namespaced(self._resource):
            params["namespace"] = "*"
        return params

    async def _list(self) -> None:
        listing = self._client.list(self._resource, chunk_size=self._page_size, **self._params())
        fresh: dict[str, Any] = {}
        async for obj in listing:
            fresh[object_key(obj)] = obj
        self._resource_version = listing.resourceVersion
        self.relists += 1
        old = self._store
        self._store = fresh
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._emit("ADDED", obj, None)
            elif resource_version(before) != resource_version(obj):
                self._emit("MODIFIED", obj, before)
        for key, before in old.items():
            if key not in fresh:
                self._emit("DELETED", None, before)
        self._synced.set()

    async def _watch(self) -> None:
        timeout = self._watch_timeout + random.randint(0, max(1, self._watch_timeout // 10))
        stream = self._client.watch(
            self._resource,
            server_timeout=timeout,
            resource_version=self._resource_version or None,
            **self._params(),
        ).__aiter__()
        while True:
            # lightkube reopens the stream itself when the server ends it; this deadline only
            # fires if nothing (not even a reconnect) happens for longer than a server timeout.
            async with asyncio.timeout(timeout + 30):
                event_type, obj = await stream.__anext__()
            self._apply(event_type, obj)

    def _apply(self, event_type: str, obj: Any) -> None:
        version = resource_version(obj)
        if version:
            self._resource_version = version
        if event_type == "BOOKMARK":
            return
        key = object_key(obj)
        before = self._store.get(key)
        if event_type == "DELETED":
            self._store.pop(key, None)
            self._emit("DELETED", None, before if before is not None else obj)
        else:
            self._store[key] = obj
            self._emit("ADDED" if before is None else "MODIFIED", obj, before)

    def _emit(self, event_type: EventType, obj: Any, old: Any) -> None:
        for handler in self._handlers:
            self._call(handler, event_type, obj, old)

    def _call(self, handler: Handler, event_type: EventType, obj: Any, old: Any) -> None:
        try:
            handler(event_type, obj, old)
        except Exception:
            log.exception("%s: event handler failed", self.name)


def _is_namespaced(resource: Any) -> bool:
    from lightkube.core import resource as r

    return isinstance(resource, type) and issubclass(resource, r.NamespacedResource)
