"""6. The admin endpoint: /healthz, and /metrics counting what the gateway did."""

import rawrpc
import rpcgate_interop as ri
from gateway import http_get
from interop_env import ADMIN


def test_healthz(gateway):
    status, body = http_get('http://%s/healthz' % ADMIN)
    assert status == 200 and body.strip() == 'ok', (status, body)


def test_metrics_count_binds_towers_and_connections(dc1, metrics):
    before = metrics()
    port = dc1.map('samr')                                   # an EPM connection, a rewritten tower
    assert ri.samr_enumerate_domains(dc1.host, port)         # an allowed bind on a mapped port
    with rawrpc.Conn(dc1.host, port) as c:                   # a denied bind on a mapped port
        c.send(rawrpc.bind_pdu(1, [(0, ri.IFACES['wkssvc'][0], 1, 0)]))
        pdu = c.recv_pdu(timeout=5)
        assert pdu is not None and pdu.ptype == rawrpc.PTYPE_BIND_ACK, pdu
    after = metrics()

    def grew(name, **labels):
        b, a = before.value(name, **labels), after.value(name, **labels)
        assert a > 0 and a > b, '%s%r: %g -> %g\n%s' % (name, labels, b, a, after.lines(name))

    grew('rpcgate_binds_total', route=dc1.name, decision='allow')
    grew('rpcgate_binds_total', route=dc1.name, interface='samr', decision='allow')
    grew('rpcgate_binds_total', route=dc1.name, decision='deny')
    grew('rpcgate_binds_total', route=dc1.name, interface='wkssvc', decision='deny')
    grew('rpcgate_epm_towers_rewritten_total', route=dc1.name)
    grew('rpcgate_connections_total', route=dc1.name, listener='epm')
    grew('rpcgate_connections_total', route=dc1.name, listener='mapped')
    mappings = after.value('rpcgate_port_mappings_active', route=dc1.name)
    assert 1 <= mappings <= len(dc1.ports), after.lines('rpcgate_port_mappings_active')
