"""sysctl, sysctl.persist, grub and pam.limits beyond the reference table: what we fixed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeos.agent.settings import ParseError

from .support import GRUB_CFG, apply, config, lines, read, write

# --- kernel.sysctl -----------------------------------------------------------------------------


def test_sysctl_slash_separated_key_reaches_dotted_interface_names(tmp_path: Path) -> None:
    write(tmp_path, "/proc/sys/net/ipv4/conf/eth0.10/rp_filter", "1\n")
    apply(tmp_path, config("kernel.sysctl", ("net/ipv4/conf/eth0.10/rp_filter", 2)))
    assert read(tmp_path, "/proc/sys/net/ipv4/conf/eth0.10/rp_filter") == "2\n"
    # sysctl.d(5): with '.' as first separator, '/' stands for a literal dot.
    apply(tmp_path, config("kernel.sysctl", ("net.ipv4.conf.eth0/10.rp_filter", 0)))
    assert read(tmp_path, "/proc/sys/net/ipv4/conf/eth0.10/rp_filter") == "0\n"


def test_sysctl_write_only_parameter_is_written(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """vm.drop_caches is mode 0200: even root cannot read it, but it must be writable."""
    target = write(tmp_path, "/proc/sys/vm/drop_caches", "")
    real_read_bytes = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == target:
            raise PermissionError(13, "Permission denied")
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = apply(tmp_path, config("kernel.sysctl", ("vm.drop_caches", 3)))
    monkeypatch.undo()
    assert target.read_text() == "3\n" and result.changed


def test_sysctl_same_value_with_other_spacing_is_not_rewritten(tmp_path: Path) -> None:
    write(tmp_path, "/proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n")
    result = apply(tmp_path, config("kernel.sysctl", ("net.ipv4.tcp_rmem", "4096 131072 6291456")))
    assert not result.changed


def test_sysctl_string_value_is_written_unquoted(tmp_path: Path) -> None:
    # Fixed: the reference wrote the JSON text of the value, so "1" became "\"1\"".
    write(tmp_path, "/proc/sys/kernel/core_pattern", "core\n")
    apply(tmp_path, config("kernel.sysctl", ("kernel.core_pattern", "/tmp/core.%p")))
    assert read(tmp_path, "/proc/sys/kernel/core_pattern") == "/tmp/core.%p\n"


# --- kernel.sysctl.persist ---------------------------------------------------------------------


def test_persist_keeps_layout_and_spacing(tmp_path: Path) -> None:
    original = lines("# comment", "", "  ; indented comment", "a = 1", "b=2  ", "", "c\t=\t3")
    write(tmp_path, "/etc/sysctl.conf", original)
    apply(tmp_path, config("kernel.sysctl.persist", ("a", 5), ("c", 6)))
    assert read(tmp_path, "/etc/sysctl.conf") == lines(
        "# comment", "", "  ; indented comment", "a = 5", "b=2  ", "", "c\t=\t6")


def test_persist_edits_every_occurrence(tmp_path: Path) -> None:
    # Fixed: the reference edited only the first, but sysctl applies the last one.
    write(tmp_path, "/etc/sysctl.conf", lines("a=1", "b=1", "a=2"))
    apply(tmp_path, config("kernel.sysctl.persist", ("a", 3)))
    assert read(tmp_path, "/etc/sysctl.conf") == lines("a=3", "b=1", "a=3")
    apply(tmp_path, config("kernel.sysctl.persist", ("a", 3, "delete")))
    assert read(tmp_path, "/etc/sysctl.conf") == lines("b=1")


def test_persist_ignore_errors_prefix_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "/etc/sysctl.conf", "")
    path.write_bytes(b"-net.x = 1\r\nb=2")
    apply(tmp_path, config("kernel.sysctl.persist", ("net.x", 2), ("c", 3)))
    assert path.read_bytes() == b"-net.x = 2\r\nb=2\nc=3\n"


def test_persist_matches_slash_and_dot_spellings(tmp_path: Path) -> None:
    write(tmp_path, "/etc/sysctl.conf", lines("net/ipv4/ip_forward = 0"))
    apply(tmp_path, config("kernel.sysctl.persist", ("net.ipv4.ip_forward", 1)))
    assert read(tmp_path, "/etc/sysctl.conf") == lines("net/ipv4/ip_forward = 1")


def test_persist_append_order_is_request_order(tmp_path: Path) -> None:
    # Fixed: the reference appended in hash-map order.
    write(tmp_path, "/etc/sysctl.conf", "")
    keys = [f"k{i}" for i in (5, 1, 9, 3, 7)]
    apply(tmp_path, config("kernel.sysctl.persist", *[(k, 1) for k in keys]))
    assert read(tmp_path, "/etc/sysctl.conf") == lines(*[f"{k}=1" for k in keys])


def test_persist_parent_directory_must_exist(tmp_path: Path) -> None:
    from kubeos.agent.settings import MissingFileError

    with pytest.raises(MissingFileError) as err:
        apply(tmp_path, config("kernel.sysctl.persist", ("a", 1), configpath="/etc/nope/x.conf"))
    assert "parent directory" in str(err.value) and "/etc/nope/x.conf" in str(err.value)


# --- grub.cmdline ------------------------------------------------------------------------------

ID_CFG = lines(
    "menuentry 'KubeOS B' --id B {",
    "\tlinux\t/boot/vmlinuz root=LABEL=ROOT-B ro  quiet",
    "}",
    "menuentry 'KubeOS A' --id=A {",
    "\tlinux\t/boot/vmlinuz root=LABEL=ROOT-A ro  quiet",
    "}",
)


def test_grub_entries_found_by_id_in_any_order_keeping_tabs(tmp_path: Path) -> None:
    write(tmp_path, GRUB_CFG, ID_CFG)
    apply(tmp_path, config("grub.cmdline.current", ("quiet", "", "delete"), ("panic", "5")),
          slot="A")
    assert read(tmp_path, GRUB_CFG) == ID_CFG.replace(
        "ROOT-A ro  quiet", "ROOT-A ro panic=5")
    apply(tmp_path, config("grub.cmdline.current", ("debug", "")), slot="B")
    assert "\tlinux\t/boot/vmlinuz root=LABEL=ROOT-B ro  quiet debug\n" in read(tmp_path, GRUB_CFG)


def test_grub_without_ids_uses_first_linux_line_as_a(tmp_path: Path) -> None:
    cfg = lines("menuentry 'x' {", "  linux /vmlinuz root=/dev/vda2", "}",
                "menuentry 'y' {", "  linux /vmlinuz root=/dev/vda3", "}")
    write(tmp_path, GRUB_CFG, cfg)
    apply(tmp_path, config("grub.cmdline.next", ("ro", "")), slot="A")
    assert read(tmp_path, GRUB_CFG) == cfg.replace("vda3", "vda3 ro")


def test_grub_quoted_parameter_is_one_token(tmp_path: Path) -> None:
    cfg = lines("menuentry 'A' {", '  linux /vmlinuz root=x dyndbg="file a.c +p" quiet', "}",
                "menuentry 'B' {", "  linux /vmlinuz root=y", "}")
    write(tmp_path, GRUB_CFG, cfg)
    apply(tmp_path, config("grub.cmdline.current", ("quiet", "", "delete")))
    assert '  linux /vmlinuz root=x dyndbg="file a.c +p"\n' in read(tmp_path, GRUB_CFG)


def test_grub_value_with_spaces_is_quoted_and_matched_unquoted(tmp_path: Path) -> None:
    cfg = lines("menuentry 'A' {", "  linux /vmlinuz root=x", "}",
                "menuentry 'B' {", "  linux /vmlinuz root=y", "}")
    write(tmp_path, GRUB_CFG, cfg)
    apply(tmp_path, config("grub.cmdline.current", ("dyndbg", "file a.c +p")))
    assert '  linux /vmlinuz root=x dyndbg="file a.c +p"\n' in read(tmp_path, GRUB_CFG)
    assert not apply(tmp_path, config("grub.cmdline.current", ("dyndbg", "file a.c +p"))).changed
    apply(tmp_path, config("grub.cmdline.current", ("dyndbg", "file a.c +p", "delete")))
    assert read(tmp_path, GRUB_CFG) == cfg


@pytest.mark.parametrize("model", ["kernel.sysctl", "kernel.sysctl.persist",
                                   "grub.cmdline.current", "pam.limits"])
def test_line_breaks_cannot_smuggle_extra_settings(tmp_path: Path, model: str) -> None:
    from kubeos.agent.settings import ValueTypeError

    with pytest.raises(ValueTypeError) as err:
        apply(tmp_path, config(model, ("a", "1\nkernel.modules_disabled=1")))
    assert model in str(err.value) and "'a'" in str(err.value)


def test_keys_and_limits_with_whitespace_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "/etc/sysctl.conf", "")
    write(tmp_path, "/etc/security/limits.conf", "")
    result = apply(tmp_path, config("kernel.sysctl.persist", ("a b", 1)),
                   config("pam.limits", ("*", "soft.nofile.1 2")))
    assert not result.changed and len(result.warnings) == 2


def test_grub_repeated_parameter(tmp_path: Path) -> None:
    cfg = lines("menuentry 'A' {", "  linux /vmlinuz root=x console=tty0 console=ttyS0", "}",
                "menuentry 'B' {", "  linux /vmlinuz root=y", "}")
    write(tmp_path, GRUB_CFG, cfg)
    result = apply(tmp_path, config("grub.cmdline.current", ("console", "ttyS0")))
    assert not result.changed  # one occurrence already has the value
    apply(tmp_path, config("grub.cmdline.current", ("console", "ttyS0", "delete")))
    assert "root=x console=tty0\n" in read(tmp_path, GRUB_CFG)


def test_grub_key_value_to_bare_key_needs_delete_then_add(tmp_path: Path) -> None:
    # The user guide documents this: an empty value never replaces a value.
    cfg = lines("menuentry 'A' {", "  linux /vmlinuz root=x rd.info=0", "}",
                "menuentry 'B' {", "  linux /vmlinuz root=y", "}")
    write(tmp_path, GRUB_CFG, cfg)
    result = apply(tmp_path, config("grub.cmdline.current", ("rd.info", "")))
    assert not result.changed and result.warnings[0].key == "rd.info"


def test_grub_legacy_bios_path_is_used_when_no_esp(tmp_path: Path) -> None:
    # Fixed: the reference supported only the UEFI path.
    cfg = lines("menuentry 'A' {", "  linux /vmlinuz root=x", "}",
                "menuentry 'B' {", "  linux /vmlinuz root=y", "}")
    write(tmp_path, "/boot/grub2/grub.cfg", cfg)
    apply(tmp_path, config("grub.cmdline.current", ("quiet", "")))
    assert "root=x quiet" in read(tmp_path, "/boot/grub2/grub.cfg")


def test_grub_dm_verity_is_skipped_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, "/proc/cmdline", "root=/dev/mapper/kubeos-root dmvroothash=abc\n")
    result = apply(tmp_path, config("grub.cmdline.current", ("quiet", "")))
    assert not result.changed and "dm-verity" in result.warnings[0].message


def test_grub_missing_slot_entry_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, GRUB_CFG, lines("menuentry 'A' {", "  linux /vmlinuz root=x", "}"))
    with pytest.raises(ParseError) as err:
        apply(tmp_path, config("grub.cmdline.next", ("quiet", "")))
    assert "slot B" in str(err.value)


# --- pam.limits --------------------------------------------------------------------------------


def test_pam_tabs_and_inline_comments_are_kept(tmp_path: Path) -> None:
    # Fixed: the reference failed on tab-separated lines.
    write(tmp_path, "/etc/security/limits.conf", lines("*\tsoft\tcore\t0\t# no cores"))
    apply(tmp_path, config("pam.limits", ("*", "_._.unlimited")))
    assert read(tmp_path, "/etc/security/limits.conf") == lines(
        "*\tsoft\tcore\tunlimited\t# no cores")


def test_pam_update_prefers_the_line_with_the_same_type_and_item(tmp_path: Path) -> None:
    # Fixed: the reference keyed by domain only and rewrote the first '*' line.
    write(tmp_path, "/etc/security/limits.conf",
          lines("*  soft  core    0", "*  soft  nofile  1024", "*  hard  nofile  4096"))
    apply(tmp_path, config("pam.limits", ("*", "hard.nofile.65536")))
    assert read(tmp_path, "/etc/security/limits.conf") == lines(
        "*  soft  core    0", "*  soft  nofile  1024", "*  hard  nofile  65536")


def test_pam_delete_finds_the_matching_line_of_the_domain(tmp_path: Path) -> None:
    write(tmp_path, "/etc/security/limits.conf",
          lines("@dev soft nproc 10", "@dev hard nproc 20"))
    apply(tmp_path, config("pam.limits", ("@dev", "hard.nproc.20", "delete")))
    assert read(tmp_path, "/etc/security/limits.conf") == lines("@dev soft nproc 10")


def test_pam_unparsable_line_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, "/etc/security/limits.conf", lines("# ok", "* soft core"))
    with pytest.raises(ParseError) as err:
        apply(tmp_path, config("pam.limits", ("*", "soft.core.0")))
    assert err.value.line == 2 and "pam.limits" in str(err.value)


def test_pam_configpath_file_is_created(tmp_path: Path) -> None:
    (tmp_path / "etc/security/limits.d").mkdir(parents=True)
    apply(tmp_path, config("pam.limits", ("*", "soft.nofile.1024"),
                           configpath="/etc/security/limits.d/90-kubeos.conf"))
    assert read(tmp_path, "/etc/security/limits.d/90-kubeos.conf") == "* soft nofile 1024\n"
