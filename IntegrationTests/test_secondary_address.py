"""bind_ack secondary address (issue 14): on a gateway port, the bind_ack names that port, not the
DC's real one (Samba answers with its 4915x port), and the re-framed PDU still parses (an impacket
bind + call works, and raw frag_length matches the bytes)."""

import rawrpc
import rpcgate_interop as ri
from interop_env import DC1, SAMBA_REAL_PORTS

SAMR = ri.IFACES['samr']


def test_bind_ack_names_the_gateway_port(gateway, direct):
    port = DC1.map('samr', timeout=5)
    assert port in DC1.ports
    with rawrpc.Conn(DC1.host, port, timeout=5) as c:
        c.send(rawrpc.bind_pdu(1, [(0, SAMR[0], 1, 0)]))
        ack = c.recv_pdu(timeout=5)
    assert ack is not None and ack.ptype == rawrpc.PTYPE_BIND_ACK, ack
    assert len(ack.raw) == ack.frag_length
    assert ack.bind_ack_results()[0][0] == 0, ack
    assert ack.secondary_address() == b'%d' % port, (ack.secondary_address(), port)
    assert int(ack.secondary_address()) not in SAMBA_REAL_PORTS
    # The real DC names its own port (what the gateway replaced).
    with rawrpc.Conn('10.99.0.2', direct['ports']['samr'], timeout=5) as c:
        c.send(rawrpc.bind_pdu(1, [(0, SAMR[0], 1, 0)]))
        real = c.recv_pdu(timeout=5)
    assert real.secondary_address() == b'%d' % direct['ports']['samr']
    # And a full client still works over the rewritten bind_ack.
    assert ri.samr_enumerate_domains(DC1.host, port, timeout=5) == direct['samr_domains']
