"""8. Hostile input and faults against the real binary.

An rpcgate instance of its own (lib/adversarial_env.py: short timeouts, a capped route, routes whose
upstream is a fake DCE/RPC server or nothing) is attacked by raw clients, malicious fake servers
and start-up faults. Every case checks that

- the gateway answers or closes the connection cleanly (every socket operation has a timeout,
  so a hang is a failure, not a stuck suite);
- it is counted: `rpcgate_pdu_errors_total{reason}`, `rpcgate_connections_closed_total{reason}`,
  `rpcgate_connections_refused_total{reason}`, `rpcgate_epm_towers_redacted_total` or
  `rpcgate_port_pool_exhausted_total`, scraped from /metrics before and after;
- a well-behaved impacket client on other connections of the same gateway keeps working while
  the attack runs (ept_map + samr EnumerateDomains against the Samba DC, in a thread) and once
  after it (the autouse `bystander` fixture).
"""

import os
import socket
import struct
import subprocess
import threading
import time

import pytest

import fakerpc
import rawrpc
import rpcgate_interop as ri
import adversarial_env as env
from gateway import Gateway, GatewayError, Metrics, http_get

SAMR = ri.IFACES['samr']
SAMR_UUID, SAMR_MAJOR = SAMR[0], 1
NOT_REGISTERED = 0x16C9A0D6
CLOSE_S = 5.0  # "promptly": a refused or broken connection is closed within this


# ------------------------------------------------------------------ the instance under attack

@pytest.fixture(scope='module')
def adv(samba, rpcgate_binary, outdir, interop_log_level):
    """The adversarial rpcgate instance, for the whole module."""
    gw = Gateway(rpcgate_binary, env.gateway_config(), outdir, name='adversarial', log_level=interop_log_level)

    def ready():
        status, body = http_get('http://%s/healthz' % env.ADMIN, timeout=2)
        if status != 200:
            raise AssertionError('/healthz: HTTP %s %r' % (status, body))
        ri.ept_map(env.DC.host, env.DC.epm_port, *SAMR, timeout=3)
        return True
    try:
        gw.start(ready, deadline_s=30)
    except GatewayError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield gw
    finally:
        gw.stop()


def scrape():
    return Metrics.scrape(env.ADMIN)


def grew(before, after, name, by=1, **labels):
    b, a = before.value(name, **labels), after.value(name, **labels)
    assert a - b >= by, '%s%r: %g -> %g (expected +%d)\n%s' % (name, labels, b, a, by, after.lines(name))


def settle(predicate, deadline_s=3.0):
    """Poll `predicate` (on fresh scrapes) until true or the deadline; metrics are updated by the
    event loop just after the socket closes, so a scrape right after EOF may be one step behind."""
    end = time.monotonic() + deadline_s
    while True:
        m = scrape()
        if predicate(m) or time.monotonic() > end:
            return m
        time.sleep(0.05)


def counted(before, name, by=1, **labels):
    """Scrape until `name{labels}` has grown by `by` (bounded), then assert it."""
    after = settle(lambda m: m.value(name, **labels) - before.value(name, **labels) >= by)
    grew(before, after, name, by, **labels)
    return after


# ------------------------------------------------------------------ the bystander

class Bystander:
    """A well-behaved client hammering the adv-dc route in a thread: ept_map for samr through
    the gateway's EPM, then SamrConnect + EnumerateDomains on the mapped port. Bounded: stops
    on request or after 120 s."""

    def __init__(self, expected):
        self.expected = expected
        self.ok = 0
        self.errors = []
        self._stop = threading.Event()
        self._one = threading.Event()
        self._thread = threading.Thread(target=self._loop, name='bystander', daemon=True)

    def once(self):
        port = ri.ept_map(env.DC.host, env.DC.epm_port, *SAMR, timeout=5)[1]
        assert port in env.DC.ports, 'ept_map through adv-dc gave port %d' % port
        names = ri.samr_enumerate_domains(env.DC.host, port, timeout=5)
        assert names == self.expected, 'domains %r, expected %r' % (names, self.expected)

    def _loop(self):
        end = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                self.once()
                self.ok += 1
                self._one.set()
            except Exception as e:  # recorded, asserted by stop()
                self.errors.append(repr(e))
                self._one.set()
            self._stop.wait(0.05)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        """Let at least one call complete during the test, stop, and return the outcome."""
        self._one.wait(20)
        self._stop.set()
        self._thread.join(20)
        return self.ok, self.errors


