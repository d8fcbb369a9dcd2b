"""Patch builders."""

from __future__ import annotations

from kubeos.kube.patch import label_patch, merge, with_precondition


def test_label_patch_sets_and_removes() -> None:
    assert label_patch({"a": "", "b": None}) == {"metadata": {"labels": {"a": "", "b": None}}}


def test_precondition_adds_resource_version_without_mutating() -> None:
    patch = {"spec": {"x": 1}}
    guarded = with_precondition(patch, "42")
    assert guarded == {"spec": {"x": 1}, "metadata": {"resourceVersion": "42"}}
    assert patch == {"spec": {"x": 1}}


def test_merge_is_deep() -> None:
    merged = merge(label_patch({"a": "1"}), {"metadata": {"annotations": {"b": "2"}}},
                   label_patch({"c": None}))
    assert merged == {"metadata": {"labels": {"a": "1", "c": None}, "annotations": {"b": "2"}}}
