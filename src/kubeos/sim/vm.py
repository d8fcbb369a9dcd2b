"""Boot KubeOS disk images under qemu (OVMF + GRUB + the image's kernel) for the ``vm`` tests.

Why each choice (details in ``../shared/reference/boot-research.md`` and ``docs/vm-tests.md``):

* **TCG unless KVM really runs a guest.** On the PVM-nested machines here ``/dev/kvm`` opens and
  answers the API but cannot run OVMF (emulation failure at the first FPU instruction), and
  ``-accel kvm:tcg`` would pick it anyway. :func:`pick_accel` therefore boots OVMF once under
  KVM and only uses it when the firmware got as far as its boot manager.
* **One OVMF VARS copy per disk**, kept across that disk's reboots like real NVRAM, and fixed PCI
  addresses with ``bootindex=0``: reused VARS with a changed device topology drop OVMF into its
  shell and the VM waits forever.
* **No guest NIC** (``-nic none``). The host talks to the guest over a virtio-serial port
  (``org.kubeos.agent``) whose host end is a unix socket; a test-only bridge in the image relays
  one JSON line per request to the agent's socket (``tests/vm/guest``).
* **The serial console goes to a file** through a ``file`` chardev, which qemu writes unbuffered,
  so a test can wait on boot markers and show the log when something fails.
* **Timeouts everywhere, qemu killed on exit**: a guest whose both slots are broken reboots
  forever, and a stuck test must not leave a CPU-bound TCG process behind.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
QEMU = "qemu-system-x86_64"
# seconds of console silence after "reboot: Restarting system" before the harness power-cycles
RESET_STALL = 60.0
CHANNEL_NAME = "org.kubeos.agent"
PAYLOAD_SERIAL = "kubeos-payload"
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")
_accel_cache: str | None = None


class VmError(RuntimeError):
    """The VM did not do what the test waited for; the message carries the serial log tail."""


def _cpu_has_virt() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M) is not None


def _kvm_boots_ovmf(workdir: Path, timeout: float = 20.0) -> bool:
    """Start OVMF under KVM with no disk and look for its boot manager on the serial port."""
    workdir.mkdir(parents=True, exist_ok=True)
    vars_copy = workdir / "kvm-probe-vars.fd"
    log = workdir / "kvm-probe-serial.log"
    shutil.copyfile(OVMF_VARS, vars_copy)
    log.unlink(missing_ok=True)
    argv = [QEMU, "-machine", "q35", "-accel", "kvm", "-m", "256", "-nic", "none",
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-chardev", f"file,id=ser0,path={log}", "-serial", "chardev:ser0"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    ok = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and b"BdsDxe" in log.read_bytes():
                ok = True
                break
            time.sleep(0.5)
    finally:
        _kill(proc)
    return ok


def pick_accel(workdir: Path) -> str:
    """``kvm`` if it can really run OVMF here, else ``tcg``. ``KUBEOS_VM_ACCEL`` overrides."""
    global _accel_cache
    forced = os.environ.get("KUBEOS_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if _accel_cache is None:
        usable = (os.access("/dev/kvm", os.R_OK | os.W_OK) and _cpu_has_virt()
                  and _kvm_boots_ovmf(workdir))
        _accel_cache = "kvm" if usable else "tcg"
    return _accel_cache


def missing_tools() -> list[str]:
    """What the host lacks to boot images (empty when the vm tier can run)."""
    missing = [t for t in (QEMU, "qemu-img") if shutil.which(t) is None]
    missing += [str(p) for p in (OVMF_CODE, OVMF_VARS) if not p.is_file()]
    return missing


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def overlay_disk(base: Path, out: Path) -> Path:
    """A qcow2 overlay on the read-only base image: each VM gets a fresh disk in milliseconds
    and the built image is never modified."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base.absolute()),
                    "-F", "raw", str(out)], check=True, timeout=60)
    return out