@pytest.fixture(autouse=True)
def bystander(adv, direct):
    b = Bystander(direct['samr_domains']).start()
    yield b
    ok, errors = b.stop()
    assert not errors, 'the well-behaved client failed during the attack: %s' % errors[:3]
    assert ok >= 1, 'the well-behaved client completed no call during the attack'
    b.once()  # and after it
    assert adv.alive(), 'the adversarial gateway exited: %s' % adv.log_tail()


# ------------------------------------------------------------------ helpers

def raw(route, port=None, timeout=5.0):
    return rawrpc.Conn(route.host, port or route.epm_port, timeout=timeout)


def bound_mapped_conn(route=env.DC, iface=SAMR_UUID, major=SAMR_MAJOR):
    """A raw connection to the gateway port that samr maps to, bound to samr (context 0)."""
    port = ri.ept_map(route.host, route.epm_port, *SAMR, timeout=5)[1]
    c = raw(route, port)
    c.send(rawrpc.bind_pdu(1, [(0, iface, major, 0)]))
    ack = c.recv_pdu(timeout=5)
    assert ack is not None and ack.ptype == rawrpc.PTYPE_BIND_ACK and ack.bind_ack_results()[0][0] == 0, ack
    return c


def epm_bound(route):
    """A raw connection to the route's EPM listener, bound to the endpoint mapper."""
    c = raw(route)
    c.send(rawrpc.bind_pdu(1, [(0,) + rawrpc.EPM_UUID]))
    ack = c.recv_pdu(timeout=5)
    assert ack is not None and ack.ptype == rawrpc.PTYPE_BIND_ACK and ack.bind_ack_results()[0][0] == 0, ack
    return c


def assert_closed(c, within=CLOSE_S, what='the gateway'):
    t0 = time.monotonic()
    assert c.wait_closed(within), '%s did not close the connection within %.0f s' % (what, within)
    return time.monotonic() - t0


# ------------------------------------------------------------------ malformed headers

def _bind():
    return rawrpc.bind_pdu(1, [(0,) + rawrpc.EPM_UUID])


def _set_u16(data, offset, value):
    return data[:offset] + struct.pack('<H', value) + data[offset + 2:]


HEADER_CASES = [
    pytest.param(lambda: b'\x04' + _bind()[1:], 'unsupported_version', id='rpc_vers_4'),
    pytest.param(lambda: _set_u16(_bind(), 8, 0), 'fragment_too_short', id='frag_length_0'),
    pytest.param(lambda: _set_u16(_bind(), 8, 15), 'fragment_too_short', id='frag_length_15'),
    pytest.param(lambda: _set_u16(_bind(), 8, 65535) + b'\x00' * 4096, 'fragment_too_long', id='frag_length_65535'),
    pytest.param(lambda: _set_u16(_bind(), 10, 200), 'auth_length_too_long', id='auth_length_past_end'),
]


@pytest.mark.parametrize('make,reason', HEADER_CASES)
def test_malformed_header_closes_and_is_counted(make, reason):
    before = scrape()
    with raw(env.DC) as c:
        c.send(make())
        assert_closed(c)
    counted(before, 'rpcgate_pdu_errors_total', route=env.DC.name, reason=reason)


# ------------------------------------------------------------------ fragments and contexts

@pytest.mark.parametrize('bound', [False, True], ids=['before_bind', 'after_bind'])
def test_fragment_without_first_frag(bound):
    """A middle (no FIRST_FRAG, no LAST_FRAG) request fragment of a call never started: before
    the fix it was forwarded to the server unchecked, even before any bind."""
    before = scrape()
    if bound:
        c = bound_mapped_conn()
    else:
        c = raw(env.DC, ri.ept_map(env.DC.host, env.DC.epm_port, *SAMR, timeout=5)[1])
    with c:
        pdu = bytearray(rawrpc.request_pdu(call_id=2, context_id=0, opnum=0))
        pdu[3] = 0  # pfc_flags: neither FIRST nor LAST
        c.send(bytes(pdu))
        assert_closed(c)
    counted(before, 'rpcgate_pdu_errors_total', route=env.DC.name, reason='fragment_sequence')


