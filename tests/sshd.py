"""A real, throw-away sshd on 127.0.0.1 for the sync tests and the sync benchmark.

``SshServer.start(folder)`` makes a host key and a user key in ``folder``, writes an sshd
config (a free port on 127.0.0.1 only, public-key login only, root allowed with the key)
and an ssh client config (the host alias ``HOST``, the user key, a known_hosts file holding
the host key, so ``StrictHostKeyChecking`` stays on), starts ``/usr/sbin/sshd -D`` in the
foreground and waits until a login works. ``ssh`` is the client command, for
``nixlet.sync(..., ssh=server.ssh)``. ``stop()`` ends that sshd, by its pid.

No pytest here: benchmarks/ imports it too. CI is a fresh Debian machine without systemd:
scripts/install-system.sh installs openssh-server and openssh-client, and nothing but this
module starts the daemon.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import attrs

SSHD = "/usr/sbin/sshd"
#: The host alias the client config defines.
HOST = "nixlet-test"
#: The longest the daemon may take to accept a first login (a hang guard only).
START_GUARD = 30.0


@attrs.define
class SshServer:
    """A running sshd and the client command that reaches it as the current user."""

    folder: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def ssh(self) -> tuple[str, ...]:
        """The ssh command, with the client config of this server."""
        return ("ssh", "-F", str(self.folder / "ssh_config"))

    def location(self, path: str | os.PathLike[str]) -> str:
        """``host:path`` for a folder on this (loopback) host."""
        return f"{HOST}:{os.fspath(path)}"

    @classmethod
    def start(cls, folder: Path) -> SshServer:
        """Start an sshd whose keys and configs live in ``folder``.

        Raises:
            RuntimeError: sshd or ssh-keygen is missing, or no login works in time.
        """
        for tool in (SSHD, "ssh", "ssh-keygen"):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} is missing: run scripts/install-system.sh")
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        for key in ("host_key", "user_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)],
                check=True,
            )
        (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
        port = _free_port()
        (folder / "sshd_config").write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {folder / 'host_key'}\n"
            f"PidFile {folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            # The keys live in a test's temporary folder, whose parents sshd does not vet.
            "StrictModes no\n"
            "LogLevel ERROR\n"
        )
        host_key = (folder / "host_key.pub").read_text().split()
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        (folder / "ssh_config").write_text(
            f"Host {HOST}\n"
            "  HostName 127.0.0.1\n"
            f"  Port {port}\n"
            f"  User {getpass.getuser()}\n"
            f"  IdentityFile {folder / 'user_key'}\n"
            "  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking yes\n"
            f"  UserKnownHostsFile {folder / 'known_hosts'}\n"
            "  BatchMode yes\n"
            "  LogLevel ERROR\n"
        )
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation
        with open(folder / "sshd.log", "wb") as log:  # the daemon keeps its own copy
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        server = cls(folder, port, proc)
        server._wait_ready()
        return server

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_GUARD
        while True:
            if self.proc.poll() is not None:
                log = (self.folder / "sshd.log").read_text()
                raise RuntimeError(f"sshd exited ({self.proc.returncode}): {log}")
            done = subprocess.run([*self.ssh, HOST, "true"], capture_output=True, text=True)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"no login to sshd on port {self.port}: {done.stderr}")
            time.sleep(0.05)

    def stop(self) -> None:
        """End this sshd (its pid; the sessions it forked end with their clients)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