@dataclass
class VmSpec:
    """One machine: its disk (qcow2 overlay), NVRAM and the files qemu talks through."""

    workdir: Path
    disk: Path
    payload: Path | None = None
    memory_mib: int = 1536
    cpus: int = 2
    accel: str = "tcg"
    vars: Path = field(init=False)
    serial_log: Path = field(init=False)
    channel: Path = field(init=False)
    qemu_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.vars = self.workdir / "OVMF_VARS.fd"
        self.serial_log = self.workdir / "serial.log"
        self.channel = self.workdir / "agent.sock"
        self.qemu_log = self.workdir / "qemu.log"

    def argv(self) -> list[str]:
        """The qemu command line (argv list: every path is one argument, nothing is parsed)."""
        argv = [
            QEMU, "-machine", "q35", "-accel", self.accel, "-m", str(self.memory_mib),
            "-smp", str(self.cpus), "-nic", "none", "-display", "none", "-monitor", "none",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
            "-drive", f"file={self.disk},format=qcow2,if=none,id=disk0,cache=unsafe",
            "-device", "virtio-blk-pci,drive=disk0,addr=0x5,bootindex=0",
            "-chardev", f"file,id=ser0,path={self.serial_log}", "-serial", "chardev:ser0",
            "-chardev", f"socket,id=agent,path={self.channel},server=on,wait=off",
            "-device", "virtio-serial-pci,addr=0x7",
            "-device", f"virtserialport,chardev=agent,name={CHANNEL_NAME}",
        ]
        if self.payload is not None:
            argv += ["-drive", f"file={self.payload},format=raw,if=none,id=payload,readonly=on",
                     "-device", f"virtio-blk-pci,drive=payload,addr=0x6,serial={PAYLOAD_SERIAL}"]
        return argv


@dataclass(frozen=True)
class Boot:
    """What the guest's bridge reports about one boot."""

    boot_id: str
    cmdline: str
    os_release: str
    uptime: float
    seconds: float  # wall time the host waited for this boot to answer

    @property
    def pretty_name(self) -> str:
        for line in self.os_release.splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
        return ""


