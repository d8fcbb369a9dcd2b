"""The status transitions the proxy writes, and the agent requests it builds."""

from __future__ import annotations

from kubeos.api.models import OSInstanceStatus, OSSpec
from kubeos.proxy.report import observed, with_phase, with_reboot
from kubeos.proxy.requests import configure_request, upgrade_request
from kubeos.proxy.snapshot import (
    COND_AGENT,
    COND_PROGRESSING,
    COND_REBOOT,
    AgentView,
    Progress,
    RebootRecord,
)
from tests.proxy.builders import NEW, ago, condition, configs, node, osi


def test_phase_time_is_kept_while_in_the_phase_and_reset_on_change() -> None:
    first = with_phase(OSInstanceStatus(), "Draining", ago(100), generation=3)
    again = with_phase(first, "Draining", ago(0), generation=3)
    progressing = condition(again, COND_PROGRESSING)
    assert progressing is not None and progressing.lastTransitionTime == ago(100)
    moved = with_phase(again, "Upgrading", ago(0))
    progressing = condition(moved, COND_PROGRESSING)
    assert progressing is not None and progressing.lastTransitionTime == ago(0)
    assert progressing.status == "True"
    failed = with_phase(moved, "Failed", ago(0), generation=3, last_error="boom")
    assert failed.lastError == "boom"
    progressing = condition(failed, COND_PROGRESSING)
    assert progressing is not None and progressing.status == "False"


def test_reboot_record_round_trips_through_the_condition() -> None:
    record = RebootRecord("upgrade", "KubeOS 1.0.2 (x; y)", "b-1", "A", ago(5))
    status = with_reboot(OSInstanceStatus(), record)
    cond = condition(status, COND_REBOOT)
    assert cond is not None and cond.reason == "Upgrade"
    progress = Progress.from_osinstance(
        osi(phase="Rebooting").model_copy(update={"status": status.model_copy(
            update={"phase": "Rebooting"})})
    )
    assert progress.reboot == record
    reissued = with_reboot(status, RebootRecord("upgrade", record.target, "b-1", "A", ago(0)))
    assert reissued == status
    assert condition(with_reboot(status, None), COND_REBOOT) is None


def test_observed_reports_version_slot_and_agent() -> None:
    view = AgentView(reachable=True, booted_slot="B")
    status = observed(OSInstanceStatus(), node(image=NEW), view, ago(0))
    assert (status.currentVersion, status.bootSlot) == (NEW, "B")
    cond = condition(status, COND_AGENT)
    assert cond is not None and cond.status == "True"
    down = observed(status, None, AgentView.unreachable("refused"), ago(0))
    cond = condition(down, COND_AGENT)
    assert cond is not None and (cond.status, cond.message) == ("False", "refused")
    assert down.bootSlot == "B"


def test_configure_request_keeps_order_and_drops_empty_models() -> None:
    sc = configs("v1")
    sc.configs.append(sc.configs[0].model_copy(update={"model": "pam.limits", "contents": []}))
    request = configure_request(sc)
    assert request is not None
    assert request.to_json() == {"configs": [{"model": "kernel.sysctl", "config_path": "",
                                              "contents": {"a": {"value": "1",
                                                                 "operation": ""}}}]}
    assert configure_request(None) is None
    empty = sc.model_copy(update={"configs": [sc.configs[1]]})
    assert configure_request(empty) is None


def test_upgrade_request_maps_the_reference_fields() -> None:
    spec = OSSpec.model_validate({
        "osversion": NEW, "opstype": "upgrade", "maxunavailable": 1, "imagetype": "disk",
        "imageurl": "https://h/k.tar", "checksum": "a" * 64, "mtls": True,
        "clientcert": "c.pem", "clientkey": "k.pem", "cacert": "ca.pem",
    })
    wire = upgrade_request(spec).to_json()
    assert wire["version"] == "v2" and wire["image_url"] == "https://h/k.tar"
    assert wire["check_sum"] == "a" * 64 and wire["mtls"] is True
    assert wire["certs"] == {"ca_cert": "ca.pem", "client_cert": "c.pem",
                             "client_key": "k.pem"}
