"""The runtime against a real API server: informer, leader election, events, probes."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Event
from prometheus_client import CollectorRegistry, Counter

from kubeos.kube.events import EventRecorder, Ref
from kubeos.kube.informer import Informer
from kubeos.kube.leader import LeaderElector
from kubeos.kube.probes import ProbeServer
from kubeos.sim.controlplane import ControlPlane

pytestmark = pytest.mark.cluster


async def until(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_informer_lists_watches_and_filters(client: AsyncClient, namespace: str) -> None:
    await client.create(ConfigMap(metadata=ObjectMeta(name="a", labels={"app": "x"})))
    await client.create(ConfigMap(metadata=ObjectMeta(name="skip", labels={"app": "y"})))
    informer: Informer[Any] = Informer(client, ConfigMap, namespace=namespace,
                                       labels={"app": "x"}, watch_timeout=2)
    seen: list[tuple[str, str]] = []
    informer.add_handler(lambda t, new, old: seen.append(
        (t, (new if new is not None else old).metadata.name)))
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_synced()
        assert informer.keys() == [f"{namespace}/a"]
        await client.create(ConfigMap(metadata=ObjectMeta(name="b", labels={"app": "x"})))
        await client.patch(ConfigMap, "a", {"data": {"k": "v"}})
        await client.delete(ConfigMap, "b")
        await until(lambda: ("DELETED", "b") in seen)
        # Survives the server ending the watch (timeout 2 s) without losing events.
        await asyncio.sleep(3)
        await client.create(ConfigMap(metadata=ObjectMeta(name="c", labels={"app": "x"})))
        await until(lambda: informer.get(f"{namespace}/c") is not None)
        assert informer.get(f"{namespace}/a").data == {"k": "v"}
        assert ("ADDED", "skip") not in seen
    finally:
        task.cancel()


async def test_leader_election_one_leader_and_handover(
        control_plane: ControlPlane, namespace: str) -> None:
    clients = [control_plane.async_client() for _ in range(2)]
    electors = [
        LeaderElector(c, name="lock", namespace=namespace, identity=f"id{i}",
                      lease_duration=2, renew_deadline=1.5, retry_period=0.2)
        for i, c in enumerate(clients)
    ]
    leading: list[str] = []
    stop = [asyncio.Event(), asyncio.Event()]

    def work(i: int) -> Any:
        async def run() -> None:
            leading.append(f"id{i}")
            await stop[i].wait()
        return run

    tasks = [asyncio.create_task(e.run(work(i))) for i, e in enumerate(electors)]
    try:
        await until(lambda: len(leading) == 1)
        await asyncio.sleep(1.0)
        assert len(leading) == 1, "only one candidate may lead"
        first = int(leading[0][-1])
        stop[first].set()  # the leader finishes and releases the lease
        await until(lambda: len(leading) == 2, timeout=10)
        assert leading[1] != leading[0]
    finally:
        for s in stop:
            s.set()
        for t in tasks:
            t.cancel()
        for c in clients:
            await c.close()


async def test_event_recorder_aggregates_into_one_event(
        client: AsyncClient, namespace: str) -> None:
    cm = await client.create(ConfigMap(metadata=ObjectMeta(name="subject")))
    recorder = EventRecorder(client, component="test", min_update_interval=0.1)
    ref = Ref.of(cm, api_version="v1", kind="ConfigMap")
    task = asyncio.create_task(recorder.run())
    try:
        for _ in range(50):
            recorder.normal(ref, "Tested", "same thing again")
        await asyncio.sleep(0.3)
        recorder.normal(ref, "Tested", "same thing again")
        await asyncio.sleep(0.5)
        events = [e async for e in client.list(Event, namespace=namespace)
                  if e.reason == "Tested"]
        assert len(events) == 1
        assert events[0].count == 51
        assert events[0].involvedObject.name == "subject"
    finally:
        task.cancel()


async def test_probe_server_serves_metrics_and_health() -> None:
    registry = CollectorRegistry()
    Counter("kubeos_test_total", "x", registry=registry).inc()
    ready = {"ok": False}
    server = ProbeServer("127.0.0.1", 0, registry=registry, ready=lambda: ready["ok"])
    await server.start()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(path: str) -> tuple[int, str]:
        try:
            with opener.open(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    try:
        status, body = await asyncio.to_thread(get, "/metrics")
        assert status == 200 and "kubeos_test_total 1.0" in body
        assert (await asyncio.to_thread(get, "/healthz"))[0] == 200
        assert (await asyncio.to_thread(get, "/readyz"))[0] == 503
        ready["ok"] = True
        assert (await asyncio.to_thread(get, "/readyz"))[0] == 200
        assert (await asyncio.to_thread(get, "/nope"))[0] == 404
    finally:
        await server.stop()
