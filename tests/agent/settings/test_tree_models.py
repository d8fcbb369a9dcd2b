"""kubernetes.kubelet (ruamel.yaml) and container.containerd (tomlkit) beyond the table."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kubeos.agent.settings import ParseError, ValueTypeError

from .support import apply, config, read, write

KUBELET = "/var/lib/kubelet/config.yaml"
CONTAINERD = "/etc/containerd/config.toml"

# --- kubernetes.kubelet ------------------------------------------------------------------------

KUBELET_TEXT = """\
# Managed by kubeadm, tuned by hand.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration

# Eviction thresholds
evictionHard:
  "memory.available": "100Mi"   # keep headroom
  nodefs.available: '10%'
clusterDNS:
  - 10.96.0.10
b: top-level
"""


def test_kubelet_only_edited_lines_change(tmp_path: Path) -> None:
    write(tmp_path, KUBELET, KUBELET_TEXT)
    apply(tmp_path, config("kubernetes.kubelet", ('evictionHard."memory.available"', "500Mi"),
                           ("evictionHard.'nodefs.available'", "5%")))
    # Quoting style is kept; single-quoted segments are unquoted (fixed, §10.8).
    assert read(tmp_path, KUBELET) == KUBELET_TEXT.replace('"100Mi"', '"500Mi"').replace(
        "'10%'", "'5%'")


def test_kubelet_delete_with_missing_parent_does_not_touch_other_keys(tmp_path: Path) -> None:
    # Fixed (§5.4 [BUG]): the reference went on with the next segment at the same level and
    # deleted the top-level `b`.
    write(tmp_path, KUBELET, KUBELET_TEXT)
    result = apply(tmp_path, config("kubernetes.kubelet", ("a.b", "", "delete")))
    assert read(tmp_path, KUBELET) == KUBELET_TEXT
    assert result.warnings[0].key == "a.b"


def test_kubelet_unchanged_file_is_not_rewritten(tmp_path: Path) -> None:
    text = "port:   10250   # odd spacing kept\nlist: [a,   b]\n"
    write(tmp_path, KUBELET, text)
    result = apply(tmp_path, config("kubernetes.kubelet", ("port", 10250)))
    assert not result.changed and read(tmp_path, KUBELET) == text


ODD_LAYOUT = """\
a:   1
flow: [x,   y]
map: {k: v,  j: w}
block: |
  line1
  line2
long: "quoted"   # c
anchors: &x
  q: 1
ref: *x
weird:
    deep: 1
b: 2
"""


def test_kubelet_odd_layout_elsewhere_is_not_reformatted(tmp_path: Path) -> None:
    write(tmp_path, KUBELET, ODD_LAYOUT)
    apply(tmp_path, config("kubernetes.kubelet", ("b", 3), ("weird.deep", 2)))
    assert read(tmp_path, KUBELET) == ODD_LAYOUT.replace("b: 2", "b: 3").replace(
        "deep: 1", "deep: 2")


def test_kept_lines_must_not_change_the_data() -> None:
    from kubeos.agent.settings.kubelet import keep_untouched_lines

    # Same characters but for whitespace, yet different data: the dumped text wins.
    assert keep_untouched_lines("k: 'a  b'\n", "k: 'a b'\n") == "k: 'a b'\n"
    assert keep_untouched_lines("k:  1\nz: 0\n", "k: 1\nz: 1\n") == "k:  1\nz: 1\n"


def test_kubelet_type_distinctions(tmp_path: Path) -> None:
    write(tmp_path, KUBELET, "a: 0\nb: true\nc: 1\n")
    result = apply(tmp_path, config("kubernetes.kubelet", ("a", "0"), ("b", 1), ("c", 1.0)))
    assert read(tmp_path, KUBELET) == "a: '0'\nb: 1\nc: 1.0\n"
    assert result.changed


def test_kubelet_non_mapping_parent_and_list_mismatch_warn(tmp_path: Path) -> None:
    write(tmp_path, KUBELET, "a: text\nl: [1]\n")
    result = apply(tmp_path, config("kubernetes.kubelet", ("a.b", 1), ("l", 2)))
    assert not result.changed
    assert {w.key for w in result.warnings} == {"a.b", "l"}


def test_kubelet_null_parent_becomes_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, KUBELET, "logging:\n")
    apply(tmp_path, config("kubernetes.kubelet", ("logging.format", "json")))
    assert read(tmp_path, KUBELET) == "logging:\n  format: json\n"


def test_kubelet_comment_only_file_keeps_its_comments(tmp_path: Path) -> None:
    write(tmp_path, KUBELET, "# header\n")
    apply(tmp_path, config("kubernetes.kubelet", ("port", 1)))
    assert read(tmp_path, KUBELET) == "# header\nport: 1\n"


def test_kubelet_document_start_marker_is_kept(tmp_path: Path) -> None:
    write(tmp_path, KUBELET, "---\nport: 1\n")
    apply(tmp_path, config("kubernetes.kubelet", ("port", 2)))
    assert read(tmp_path, KUBELET) == "---\nport: 2\n"


def test_kubelet_bad_yaml_is_a_parse_error(tmp_path: Path) -> None:
    write(tmp_path, KUBELET, "a: 1\n b: [\n")
    with pytest.raises(ParseError) as err:
        apply(tmp_path, config("kubernetes.kubelet", ("a", 2)))
    assert KUBELET in str(err.value)


def test_kubelet_list_top_level_is_a_parse_error(tmp_path: Path) -> None:
    write(tmp_path, KUBELET, "- a\n")
    with pytest.raises(ParseError):
        apply(tmp_path, config("kubernetes.kubelet", ("a", 2)))


# --- container.containerd ----------------------------------------------------------------------

CONTAINERD_TEXT = """\
# containerd config, see containerd-config.toml(5)
version = 2