def test_fragment_of_another_call_interleaved():
    before = scrape()
    with bound_mapped_conn() as c:
        first = bytearray(rawrpc.request_pdu(call_id=2, context_id=0, opnum=0))
        first[3] = rawrpc.PFC_FIRST_FRAG
        c.send(bytes(first))
        c.send(rawrpc.request_pdu(call_id=3, context_id=0, opnum=0))  # another call, FIRST|LAST
        assert_closed(c)
    counted(before, 'rpcgate_pdu_errors_total', route=env.DC.name, reason='fragment_sequence')


def test_bind_with_255_contexts():
    before = scrape()
    port = ri.ept_map(env.DC.host, env.DC.epm_port, *SAMR, timeout=5)[1]
    with raw(env.DC, port) as c:
        c.send(rawrpc.bind_pdu(1, [(i, SAMR_UUID, SAMR_MAJOR, 0) for i in range(255)]))
        assert_closed(c)
    counted(before, 'rpcgate_pdu_errors_total', route=env.DC.name, reason='too_many_presentation_contexts')


def test_fragmented_epm_request_over_the_reassembly_cap():
    """An endpoint-mapper request is reassembled before it is inspected; fragments past 16 KiB
    (real requests are under 200 bytes) end the connection instead of growing the buffer."""
    before = scrape()
    with epm_bound(env.DC) as c:
        for i in range(6):  # 6 x 4000 stub bytes > 16 KiB; the 5th is refused
            pdu = bytearray(rawrpc.request_pdu(call_id=2, context_id=0, opnum=2, stub=b'\x00' * 4000))
            pdu[3] = rawrpc.PFC_FIRST_FRAG if i == 0 else 0
            try:
                c.send(bytes(pdu))
            except OSError:
                break
        assert_closed(c)
    counted(before, 'rpcgate_pdu_errors_total', route=env.DC.name, reason='reassembly_too_large')


def _fault_then_close(c, call_id):
    pdu = c.recv_pdu(timeout=5)
    assert pdu is not None and pdu.ptype == rawrpc.PTYPE_FAULT and pdu.call_id == call_id, pdu
    assert pdu.fault_status == rawrpc.NCA_S_INVALID_PRES_CONTEXT_ID, hex(pdu.fault_status)
    assert_closed(c)


def test_request_before_any_bind():
    before = scrape()
    port = ri.ept_map(env.DC.host, env.DC.epm_port, *SAMR, timeout=5)[1]
    with raw(env.DC, port) as c:
        c.send(rawrpc.request_pdu(call_id=1, context_id=0, opnum=0))
        _fault_then_close(c, 1)
    counted(before, 'rpcgate_pdu_errors_total', route=env.DC.name, reason='unknown_context')


def test_request_on_an_unknown_context():
    before = scrape()
    with bound_mapped_conn() as c:
        c.send(rawrpc.request_pdu(call_id=2, context_id=9, opnum=0))
        _fault_then_close(c, 2)
    counted(before, 'rpcgate_pdu_errors_total', route=env.DC.name, reason='unknown_context')


# ------------------------------------------------------------------ slow and half-open clients

@pytest.mark.timeout_s(30)
def test_slow_client_is_cut_by_the_bind_timeout():
    """One byte per second: the bind (72 bytes) would take over a minute; timeouts.bind is 2 s."""
    before = scrape()
    data = _bind()
    with raw(env.DC) as c:
        t0 = time.monotonic()
        closed = False
        for i in range(len(data)):  # bounded by the PDU length, and by the deadline below
            try:
                c.send(data[i:i + 1])
            except OSError:
                closed = True
                break
            if c.wait_closed(1.0):
                closed = True
                break
            if time.monotonic() - t0 > 10:
                break
        elapsed = time.monotonic() - t0
    assert closed, 'a client sending one byte per second was still connected after %.1f s' % elapsed
    assert 1.5 <= elapsed <= 6, 'closed after %.1f s; timeouts.bind is 2 s' % elapsed
    counted(before, 'rpcgate_connections_closed_total', route=env.DC.name, reason='bind_timeout')


