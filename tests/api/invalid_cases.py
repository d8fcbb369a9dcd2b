"""Invalid objects and the field each error must name.

Shared by the offline schema tests (tests/api) and the real API server tests (tests/cluster):
both must reject every case and name the field, so a user reading `kubectl apply`'s error
knows what to fix.
"""

from __future__ import annotations

import copy
from typing import Any

VALID_UPGRADE: dict[str, Any] = {
    "apiVersion": "upgrade.openeuler.org/v1alpha1",
    "kind": "OS",
    "metadata": {"name": "invalid-case"},
    "spec": {
        "imagetype": "disk",
        "opstype": "upgrade",
        "osversion": "KubeOS 1.0.2",
        "maxunavailable": 2,
        "containerimage": "",
        "evictpodforce": False,
        "imageurl": "https://images.example.internal/kubeos.tar",
        "checksum": "ab" * 32,
        "flagSafe": False,
        "mtls": False,
        "cacert": "ca.crt",
    },
}


def _with(**changes: Any) -> dict[str, Any]:
    """VALID_UPGRADE with spec fields replaced; a value of `...` removes the field."""
    obj = copy.deepcopy(VALID_UPGRADE)
    for key, value in changes.items():
        if value is ...:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    return obj


# (description, object, field the error must name)
INVALID_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown opstype", _with(opstype="upgrad"), "spec.opstype"),
    ("unknown imagetype", _with(imagetype="oci"), "spec.imagetype"),
    ("empty imagetype for an upgrade", _with(imagetype=""), "spec.imagetype"),
    ("unknown executionmode", _with(executionmode="batch"), "spec.executionmode"),
    ("maxunavailable zero", _with(maxunavailable=0), "spec.maxunavailable"),
    ("maxunavailable negative", _with(maxunavailable=-3), "spec.maxunavailable"),
    ("maxunavailable bad percentage", _with(maxunavailable="0%"), "spec.maxunavailable"),
    ("maxunavailable not a number", _with(maxunavailable="two"), "spec.maxunavailable"),
    ("missing osversion", _with(osversion=...), "spec.osversion"),
    ("missing opstype", _with(opstype=...), "spec.opstype"),
    ("missing maxunavailable", _with(maxunavailable=...), "spec.maxunavailable"),
    ("checksum not hex", _with(checksum="not-a-sha256"), "spec.checksum"),
    ("checksum truncated", _with(checksum="ab" * 10), "spec.checksum"),
    ("disk upgrade without imageurl", _with(imageurl=""), "spec.imageurl"),
    ("imageurl with another scheme", _with(imageurl="ftp://host/kubeos.tar"), "spec.imageurl"),
    (
        "http without flagSafe",
        _with(imageurl="http://images.example.internal/kubeos.tar"),
        "spec.flagSafe",
    ),
    ("mtls without client certificate", _with(mtls=True), "spec.mtls"),
    (
        "docker upgrade without containerimage",
        _with(imagetype="docker", imageurl="", containerimage=""),
        "spec.containerimage",
    ),
    (
        "containerd upgrade without containerimage",
        _with(imagetype="containerd", imageurl="", containerimage=""),
        "spec.containerimage",
    ),
    (
        "containerimage with a shell metacharacter",
        _with(imagetype="containerd", containerimage="repo/name:1;rm -rf /"),
        "spec.containerimage",
    ),
    (
        "containerimage with both tag and digest",
        _with(imagetype="containerd", containerimage="repo/name:1@sha256:" + "a" * 64),
        "spec.containerimage",
    ),
    ("certificate name escaping the cert dir", _with(cacert="../../etc/shadow"), "spec.cacert"),
    ("timeinterval negative", _with(timeinterval=-1), "spec.timeinterval"),
    ("maxfailures negative", _with(maxfailures=-1), "spec.maxfailures"),
    (
        "timewindow with only a start",
        _with(timewindow={"starttime": "22:00:00"}),
        "spec.timewindow",
    ),
    (
        "timewindow in an unknown format",
        _with(timewindow={"starttime": "10pm", "endtime": "4am"}),
        "spec.timewindow.starttime",
    ),
    (
        "timewindow mixing formats",
        _with(timewindow={"starttime": "2026-01-01 22:00:00", "endtime": "04:00:00"}),
        "spec.timewindow",
    ),
    (
        "timewindow start equals end",
        _with(timewindow={"starttime": "22:00:00", "endtime": "22:00:00"}),
        "spec.timewindow",
    ),
    (
        "timewindow unknown weekday",
        _with(timewindow={"starttime": "22:00:00", "endtime": "04:00:00", "days": ["Mo"]}),
        "spec.timewindow.days[0]",
    ),
    (
        "config without sysconfigs",
        _with(opstype="config", imagetype=""),
        "spec.sysconfigs",
    ),
    (
        "unknown settings model (the user guide's own misspelling)",
        _with(
            sysconfigs={
                "version": "v1",
                "configs": [{"model": "kuberntes.kubelet", "contents": []}],
            }
        ),
        "spec.sysconfigs.configs[0].model",
    ),
    (
        "unknown settings operation",
        _with(
            sysconfigs={
                "version": "v1",
                "configs": [
                    {
                        "model": "kernel.sysctl",
                        "contents": [{"key": "a", "value": 1, "operation": "remove"}],
                    }
                ],
            }
        ),
        "spec.sysconfigs.configs[0].contents[0].operation",
    ),
    ("nodeselector not a label value", _with(nodeselector="bad value!"), "spec.nodeselector"),
]
