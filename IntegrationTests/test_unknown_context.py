"""7. A request on a presentation context the server never accepted gets a fault
(nca_s_invalid_pres_context_id) and the connection closes."""

import pytest

import rawrpc
import rpcgate_interop as ri

CLOSE_WITHIN_S = 5.0


def _expect_fault_then_close(c, call_id):
    pdu = c.recv_pdu(timeout=5)
    assert pdu is not None, 'connection closed without a fault PDU'
    assert pdu.ptype == rawrpc.PTYPE_FAULT, 'expected a fault (ptype 3), got %r' % pdu
    assert pdu.call_id == call_id, pdu
    assert pdu.fault_status == rawrpc.NCA_S_INVALID_PRES_CONTEXT_ID, \
        'fault status 0x%08x, expected nca_s_invalid_pres_context_id 0x1c00001c: %r' % (pdu.fault_status, pdu)
    assert c.wait_closed(CLOSE_WITHIN_S), 'connection still open %.0f s after the fault' % CLOSE_WITHIN_S


@pytest.mark.parametrize('where', ['mapped', 'epm'])
def test_request_without_bind(dc1, metrics, where):
    port = dc1.map('samr') if where == 'mapped' else dc1.epm_port
    before = metrics()
    with rawrpc.Conn(dc1.host, port) as c:
        c.send(rawrpc.request_pdu(call_id=1, context_id=0, opnum=0))
        _expect_fault_then_close(c, 1)
    after = metrics()
    name = 'rpcgate_pdu_errors_total'
    assert after.value(name, route=dc1.name) > before.value(name, route=dc1.name), after.lines(name)


def test_request_on_a_context_never_offered(dc1):
    port = dc1.map('samr')
    with rawrpc.Conn(dc1.host, port) as c:
        c.send(rawrpc.bind_pdu(1, [(0, ri.IFACES['samr'][0], 1, 0)]))
        ack = c.recv_pdu(timeout=5)
        assert ack is not None and ack.ptype == rawrpc.PTYPE_BIND_ACK and ack.bind_ack_results()[0][0] == 0, ack
        c.send(rawrpc.request_pdu(call_id=2, context_id=7, opnum=0))
        _expect_fault_then_close(c, 2)


def test_request_on_a_refused_context(dc1):
    """The client ignores the rejection and uses the context anyway."""
    port = dc1.map('samr')
    with rawrpc.Conn(dc1.host, port) as c:
        c.send(rawrpc.bind_pdu(1, [(0, ri.IFACES['wkssvc'][0], 1, 0)]))
        ack = c.recv_pdu(timeout=5)
        assert ack is not None and ack.ptype == rawrpc.PTYPE_BIND_ACK and ack.bind_ack_results() == [(2, 1)], ack
        c.send(rawrpc.request_pdu(call_id=2, context_id=0, opnum=0))
        _expect_fault_then_close(c, 2)