@pytest.mark.timeout_s(30)
def test_half_open_client_is_cut_by_the_bind_timeout():
    before = scrape()
    with raw(env.DC) as c:
        t0 = time.monotonic()
        c.send(_bind()[:30])  # half a PDU, then silence
        assert c.wait_closed(8), 'a half-open client was still connected after 8 s'
        elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed <= 6, 'closed after %.1f s; timeouts.bind is 2 s' % elapsed
    counted(before, 'rpcgate_connections_closed_total', route=env.DC.name, reason='bind_timeout')


# ------------------------------------------------------------------ connection flood

@pytest.mark.timeout_s(60)
def test_connection_flood_beyond_the_route_cap():
    """adv-cap has max_connections 3: three bound EPM sessions, then 20 more connections are
    refused (closed at once, counted `cap`); the three keep working; a slot frees on close."""
    before = scrape()
    held = []
    try:
        for _ in range(3):
            dce = ri.connect(env.CAP.host, env.CAP.epm_port, timeout=5)
            held.append(dce)
            dce.bind(ri.epm.MSRPC_UUID_PORTMAP)
        flood = []
        try:
            for _ in range(20):
                c = raw(env.CAP, timeout=3)
                flood.append(c)
            for c in flood:
                assert_closed(c, 3, 'the gateway (connection over the cap)')
        finally:
            for c in flood:
                c.close()
        after = counted(before, 'rpcgate_connections_refused_total', by=20, route=env.CAP.name, reason='cap')
        assert after.value('rpcgate_connections_active', route=env.CAP.name) == 3, after.lines('rpcgate_connections_active')
        for dce in held:  # the sessions that were admitted are untouched
            status, towers = ri.ept_map_on(dce, *SAMR)
            assert status == 0 and towers and towers[0]['port'] in env.CAP.ports, (status, towers)
    finally:
        for dce in held:
            try:
                dce.disconnect()
            except Exception:
                pass
    settle(lambda m: m.value('rpcgate_connections_active', route=env.CAP.name) == 0)
    assert ri.ept_map(env.CAP.host, env.CAP.epm_port, *SAMR, timeout=5)[1] in env.CAP.ports


# ------------------------------------------------------------------ fake servers: malicious EPM replies

def answer_map(build):
    """on_request for a fake EPM: answer every ept_map with `build(request)` (a list of PDUs or
    bytes), anything else with nothing."""
    def on_request(conn, req):
        if req.opnum == fakerpc.EPM_OPNUM_MAP:
            out = build(req)
            try:
                conn.send(b''.join(out) if isinstance(out, list) else out)
            except OSError:
                return 'stop'
    return on_request


def samr_tower(port, ip):
    return fakerpc.tcp_tower(SAMR_UUID, SAMR_MAJOR, 0, port, ip)


def fake_epm(route, build):
    return fakerpc.FakeServer(route.upstream, route.upstream_epm_port, answer_map(build))


def ept_map_through(route, c=None):
    """Bind the EPM on `route` (raw) and send an ept_map for samr; returns the connection."""
    c = c or epm_bound(route)
    c.send(rawrpc.ept_map_request(2, SAMR_UUID, SAMR_MAJOR, max_towers=4))
    return c


def _floor_past_end(req):
    tower = bytearray(samr_tower(14000, env.FAKE.upstream))
    # floor 4 (TCP): its rhs length (at 2 + 25 + 25 + 7 + 3) claims 60 bytes
    struct.pack_into('<H', tower, 2 + 25 + 25 + 7 + 3, 60)
    return fakerpc.response_fragments(req.call_id, req.context_id, fakerpc.ept_map_stub([bytes(tower)]))


