"""Fair admission (issue 14): one client address floods the endpoint mapper on port 135 and holds
its connections, while a well-behaved client from another address keeps working.

The flood's sockets are bound to 127.0.0.66 (a loopback address the host owns; the gateway sees it
as the client), the good client connects from the host's own address on the test segment, so
the gateway's per-source limits (defaults: 256 concurrent, 100 new per second) tell them apart.
Everything is bounded: 1,500 connections at most, a 60 s test limit, every socket with a timeout.
"""

import os
import resource
import socket
import threading
import time

import pytest

import rpcgate_interop as ri
from gateway import Metrics
from interop_env import ADMIN, DC1

FLOOD_SOURCE = '127.0.0.66'
FLOOD_CONNECTIONS = 1500
GOOD_INTERVAL_S = 0.2
# Defaults of limits.max_connections_per_source (Sources/RPCGateway/GatewaySettings.swift).
SOURCE_LIMIT = 256


def gateway_usage(pid):
    """(RSS in KiB, open fds) of the gateway process."""
    rss = 0
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
    return rss, len(os.listdir('/proc/%d/fd' % pid))


def refused(metrics):
    return metrics.value('rpcgate_connections_refused_total', route=DC1.name, reason='source_limit')


class GoodClient:
    """ept_map (lookup) + bind + call (samr EnumerateDomains) every 200 ms, from the host's own
    address, until stopped (bounded: 90 s)."""

    def __init__(self, expected):
        self.expected = expected
        self.ok = 0
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name='good-client', daemon=True)

    def _loop(self):
        end = time.monotonic() + 90
        while not self._stop.is_set() and time.monotonic() < end:
            t0 = time.monotonic()
            try:
                port = DC1.map('samr', timeout=5)
                names = ri.samr_enumerate_domains(DC1.host, port, timeout=5)
                assert names == self.expected, 'domains %r' % (names,)
                self.ok += 1
            except Exception as e:  # asserted by the test
                self.errors.append('%.1fs: %r' % (time.monotonic(), e))
            self._stop.wait(max(0.0, GOOD_INTERVAL_S - (time.monotonic() - t0)))

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(20)
        return self.ok, self.errors


@pytest.mark.timeout_s(120)
def test_one_address_flooding_135_does_not_starve_another(gateway, direct):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FLOOD_CONNECTIONS + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, FLOOD_CONNECTIONS + 1024), hard))
    pid = gateway.proc.pid
    before = Metrics.scrape(ADMIN)
    baseline_rss, baseline_fds = gateway_usage(pid)

    good = GoodClient(direct['samr_domains']).start()
    time.sleep(1.0)  # a few rounds before the flood
    flood = []
    closed_at_once = 0
    try:
        deadline = time.monotonic() + 30
        for _ in range(FLOOD_CONNECTIONS):
            if time.monotonic() > deadline:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(3)
            try:
                s.bind((FLOOD_SOURCE, 0))
                s.connect((DC1.host, DC1.epm_port))
            except OSError:
                s.close()
                closed_at_once += 1
                continue
            flood.append(s)
        opened = len(flood)
        # Hold them while the good client works.
        time.sleep(5.0)
        # The refused ones were closed by the gateway: count those still open from its side.
        held = 0
        for s in flood:
            s.settimeout(0)
            try:
                data = s.recv(1)
                if data == b'':
                    continue
            except BlockingIOError:
                pass
            except OSError:
                continue
            held += 1
        during_rss, during_fds = gateway_usage(pid)
        during = Metrics.scrape(ADMIN)
    finally:
        ok, errors = good.stop()
        for s in flood:
            s.close()

    assert opened + closed_at_once == FLOOD_CONNECTIONS, 'the flood loop hit its 30 s bound'
    assert not errors, 'the good client failed %d of %d rounds during the flood: %s' % (len(errors), ok + len(errors), errors[:3])
    assert ok >= 20, 'the good client completed only %d rounds' % ok
    assert held <= SOURCE_LIMIT, 'the gateway held %d connections of one source (limit %d)' % (held, SOURCE_LIMIT)
    grew_by = refused(during) - refused(before)
    assert grew_by >= FLOOD_CONNECTIONS - SOURCE_LIMIT - closed_at_once, \
        'source_limit refusals grew by %g for %d flood connections' % (grew_by, FLOOD_CONNECTIONS)
    # Bounded while it lasts: two fds per held connection (client and upstream) and some slack.
    assert during_fds <= baseline_fds + 2 * SOURCE_LIMIT + 64, 'fds %d -> %d' % (baseline_fds, during_fds)
    # Back to baseline once the flood has gone (the gateway closes them as it reads EOF).
    end = time.monotonic() + 20
    while True:
        after_rss, after_fds = gateway_usage(pid)
        if after_fds <= baseline_fds + 8 or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert after_fds <= baseline_fds + 8, 'fds %d before, %d during, %d after' % (baseline_fds, during_fds, after_fds)
    # RSS: allocator caches may keep some pages; growth over the baseline stays small.
    assert after_rss <= baseline_rss + 32 * 1024, 'RSS %d KiB before, %d during, %d after' % (baseline_rss, during_rss, after_rss)
    figures = ('fair admission: opened %d, refused at connect %d, held %d, source_limit +%g; good client %d rounds, 0 failures; '
               'RSS %d -> %d -> %d KiB; fds %d -> %d -> %d'
               % (opened, closed_at_once, held, grew_by, ok, baseline_rss, during_rss, after_rss, baseline_fds, during_fds, after_fds))
    print(figures)
    out = os.environ.get('RPCGATE_INTEROP_OUT')
    if out:
        with open(os.path.join(out, 'fair-admission.txt'), 'w') as f:
            f.write(figures + '\n')
