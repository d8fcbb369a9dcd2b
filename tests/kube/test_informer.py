"""Informer: list then watch, cache by key, relist on 410 Gone with a diff as events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import Status

from kubeos.kube.informer import Informer, object_key
from kubeos.kube.resources import OSInstanceResource


def obj(name: str, rv: str, ns: str = "default") -> Any:
    return OSInstanceResource(metadata={"name": name, "namespace": ns, "resourceVersion": rv})


class _Listing:
    def __init__(self, items: list[Any], rv: str) -> None:
        self._items = items
        self.resourceVersion = rv

    async def __aiter__(self) -> AsyncIterator[Any]:
        for item in self._items:
            yield item


class FakeClient:
    """Serves scripted lists and watch streams; records the watch resourceVersions."""

    def __init__(self, lists: list[tuple[list[Any], str]], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.watch_versions: list[str | None] = []

    def list(self, res: Any, **kw: Any) -> _Listing:
        items, rv = self.lists.pop(0)
        return _Listing(items, rv)

    def watch(self, res: Any, **kw: Any) -> AsyncIterator[tuple[str, Any]]:
        self.watch_versions.append(kw.get("resource_version"))
        script = self.watches.pop(0) if self.watches else []

        async def stream() -> AsyncIterator[tuple[str, Any]]:
            for step in script:
                if isinstance(step, BaseException):
                    raise step
                yield step
            await asyncio.Event().wait()

        return stream()


def gone() -> ApiError:
    return ApiError(status=Status(code=410, message="too old resource version"))


async def test_list_watch_relist_on_gone() -> None:
    a1, b1 = obj("a", "1"), obj("b", "2")
    client = FakeClient(
        lists=[([a1, b1], "2"), ([obj("a", "5"), obj("c", "6")], "6")],
        watches=[[("MODIFIED", obj("a", "3")), ("DELETED", obj("b", "4")), gone()]],
    )
    informer: Informer[Any] = Informer(client, OSInstanceResource, namespace="default")  # type: ignore[arg-type]
    events: list[tuple[str, str]] = []
    informer.add_handler(
        lambda t, new, old: events.append((t, object_key(new if new is not None else old)))
    )
    task = asyncio.create_task(informer.run())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if informer.relists == 2:
            break
    await asyncio.sleep(0.05)
    task.cancel()
    assert informer.has_synced
    assert client.watch_versions == ["2", "6"]
    assert sorted(informer.keys()) == ["default/a", "default/c"]
    assert events == [
        ("ADDED", "default/a"),
        ("ADDED", "default/b"),
        ("MODIFIED", "default/a"),
        ("DELETED", "default/b"),
        ("MODIFIED", "default/a"),  # relist found a newer version
        ("ADDED", "default/c"),
    ]