MALFORMED_TOWERS = [
    pytest.param(lambda req: fakerpc.response_fragments(req.call_id, req.context_id, fakerpc.ept_map_stub(
        [samr_tower(14000, env.FAKE.upstream)],
        twr_bytes=fakerpc.twr(samr_tower(14000, env.FAKE.upstream), claimed_length=500))), 'invalid_ndr',
        id='tower_length_past_the_pdu'),
    pytest.param(_floor_past_end, 'invalid_tower', id='floor_length_past_the_tower'),
    pytest.param(lambda req: fakerpc.response_fragments(req.call_id, req.context_id, fakerpc.ept_map_stub(
        [samr_tower(14000, env.FAKE.upstream)], num_towers=50,
        twr_bytes=fakerpc.twr(samr_tower(14000, env.FAKE.upstream)))), 'invalid_ndr',
        id='tower_count_past_the_pdu'),
]


@pytest.mark.parametrize('build,reason', MALFORMED_TOWERS)
def test_fake_epm_towers_running_past_the_pdu(build, reason):
    before = scrape()
    with fake_epm(env.FAKE, build) as srv:
        with ept_map_through(env.FAKE) as c:
            assert_closed(c)  # and nothing forwarded: wait_closed raises on any byte
        assert srv.request_count == 1
    counted(before, 'rpcgate_pdu_errors_total', route=env.FAKE.name, reason=reason)


@pytest.mark.timeout_s(60)
def test_fake_epm_ten_thousand_towers():
    towers = [samr_tower(14000 + i % 1000, env.FAKE.upstream) for i in range(10000)]
    stub = fakerpc.ept_map_stub(towers, max_towers=10000)
    before = scrape()
    with fake_epm(env.FAKE, lambda req: fakerpc.response_fragments(req.call_id, req.context_id, stub)):
        with ept_map_through(env.FAKE) as c:
            assert_closed(c, 15)
    after = counted(before, 'rpcgate_pdu_errors_total', route=env.FAKE.name, reason='invalid_ndr')
    assert after.value('rpcgate_epm_towers_rewritten_total', route=env.FAKE.name) == \
        before.value('rpcgate_epm_towers_rewritten_total', route=env.FAKE.name)
    assert after.value('rpcgate_port_mappings_active', route=env.FAKE.name) <= len(env.FAKE.ports)


def test_fake_epm_reply_to_a_call_never_asked():
    """Before the fix the gateway forwarded it as is: the real endpoint reached the client."""
    before = scrape()
    build = lambda req: fakerpc.response_fragments(  # noqa: E731
        req.call_id + 1000, req.context_id, fakerpc.ept_map_stub([samr_tower(14000, env.FAKE.upstream)]))
    with fake_epm(env.FAKE, build):
        with ept_map_through(env.FAKE) as c:
            assert_closed(c)  # raises if the unsolicited response is forwarded
    counted(before, 'rpcgate_pdu_errors_total', route=env.FAKE.name, reason='unsolicited_response')


@pytest.mark.parametrize('foreign', ['10.1.2.3', '127.0.0.99'])
def test_fake_epm_tower_naming_another_host_is_redacted(foreign):
    """The server's EPM names a host other than the route's upstream: the tower is redacted, the
    client gets ept_s_not_registered, no port is mapped, and nothing ever connects there."""
    before = scrape()
    build = lambda req: fakerpc.response_fragments(  # noqa: E731
        req.call_id, req.context_id, fakerpc.ept_map_stub([samr_tower(14010, foreign)]))
    with fakerpc.Listener('127.0.0.99', 14010) as trap, fake_epm(env.FAKE, build):
        with ept_map_through(env.FAKE) as c:
            reply = c.recv_pdu(timeout=5)
            assert reply is not None and reply.ptype == rawrpc.PTYPE_RESPONSE, reply
            assert rawrpc.ept_map_status(reply) == NOT_REGISTERED, reply
            assert socket.inet_aton(foreign) not in reply.raw[24:], reply
        # Knock on every gateway port of the route: none may lead to the foreign host.
        for port in env.FAKE.ports:
            try:
                with raw(env.FAKE, port, timeout=2) as k:
                    k.send(rawrpc.bind_pdu(1, [(0, SAMR_UUID, SAMR_MAJOR, 0)]))
                    k.recv_pdu(timeout=1)
            except (OSError, ConnectionError):
                pass
        time.sleep(0.2)
        assert trap.accepted == 0, 'the gateway connected to %s' % foreign
    after = counted(before, 'rpcgate_epm_towers_redacted_total', route=env.FAKE.name)
    assert after.value('rpcgate_epm_towers_rewritten_total', route=env.FAKE.name) == \
        before.value('rpcgate_epm_towers_rewritten_total', route=env.FAKE.name)


