"""Attaching provisioned slave jobs to a master: where their node agents find it."""

from __future__ import annotations

import socket
from typing import Optional

from .. import settings
from ..machine import non_loopback_addresses
from ..wire.protocol import slave_environment
from .provider import JobRequest, SlaveJobs
from .provisioner import Provisioner


def master_host(bound_host: str, local: bool) -> str:
    """The address a node agent dials: loopback on this machine, else the advertised one."""
    if bound_host not in ("0.0.0.0", "", "localhost"):
        return bound_host
    if local:
        return "127.0.0.1"
    advertised = settings.advertised_hosts() or non_loopback_addresses()
    return advertised[0] if advertised else socket.gethostname()


def provision(master, spec: SlaveJobs, cwd: str, tls_ca: Optional[str] = None) -> Provisioner:
    """Start holding ``spec``'s jobs for ``master`` (a MasterProcess); raises ProvisionError
    with the batch system's message if it refuses them."""
    host = master_host(master.host, spec.on_this_machine)
    environment = slave_environment(host, master.port, master.secret, tls_ca=tls_ca)

    def request(keep: bool, number: int) -> JobRequest:
        return spec.request(master.label, host, master.port, environment, cwd, keep, number)

    provisioner = Provisioner(spec, master.task_manager, request)
    provisioner.start()
    return provisioner
