"""A client network namespace for tests that need a second client source address.

    ns = ClientNetns().up()           # netns rpcg-cli, 10.98.0.2 inside, 10.98.0.1 on the host
    r = ns.run_python(script, args)   # /usr/bin/python3 script args inside it (bounded)
    ns.down()

Layout:
    host  rpcgc-h 10.98.0.1/24  <--veth-->  rpcgc-c 10.98.0.2/24  netns rpcg-cli
    default route in the namespace via 10.98.0.1

The gateway listens on 10.99.0.1, a local address of the host, so packets from 10.98.0.2 to it
are delivered locally on the host (no forwarding needed) and the gateway sees source 10.98.0.2.
Only this namespace and its veth are ever created or deleted here.
"""

import json
import subprocess
import time

NETNS = 'rpcg-cli'
VETH_HOST = 'rpcgc-h'
VETH_NS = 'rpcgc-c'
HOST_IP = '10.98.0.1'
CLIENT_IP = '10.98.0.2'
PREFIX = 24
PY = '/usr/bin/python3'


def _ip(*args, netns=None, check=True):
    cmd = (['ip', 'netns', 'exec', netns] if netns else []) + ['ip'] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError('%s: exit %d: %s' % (' '.join(cmd), r.returncode, r.stderr.strip()))
    return r


def netns_exists(name=NETNS):
    r = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True, timeout=30)
    return any(line.split()[0] == name for line in r.stdout.splitlines() if line.strip())


def link_exists(name):
    return subprocess.run(['ip', 'link', 'show', name], capture_output=True, timeout=30).returncode == 0


def _wait_link_gone(name, deadline_s=10.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not link_exists(name):
            return True
        time.sleep(0.1)
    return not link_exists(name)


class ClientNetns:
    def __init__(self, name=NETNS, veth_host=VETH_HOST, veth_ns=VETH_NS, host_ip=HOST_IP, client_ip=CLIENT_IP):
        self.name, self.veth_host, self.veth_ns = name, veth_host, veth_ns
        self.host_ip, self.client_ip = host_ip, client_ip
        self.created = False

    def up(self):
        """Create the namespace and veth (a leftover of an earlier run is removed first)."""
        self.down(force=True)
        _ip('netns', 'add', self.name)
        self.created = True
        _ip('link', 'add', self.veth_host, 'type', 'veth', 'peer', 'name', self.veth_ns)
        _ip('link', 'set', self.veth_ns, 'netns', self.name)
        _ip('addr', 'add', '%s/%d' % (self.host_ip, PREFIX), 'dev', self.veth_host)
        _ip('link', 'set', self.veth_host, 'up')
        _ip('link', 'set', 'lo', 'up', netns=self.name)
        _ip('addr', 'add', '%s/%d' % (self.client_ip, PREFIX), 'dev', self.veth_ns, netns=self.name)
        _ip('link', 'set', self.veth_ns, 'up', netns=self.name)
        _ip('route', 'add', 'default', 'via', self.host_ip, netns=self.name)
        # Both ends up: the link is usable once the carrier shows (bounded, normally at once).
        end = time.monotonic() + 10
        while 'LOWER_UP' not in _ip('link', 'show', self.veth_ns, netns=self.name, check=False).stdout:
            if time.monotonic() > end:
                raise RuntimeError('%s in netns %s has no carrier after 10 s' % (self.veth_ns, self.name))
            time.sleep(0.1)
        return self

    def down(self, force=False):
        """Delete the namespace (its veth end goes with it, the host end follows) and wait,
        bounded, until the host end is gone. With force, also when this object did not create it."""
        if not (self.created or force):
            return
        if netns_exists(self.name):
            _ip('netns', 'del', self.name, check=False)
        if link_exists(self.veth_host) and not _wait_link_gone(self.veth_host):
            _ip('link', 'del', self.veth_host, check=False)
            if not _wait_link_gone(self.veth_host):
                raise RuntimeError('%s did not disappear within 20 s' % self.veth_host)
        self.created = False

    def run(self, argv, timeout=60):
        """Run argv inside the namespace; returns CompletedProcess (text)."""
        return subprocess.run(['ip', 'netns', 'exec', self.name] + list(argv),
                              capture_output=True, text=True, timeout=timeout)

    def run_python_json(self, script, args=(), timeout=60):
        """Run `/usr/bin/python3 script args` inside the namespace and parse the last line of its
        stdout as JSON. Raises RuntimeError with stdout/stderr when that fails."""
        r = self.run([PY, script] + [str(a) for a in args], timeout=timeout)
        lines = [l for l in r.stdout.splitlines() if l.strip()]
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            raise RuntimeError('%s in netns %s: exit %d, stdout %r, stderr %r' % (
                script, self.name, r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