def test_fake_epm_tower_naming_a_port_outside_server_ports_is_redacted():
    """adv-ports allows server ports 49152-65535 only: a tower naming the server's port 22 is
    redacted (ept_s_not_registered, counted), one naming 49160 is mapped to a gateway port."""
    before = scrape()
    build = lambda req: fakerpc.response_fragments(  # noqa: E731
        req.call_id, req.context_id, fakerpc.ept_map_stub([samr_tower(22, env.PORTS.upstream)]))
    with fake_epm(env.PORTS, build):
        with ept_map_through(env.PORTS) as c:
            reply = c.recv_pdu(timeout=5)
            assert reply is not None and reply.ptype == rawrpc.PTYPE_RESPONSE, reply
            assert rawrpc.ept_map_status(reply) == NOT_REGISTERED, reply
    after = counted(before, 'rpcgate_epm_towers_redacted_total', route=env.PORTS.name)
    assert after.value('rpcgate_epm_towers_rewritten_total', route=env.PORTS.name) == \
        before.value('rpcgate_epm_towers_rewritten_total', route=env.PORTS.name)
    build = lambda req: fakerpc.response_fragments(  # noqa: E731
        req.call_id, req.context_id, fakerpc.ept_map_stub([samr_tower(49160, env.PORTS.upstream)]))
    with fake_epm(env.PORTS, build):
        port = ri.ept_map(env.PORTS.host, env.PORTS.epm_port, *SAMR, timeout=5)[1]
    assert port in env.PORTS.ports, port


# ------------------------------------------------------------------ server faults

def mapped_through_fake(service_port):
    """A fake EPM (on adv-fake's upstream) answering samr at upstream:service_port; returns the
    server and the gateway port the client is given."""
    srv = fake_epm(env.FAKE, lambda req: fakerpc.response_fragments(
        req.call_id, req.context_id, fakerpc.ept_map_stub([samr_tower(service_port, env.FAKE.upstream)])))
    srv.start()
    try:
        port = ri.ept_map(env.FAKE.host, env.FAKE.epm_port, *SAMR, timeout=5)[1]
    except Exception:
        srv.stop()
        raise
    assert port in env.FAKE.ports, port
    return srv, port


def test_upstream_down():
    before = scrape()
    with raw(env.DOWN) as c:
        t = assert_closed(c, 3)
    assert t < 3
    counted(before, 'rpcgate_connections_refused_total', route=env.DOWN.name, reason='upstream_unreachable')


def test_upstream_resets_mid_call():
    service = fakerpc.FakeServer(env.FAKE.upstream, 14020, lambda conn, req: conn.reset() or 'stop')
    with service:
        epm_srv, port = mapped_through_fake(14020)
        try:
            before = scrape()
            with raw(env.FAKE, port) as c:
                c.send(rawrpc.bind_pdu(1, [(0, SAMR_UUID, SAMR_MAJOR, 0)]))
                ack = c.recv_pdu(timeout=5)
                assert ack is not None and ack.ptype == rawrpc.PTYPE_BIND_ACK, ack
                c.send(rawrpc.request_pdu(call_id=2, context_id=0, opnum=0))
                assert_closed(c, 3)
            assert service.request_count == 1
            counted(before, 'rpcgate_connections_closed_total', route=env.FAKE.name, reason='server_error')
        finally:
            epm_srv.stop()


