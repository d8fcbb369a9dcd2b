"""A reference proxy sends "KubeOS <v>"; ours sends "<v>": the agent treats both alike."""

from kubeos.agent.messages import TargetRequest, plain_version


def test_prefix_is_dropped_and_plain_versions_kept() -> None:
    assert plain_version("KubeOS 1.0.2") == "1.0.2"
    assert plain_version("1.0.2") == "1.0.2"
    assert plain_version("") == ""


def test_rollback_target_accepts_the_reference_spelling() -> None:
    assert TargetRequest.from_json({"version": "KubeOS 2.0.0"}).version == "2.0.0"
