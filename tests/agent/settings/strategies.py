"""Hypothesis strategies: configuration files with arbitrary comment and blank-line layouts."""

from __future__ import annotations

from hypothesis import strategies as st

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)
VALUE = st.one_of(WORD.map(lambda w: f"v{w}"), st.integers(0, 10**6).map(str))
COMMENT_TEXT = st.text(alphabet="abc XYZ=#:._-", max_size=20)
BLANK = st.sampled_from(["", " ", "\t", "  "])
SPACE = st.sampled_from([" ", "  ", "\t", " \t"])


# --- sysctl.conf -------------------------------------------------------------------------------

SYSCTL_KEYS = st.sampled_from(["kernel.a", "net.b", "vm.c", "fs.d", "user.e"])


@st.composite
def sysctl_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["comment", "semicolon", "blank", "kv", "kv"]))
    if kind == "comment":
        return draw(st.sampled_from(["", "  "])) + "#" + draw(COMMENT_TEXT)
    if kind == "semicolon":
        return ";" + draw(COMMENT_TEXT)
    if kind == "blank":
        return draw(BLANK)
    before = draw(st.sampled_from(["", " ", "\t"]))
    after = draw(st.sampled_from(["", " ", "  "]))
    return f"{draw(SYSCTL_KEYS)}{before}={after}{draw(VALUE)}{draw(st.sampled_from(['', ' ']))}"


sysctl_files = st.lists(sysctl_line(), max_size=12).map(lambda ls: "".join(f"{x}\n" for x in ls))


# --- limits.conf -------------------------------------------------------------------------------

DOMAINS = st.sampled_from(["*", "root", "@adm", "alice"])
LIMIT = st.tuples(st.sampled_from(["soft", "hard", "-"]),
                  st.sampled_from(["nofile", "core", "nproc"]),
                  st.integers(0, 99999).map(str))


@st.composite
def limits_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["comment", "blank", "limit", "limit"]))
    if kind == "comment":
        return draw(st.sampled_from(["", " "])) + "#" + draw(COMMENT_TEXT)
    if kind == "blank":
        return draw(BLANK)
    fields = [draw(DOMAINS), *draw(LIMIT)]
    return "".join(draw(SPACE) + f if i else f for i, f in enumerate(fields))


limits_files = st.lists(limits_line(), max_size=12).map(lambda ls: "".join(f"{x}\n" for x in ls))


# --- grub.cfg ----------------------------------------------------------------------------------

PARAM = st.one_of(
    st.sampled_from(["quiet", "ro", "nomodeset", "splash"]),
    st.tuples(st.sampled_from(["panic", "console", "selinux", "rd.shell"]), VALUE).map(
        lambda kv: f"{kv[0]}={kv[1]}"),
)


@st.composite
def linux_line(draw: st.DrawFn, root: str) -> str:
    params = [f"root={root}", *draw(st.lists(PARAM, max_size=6))]
    indent = draw(st.sampled_from(["\t", "  ", "        "]))
    out = f"{indent}linux{draw(SPACE)}/boot/vmlinuz"
    for p in params:
        out += draw(SPACE) + p
    return out + draw(st.sampled_from(["", " "]))


@st.composite
def filler(draw: st.DrawFn) -> list[str]:
    return draw(st.lists(st.one_of(BLANK, COMMENT_TEXT.map(lambda c: "#" + c),
                                   st.just("set timeout=5")), max_size=3))


@st.composite
def grub_files(draw: st.DrawFn) -> str:
    out = draw(filler())
    for slot, root in (("A", "PARTUUID=1"), ("B", "PARTUUID=2")):
        out += [f"menuentry 'KubeOS {slot}' --id {slot} {{", *draw(filler()),
                draw(linux_line(root)), "\tinitrd /boot/initramfs.img", "}", *draw(filler())]
    return "".join(f"{x}\n" for x in out)


# --- kubelet YAML ------------------------------------------------------------------------------

YAML_KEYS = ["address", "port", "kind", "cgroupDriver", "maxPods", "logging", "authorization"]


@st.composite
def yaml_files(draw: st.DrawFn) -> str:
    """Top-level scalars, nested mappings, block and flow lists, with odd spacing."""
    keys = draw(st.lists(st.sampled_from(YAML_KEYS), unique=True, min_size=1))
    indent = draw(st.sampled_from(["  ", "    "]))
    out: list[str] = []
    for key in keys:
        out += draw(st.lists(st.one_of(st.just(""), COMMENT_TEXT.map(lambda c: "# " + c)),
                             max_size=2))
        comment = draw(st.sampled_from(["", "  # note", " # n"]))
        colon = draw(st.sampled_from([": ", ":   "]))
        kind = draw(st.sampled_from(["scalar", "scalar", "mapping", "list", "flow"]))
        if kind == "scalar":
            out.append(f"{key}{colon}{draw(VALUE)}{comment}")
        elif kind == "flow":
            items = draw(st.lists(VALUE, min_size=1, max_size=3))
            separator = draw(st.sampled_from([", ", ",  ", ","]))
            out.append(f"{key}{colon}[{separator.join(items)}]{comment}")
        elif kind == "list":
            out.append(f"{key}:{comment}")
            dash = draw(st.sampled_from(["", indent]))
            out += [f"{dash}- {v}" for v in draw(st.lists(VALUE, min_size=1, max_size=3))]
        else:
            out.append(f"{key}:{comment}")
            for sub in draw(st.lists(st.sampled_from(["mode", "format", "x"]), unique=True,
                                     min_size=1)):
                out.append(f"{indent}{sub}{colon}{draw(VALUE)}")
    return "".join(f"{x}\n" for x in out)


# --- containerd TOML ---------------------------------------------------------------------------

TOML_KEYS = ["root", "state", "oom_score", "address", "uid", "level"]


@st.composite
def toml_body(draw: st.DrawFn, indent: str) -> list[str]:
    out: list[str] = []
    for key in draw(st.lists(st.sampled_from(TOML_KEYS), unique=True, min_size=1)):
        out += draw(st.lists(st.one_of(st.just(""), COMMENT_TEXT.map(lambda c: "# " + c)),
                             max_size=2))
        value = draw(st.one_of(st.integers(0, 999).map(str), VALUE.map(lambda v: f'"{v}"')))
        out.append(f"{indent}{key} = {value}{draw(st.sampled_from(['', '  # c']))}")
    return out


@st.composite
def toml_files(draw: st.DrawFn) -> str:
    indent = draw(st.sampled_from(["", "  "]))
    out = draw(toml_body(""))
    for table in draw(st.lists(st.sampled_from(["grpc", "debug", "metrics"]), unique=True)):
        out += ["", f"[{table}]", *draw(toml_body(indent))]
    return "".join(f"{x}\n" for x in out)
