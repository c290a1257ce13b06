"""Throwaway test hosts: Linux network namespaces joined by veth pairs (needs root and iproute2)."""

import os
import shutil
import subprocess
import sys

import pytest


def available():
    """None if namespaces can be used here, else the reason they cannot."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"sms_probe_{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"ip netns add failed: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args, namespace=None):
    command = ["ip", *args] if namespace is None else ["ip", "netns", "exec", namespace, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, text=True)


class Hosts:
    """Namespaces named after the test's pid; ``link`` joins two of them with a /24."""

    def __init__(self):
        self.prefix = f"sms{os.getpid() % 100000}"
        self.namespaces = []
        self.links = {}

    def host(self, name):
        namespace = f"{self.prefix}_{name}"
        ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        ip("link", "set", "lo", "up", namespace=namespace)
        return namespace

    def link(self, a, b, subnet):
        """Join namespaces a and b; a gets ``subnet``.1, b gets ``subnet``.2. Returns b's address."""
        index = len(self.links)
        end_a, end_b = f"{self.prefix}a{index}", f"{self.prefix}b{index}"
        ip("link", "add", end_a, "type", "veth", "peer", "name", end_b)
        ip("link", "set", end_a, "netns", a)
        ip("link", "set", end_b, "netns", b)
        ip("addr", "add", f"{subnet}.1/24", "dev", end_a, namespace=a)
        ip("addr", "add", f"{subnet}.2/24", "dev", end_b, namespace=b)
        ip("link", "set", end_a, "up", namespace=a)
        ip("link", "set", end_b, "up", namespace=b)
        self.links[(a, b)] = end_a
        return f"{subnet}.2"

    def cut(self, a, b):
        ip("link", "set", self.links[(a, b)], "down", namespace=a)

    def mend(self, a, b):
        ip("link", "set", self.links[(a, b)], "up", namespace=a)

    @staticmethod
    def command(namespace, *args):
        return ["ip", "netns", "exec", namespace, *map(str, args)]

    def remove(self):
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@pytest.fixture
def hosts():
    reason = available()
    if reason:
        pytest.skip(f"multi-host tests skipped: {reason}")
    made = Hosts()
    yield made
    made.remove()
