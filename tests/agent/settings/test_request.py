"""Parsing requests: the CR ``sysconfigs`` shape, the reference RPC shape, and bad input."""

from __future__ import annotations

import pytest

from kubeos.agent.settings import (
    Content,
    DuplicateKeyError,
    RequestError,
    UnknownModelError,
    get_model,
    parse_request,
)


def test_cr_shape_keeps_order_and_defaults() -> None:
    request = parse_request({
        "version": "v2",
        "configs": [{
            "model": "grub.cmdline.current",
            "contents": [{"key": "quiet"}, {"key": "panic", "value": 3, "operation": "Delete "}],
        }],
    })
    assert request.version == "v2"
    (cfg,) = request.configs
    assert cfg.configpath == ""
    assert cfg.contents == (Content("quiet", None, ""), Content("panic", 3, "delete"))


def test_rpc_shape_with_config_path_and_map_contents() -> None:
    request = parse_request({"configs": [{
        "model": "kernel.sysctl.persist",
        "config_path": "/etc/persist.conf",
        "contents": {"b": {"value": "2", "operation": ""}, "a": {"value": 1}},
    }]})
    (cfg,) = request.configs
    assert cfg.configpath == "/etc/persist.conf"
    assert [c.key for c in cfg.contents] == ["b", "a"]


def test_whole_os_cr_is_accepted() -> None:
    request = parse_request({"apiVersion": "upgrade.openeuler.org/v1alpha1", "kind": "OS",
                             "spec": {"sysconfigs": {"version": "1", "configs": []}}})
    assert request.version == "1" and request.configs == ()


def test_duplicate_keys_are_an_error() -> None:
    with pytest.raises(DuplicateKeyError) as err:
        parse_request({"configs": [{"model": "pam.limits",
                                    "contents": [{"key": "a", "value": "1.2.3"},
                                                 {"key": "a", "value": "4.5.6"}]}]})
    assert "pam.limits" in str(err.value) and "'a'" in str(err.value)


def test_empty_placeholder_keys_are_not_duplicates() -> None:
    # The user guide's own example carries `key: ""` placeholders.
    parse_request({"configs": [{"model": "kernel.sysctl",
                                "contents": [{"key": "", "value": ""}, {"key": ""}]}]})


@pytest.mark.parametrize("bad", [
    [],
    {"configs": "x"},
    {"configs": [{"contents": []}]},
    {"configs": [{"model": "kernel.sysctl", "contents": "x"}]},
    {"configs": [{"model": "kernel.sysctl", "contents": [{"key": 1}]}]},
    {"configs": [{"model": "kernel.sysctl", "contents": [{"key": "a", "operation": 3}]}]},
    {"configs": [{"model": "kernel.sysctl", "contents": [{"key": "a", "value": float("nan")}]}]},
    {"configs": [{"model": "kernel.sysctl", "contents": [{"key": "a", "value": object()}]}]},
    {"configs": [{"model": "kernel.sysctl", "configpath": 5}]},
])
def test_malformed_requests_are_request_errors(bad: object) -> None:
    with pytest.raises(RequestError):
        parse_request(bad)


def test_unknown_model_suggests_the_closest_name() -> None:
    # The reference user guide itself spells the kubelet model this way.
    with pytest.raises(UnknownModelError) as err:
        get_model("kuberntes.kubelet")
    assert err.value.suggestion == "kubernetes.kubelet"
    assert "did you mean 'kubernetes.kubelet'" in str(err.value)


def test_unknown_model_without_a_close_name() -> None:
    with pytest.raises(UnknownModelError) as err:
        get_model("something.else.entirely")
    assert err.value.suggestion is None