@pytest.mark.timeout_s(40)
def test_upstream_stalls_until_the_idle_timeout():
    service = fakerpc.FakeServer(env.FAKE.upstream, 14021, lambda conn, req: None)  # never answers
    with service:
        epm_srv, port = mapped_through_fake(14021)
        try:
            before = scrape()
            with raw(env.FAKE, port) as c:
                c.send(rawrpc.bind_pdu(1, [(0, SAMR_UUID, SAMR_MAJOR, 0)]))
                ack = c.recv_pdu(timeout=5)
                assert ack is not None and ack.ptype == rawrpc.PTYPE_BIND_ACK, ack
                t0 = time.monotonic()
                c.send(rawrpc.request_pdu(call_id=2, context_id=0, opnum=0))
                assert c.wait_closed(env.TIMEOUTS['idle'] + 5), 'still open %d s after a stalled call' % (env.TIMEOUTS['idle'] + 5)
                elapsed = time.monotonic() - t0
            assert env.TIMEOUTS['idle'] - 0.5 <= elapsed <= env.TIMEOUTS['idle'] + 3, 'closed after %.1f s' % elapsed
            counted(before, 'rpcgate_connections_closed_total', route=env.FAKE.name, reason='idle_timeout')
        finally:
            epm_srv.stop()


def test_port_range_exhausted():
    """adv-exhaust has two gateway ports; its fake EPM names a new server port on every call:
    the third lookup is answered not registered and counted."""
    served = []

    def build(req):
        served.append(req.call_id)
        return fakerpc.response_fragments(req.call_id, req.context_id, fakerpc.ept_map_stub(
            [samr_tower(14100 + len(served), env.EXHAUST.upstream)]))
    before = scrape()
    with fake_epm(env.EXHAUST, build):
        ports = [ri.ept_map(env.EXHAUST.host, env.EXHAUST.epm_port, *SAMR, timeout=5)[1] for _ in range(2)]
        assert sorted(ports) == list(env.EXHAUST.ports), ports
        with pytest.raises(ri.RPCError) as e:
            ri.ept_map(env.EXHAUST.host, env.EXHAUST.epm_port, *SAMR, timeout=5)
        assert e.value.code == NOT_REGISTERED, e.value
    assert len(served) == 3
    after = counted(before, 'rpcgate_port_pool_exhausted_total', route=env.EXHAUST.name)
    assert after.value('rpcgate_port_mappings_active', route=env.EXHAUST.name) == 2


# ------------------------------------------------------------------ start-up faults

def _run(args, timeout=30):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.timeout_s(60)
def test_admin_port_taken_at_start(rpcgate_binary, outdir):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(('127.0.0.1', 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        path = os.path.join(outdir, 'admin-taken.yaml')
        with open(path, 'w') as f:
            f.write('routes:\n  - name: r\n    listen: 127.0.0.1\n    epm_port: 4140\n    upstream: 127.0.0.5\n'
                    '    ports: 50560-50560\n    policy: p\npolicies:\n  p:\n    default: deny\n'
                    'admin:\n  listen: 127.0.0.1:%d\n' % port)
        t0 = time.monotonic()
        r = _run([rpcgate_binary, 'run', '--config', path], timeout=30)
        output = r.stdout + r.stderr
        assert r.returncode != 0, 'rpcgate started although its admin port is taken:\n%s' % output
        assert '127.0.0.1:%d' % port in output, 'the message does not name the address:\n%s' % output
        assert time.monotonic() - t0 < 20
    finally:
        holder.close()


@pytest.mark.parametrize('command', ['check-config', 'run'])
def test_config_with_an_error(rpcgate_binary, outdir, command):
    path = os.path.join(outdir, 'broken.yaml')
    lines = ['routes:', '  - name: r', '    listen: 127.0.0.1', '    epm_port: 4141', '    upstream: 127.0.0.5',
             '    ports: 50570-50560', '    policy: p', 'policies:', '  p:', '    default: deny']
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    args = [rpcgate_binary, 'check-config', path] if command == 'check-config' else [rpcgate_binary, 'run', '--config', path]
    r = _run(args)
    output = r.stdout + r.stderr
    assert r.returncode == 2, 'exit %d:\n%s' % (r.returncode, output)
    assert '%s:6:' % path in output, 'no file:line for the bad ports (line 6):\n%s' % output