class Vm:
    """A running qemu with a JSON-line channel to the test bridge in the guest."""

    def __init__(self, spec: VmSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._buf = b""
        self._ids = itertools.count(1)
        self.boot: Boot | None = None
        self.power_cycles: list[str] = []
        self._serial_seen: tuple[int, float] = (-1, time.monotonic())

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Vm:
        spec = self.spec
        spec.workdir.mkdir(parents=True, exist_ok=True)
        if not spec.vars.exists():
            shutil.copyfile(OVMF_VARS, spec.vars)
        spec.channel.unlink(missing_ok=True)
        with spec.qemu_log.open("ab") as log:
            self.proc = subprocess.Popen(spec.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise VmError(f"qemu exited with {self.proc.returncode}: "
                              f"{spec.qemu_log.read_text(errors='replace')[-2000:]}")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(spec.channel))
                self._sock = sock
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise VmError("qemu's channel socket did not appear") from None
                time.sleep(0.1)
        return self

    def power_cycle(self, why: str) -> None:
        """Cold restart of qemu on the same disk and OVMF VARS (what survives a real power
        cycle); recorded in :attr:`power_cycles` so a test can report it."""
        self.power_cycles.append(why)
        print(f"[vm] {why}; power-cycling qemu", flush=True)
        with self.spec.serial_log.open("ab") as log:
            log.write(f"\n[kubeos-vm-harness] {why}; power cycle\n".encode())
        self.stop()
        self._buf = b""
        self._serial_seen = (-1, time.monotonic())
        self.start()

    def reset_stalled(self, stall: float = RESET_STALL) -> bool:
        """The console's last line is the kernel's "reboot: Restarting system" and nothing
        was written for ``stall`` seconds. A reset under TCG normally shows firmware output
        within seconds; seen here once: silence for minutes, with qemu still running."""
        try:
            size = self.spec.serial_log.stat().st_size
        except OSError:
            return False
        now = time.monotonic()
        if size != self._serial_seen[0]:
            self._serial_seen = (size, now)
            return False
        if now - self._serial_seen[1] < stall:
            return False
        return "reboot: Restarting system" in self.serial_tail(1)

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.proc is not None:
            _kill(self.proc)

    def __enter__(self) -> Vm:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- serial log --------------------------------------------------------------------------

    def serial_text(self) -> str:
        """The console so far, with the firmware's and GRUB's terminal escapes removed."""
        try:
            raw = self.spec.serial_log.read_bytes()
        except OSError:
            return ""
        return _ANSI.sub(b"", raw).decode("utf-8", "replace")

    def serial_tail(self, lines: int = 40) -> str:
        text = [ln for ln in self.serial_text().splitlines() if ln.strip()]
        return "\n".join(text[-lines:])

    def fail(self, msg: str) -> VmError:
        return VmError(f"{msg}\n--- serial log tail ({self.spec.serial_log}) ---\n"
                       f"{self.serial_tail()}")

    # --- channel -----------------------------------------------------------------------------

    def _recv_line(self, deadline: float) -> bytes | None:
        assert self._sock is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._sock.settimeout(min(left, 1.0))
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise self.fail(f"qemu exited with {self.proc.returncode}") from None
                continue
            if not chunk:
                raise self.fail("qemu closed the channel")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def request(self, op: str, timeout: float, **fields: Any) -> Any:
        """One request to the bridge; returns its result or raises with its error. ``None``
        result and :class:`TimeoutError` mean no answer within ``timeout``."""
        assert self._sock is not None
        rid = next(self._ids)
        self._sock.sendall(json.dumps({"id": rid, "op": op, **fields}).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            line = self._recv_line(deadline)
            if line is None:
                raise TimeoutError(f"no answer to {op} within {timeout:g} s")
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if not isinstance(reply, dict) or reply.get("id") != rid:
                continue  # an answer to an earlier request that timed out
            if not reply.get("ok"):
                raise VmError(f"{op}: {reply.get('error')}")
            return reply.get("result")

    def wait_boot(self, *, timeout: float = 240.0, not_boot: str | None = None) -> Boot:
        """Wait until the bridge of a boot other than ``not_boot`` answers; that boot.

        A warm reset that stalls in the emulated firmware (the guest kernel printed
        "reboot: Restarting system" and the console then stays silent) is answered by a power
        cycle of the same disk and NVRAM, as a BMC would do; see :meth:`reset_stalled`.
        """
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.reset_stalled():
                self.power_cycle("the guest's warm reset stalled in the firmware")
            try:
                info = self.request("ping", timeout=min(3.0, max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                continue
            if info["boot_id"] != not_boot:
                self.boot = Boot(boot_id=info["boot_id"], cmdline=info["cmdline"],
                                 os_release=info["os_release"], uptime=float(info["uptime"]),
                                 seconds=time.monotonic() - started)
                return self.boot
            time.sleep(1.0)
        raise self.fail(f"no new boot answered within {timeout:g} s")

    def read(self, path: str, timeout: float = 20.0) -> str:
        result: str = self.request("read", timeout, path=path)
        return result

    def journal(self) -> str:
        """The agent's journal of the current boot (for failure messages); never raises."""
        try:
            text: str = self.request("journal", 40.0)
            return text
        except (VmError, TimeoutError, OSError) as exc:
            return f"(journal unavailable: {exc})"

    def rpc(self, method: str, params: list[Any] | None = None, *,
            timeout: float = 60.0) -> Any:
        """One JSON-RPC call to the agent of the current boot; raises on a JSON-RPC error."""
        if self.boot is None:
            raise VmError("rpc before wait_boot")
        message = {"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                   "params": params or []}
        reply = self.request("rpc", timeout + 5, boot_id=self.boot.boot_id, message=message,
                             rpc_timeout=timeout)
        if "error" in reply:
            raise VmError(f"agent {method}: {reply['error']}")
        return reply.get("result")

    def wait_agent(self, *, timeout: float = 120.0) -> dict[str, Any]:
        """Poll ``status`` until the agent of this boot answers (it starts after the bridge)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                status: dict[str, Any] = self.rpc("status", timeout=10)
                return status
            except (VmError, TimeoutError) as exc:
                last = exc
                time.sleep(1.0)
        raise self.fail(f"the agent did not answer status within {timeout:g} s: {last}")

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout)
        raise self.fail(f"qemu still running after {timeout:g} s")
