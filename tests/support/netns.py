"""Test hosts in network namespaces: a namespace of its own per host, joined to this one by veth pairs, so a
test can put a process on "another machine" and cut one of its links while the others stay up.

Needs root and iproute2 (`ip netns`): `netns_unavailable()` says why a test must be skipped elsewhere. Every
namespace and link is removed on `close()`, even after a failed test; names carry the test's pid so parallel
runs never collide. The addresses are those of these test hosts only (a /30 per link, 10.231.N.0), reached
nowhere but through the veth pairs made here.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid

IP = shutil.which("ip") or "/usr/sbin/ip"


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists(IP):
        return "iproute2 (ip) is not installed"
    probe = f"vamp-probe-{uuid.uuid4().hex[:6]}"
    done = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"ip netns add failed: {done.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    done = subprocess.run([IP, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Link:
    """A veth pair between this namespace (`outside`, address `.1`) and a host (`inside`, address `.2`)."""

    def __init__(self, host: TestHost, subnet: int, tag: str) -> None:
        self.outside_device = f"v{tag}o{subnet}"[:15]
        self.inside_device = f"v{tag}i{subnet}"[:15]
        self.outside = f"10.231.{subnet}.1"
        self.inside = f"10.231.{subnet}.2"
        self.subnet = f"10.231.{subnet}.0/30"
        # Whatever happens to the link, nothing for this subnet ever takes another route (the default one):
        # the connected route wins while the link is up, this one drops everything otherwise.
        ip("route", "add", "blackhole", self.subnet, "metric", "4000")
        ip("link", "add", self.outside_device, "type", "veth", "peer", "name", self.inside_device)
        ip("link", "set", self.inside_device, "netns", host.name)
        ip("addr", "add", f"{self.outside}/30", "dev", self.outside_device)
        ip("link", "set", self.outside_device, "up")
        ip("-n", host.name, "addr", "add", f"{self.inside}/30", "dev", self.inside_device)
        ip("-n", host.name, "link", "set", self.inside_device, "up")

    def cut(self) -> None:
        """Nothing crosses the link any more, as when a cable is pulled at the far end: the host's side stays up
        (its programs get no error, their packets are just lost) and this side drops what is sent to it."""
        ip("link", "set", self.outside_device, "down")

    def mend(self) -> None:
        ip("link", "set", self.outside_device, "up")

    def remove(self) -> None:
        subprocess.run([IP, "link", "del", self.outside_device], capture_output=True)
        subprocess.run([IP, "route", "del", "blackhole", self.subnet, "metric", "4000"], capture_output=True)


class TestHost:
    """A network namespace: run a command in it with `command(argv)`, reach it through its links."""

    __test__ = False        # not a test class, whatever pytest thinks of the name

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:4]
        self.name = f"vamp-{os.getpid()}-{self.tag}"
        self.links: list[Link] = []
        ip("netns", "add", self.name)
        ip("-n", self.name, "link", "set", "lo", "up")

    def link(self, subnet: int) -> Link:
        """A new link to this host on 10.231.`subnet`.0/30 (a subnet no other link of the run uses)."""
        created = Link(self, subnet, self.tag)
        self.links.append(created)
        return created

    def command(self, argv: list[str]) -> list[str]:
        return [IP, "netns", "exec", self.name, *argv]

    def close(self) -> None:
        for link in self.links:
            link.remove()
        subprocess.run([IP, "netns", "del", self.name], capture_output=True)