[grpc]
  address = "/run/containerd/containerd.sock"  # socket
  uid = 0

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = 'registry.k8s.io/pause:3.6'
"""


def test_containerd_keeps_comments_and_indents_new_keys(tmp_path: Path) -> None:
    write(tmp_path, CONTAINERD, CONTAINERD_TEXT)
    apply(tmp_path, config("container.containerd", ("grpc.uid", 1), ("grpc.gid", 2)))
    assert read(tmp_path, CONTAINERD) == CONTAINERD_TEXT.replace(
        "  uid = 0\n", "  uid = 1\n  gid = 2\n")


def test_containerd_literal_string_stays_literal(tmp_path: Path) -> None:
    write(tmp_path, CONTAINERD, CONTAINERD_TEXT)
    key = 'plugins."io.containerd.grpc.v1.cri".sandbox_image'
    apply(tmp_path, config("container.containerd", (key, "registry.k8s.io/pause:3.9")))
    assert "    sandbox_image = 'registry.k8s.io/pause:3.9'\n" in read(tmp_path, CONTAINERD)


def test_containerd_new_nested_table_follows_file_style(tmp_path: Path) -> None:
    write(tmp_path, CONTAINERD, CONTAINERD_TEXT)
    apply(tmp_path, config("container.containerd",
                           ('plugins."io.containerd.gc.v1.scheduler".pause_threshold', 0.02)))
    text = read(tmp_path, CONTAINERD)
    assert text.startswith(CONTAINERD_TEXT)
    assert '\n  [plugins."io.containerd.gc.v1.scheduler"]\n    pause_threshold = 0.02\n' in text
    assert tomllib.loads(text)["plugins"]["io.containerd.gc.v1.scheduler"] == {
        "pause_threshold": 0.02}


def test_containerd_integer_overflow_is_an_error(tmp_path: Path) -> None:
    # Fixed: the reference panicked on a u64 above i64::MAX.
    write(tmp_path, CONTAINERD, CONTAINERD_TEXT)
    with pytest.raises(ValueTypeError) as err:
        apply(tmp_path, config("container.containerd", ("oom_score", 2**63)))
    assert "oom_score" in str(err.value) and CONTAINERD in str(err.value)


def test_containerd_null_mapping_and_non_table_parent_warn(tmp_path: Path) -> None:
    write(tmp_path, CONTAINERD, CONTAINERD_TEXT)
    result = apply(tmp_path, config("container.containerd", ("a", None), ("b", {"x": 1}),
                                    ("version.x", 1), ("grpc.missing.deeper", 1, "delete")))
    assert not result.changed
    assert {w.key for w in result.warnings} == {"a", "b", "version.x", "grpc.missing.deeper"}


def test_containerd_array_elements_without_toml_form_are_dropped(tmp_path: Path) -> None:
    write(tmp_path, CONTAINERD, "disabled_plugins = []\n")
    apply(tmp_path, config("container.containerd", ("disabled_plugins", ["a", None, "b"])))
    assert tomllib.loads(read(tmp_path, CONTAINERD))["disabled_plugins"] == ["a", "b"]


def test_containerd_array_of_tables_is_not_appended_to(tmp_path: Path) -> None:
    write(tmp_path, CONTAINERD, "[[proxy]]\n  name = 'a'\n")
    result = apply(tmp_path, config("container.containerd", ("proxy", [1])))
    assert not result.changed and result.warnings[0].key == "proxy"


def test_containerd_bad_toml_is_a_parse_error(tmp_path: Path) -> None:
    write(tmp_path, CONTAINERD, "[grpc\n")
    with pytest.raises(ParseError) as err:
        apply(tmp_path, config("container.containerd", ("a", 1)))
    assert err.value.line == 1
