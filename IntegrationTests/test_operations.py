"""Operations against the real rpcgate binary: SIGHUP reload, SIGTERM drain, /readyz, the admin
token, log formats, and the status page (rendered by headless Chromium).

Most tests run their own rpcgate in front of a fake DCE/RPC server (lib/fakerpc.py,
FakeRPCServer) on 127.0.0.1, so a call can be made to take ~3 s (opnum 1) and the upstream can be stopped:

  fake server     EPM 127.0.0.1:<ephemeral>, data port 127.0.0.1:<ephemeral>
  rpcgate         route `fake`: EPM 127.0.0.1:4135, ports 30100-30109 -> the fake EPM
                  admin 127.0.0.1:19140 (readiness probe every 1 s, max age 3 s)
                  config/log/pid in test-output/operations/<test>.{yaml,log,pid}

One gateway at a time; each test starts and stops its own (only that PID is signalled).
The status-page test uses the session gateway in front of the Samba DC (conftest.py) instead.
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

import fakerpc
import rawrpc
import rpcgate_interop as ri
from gateway import Gateway, GatewayError, Metrics
from interop_env import ADMIN as SESSION_ADMIN

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.environ.get('RPCGATE_OPERATIONS_OUT') or os.path.join(REPO, 'test-output', 'operations')
BINARY = os.environ.get('RPCGATE_BINARY') or os.path.join(REPO, '.build', 'debug', 'rpcgate')

HOST = '127.0.0.1'
EPM_PORT = 4135
DEAD_EPM_PORT = 4136
FIRST, LAST = 30100, 30109     # below the ephemeral range (32768-60999): no client socket takes them
ADMIN = '127.0.0.1:19140'
SLOW_OPNUM = 1
SLOW_S = 3.0
SAMR = ri.IFACES['samr']
LSARPC = ri.IFACES['lsarpc']
WKSSVC = ri.IFACES['wkssvc']
REFUSED = [(2, 1)]        # provider rejection, abstract syntax not supported
ACCEPTED = [(0, 0)]


# ------------------------------------------------------------------ helpers

def config(fake, allow=('samr',), drain='10s', extra_routes='', admin_extra='', logging=''):
    return ('# Written by IntegrationTests/test_operations.py\n'
            'routes:\n'
            '  - name: fake\n'
            '    listen: %s\n'
            '    epm_port: %d\n'
            '    upstream: 127.0.0.1\n'
            '    upstream_epm_port: %d\n'
            '    ports: %d-%d\n'
            '    policy: ops\n'
            '%s'
            'policies:\n'
            '  ops:\n'
            '    default: deny\n'
            '    rules:\n'
            '      - action: allow\n'
            '        interfaces: [epmapper, %s]\n'
            'admin:\n'
            '  listen: %s\n'
            '  readiness: {interval: 1s, timeout: 1s, max_age: 3s}\n'
            '%s'
            'timeouts:\n'
            '  drain: %s\n'
            '%s') % (HOST, EPM_PORT, fake.epm_port, FIRST, LAST, extra_routes, ', '.join(allow), ADMIN,
                     admin_extra, drain, logging)


def write_config(gw, text):
    """Replace the gateway's configuration file atomically (as an editor or config management would)."""
    tmp = gw.config_path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, gw.config_path)


def wait_for(predicate, what, timeout=10.0, interval=0.1):
    """Poll predicate() until truthy; returns its value. Bounded by timeout."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # not yet
            last = e
        time.sleep(interval)
    raise AssertionError('timed out after %.0f s waiting for %s (last error: %r)' % (timeout, what, last))


def scrape(headers=None):
    status, body = get('/metrics', headers=headers)
    assert status == 200, (status, body[:300])
    return Metrics(body)


def get(path, admin=ADMIN, headers=None, timeout=5.0):
    """(status, body, response headers) of GET http://admin/path; errors are returned, not raised."""
    import urllib.error
    import urllib.request
    request = urllib.request.Request('http://%s%s' % (admin, path), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode(errors='replace')
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors='replace')


def readyz_naming(route, timeout):
    """(status, body) of the first /readyz answer that names `route` as failing."""
    def probe():
        status, body = get('/readyz')
        return (status, body) if 'route %s:' % route in body else None
    return wait_for(probe, '/readyz to name route %s' % route, timeout=timeout)


def reloads(result):
    return scrape().value('rpcgate_config_reloads_total', result=result)


def bind(port, iface, call_id=1, timeout=5.0):
    """A raw connection to a gateway port with one bind sent; returns (conn, results)."""
    conn = rawrpc.Conn(HOST, port, timeout=timeout)
    uuid, version = iface
    major, minor = (int(x) for x in version.split('.'))
    conn.send(rawrpc.bind_pdu(call_id, [(0, uuid, major, minor)]))
    pdu = conn.recv_pdu(timeout=timeout)
    assert pdu is not None, 'the gateway closed the connection instead of answering the bind'
    assert pdu.ptype == rawrpc.PTYPE_BIND_ACK, pdu
    return conn, pdu.bind_ack_results()


def ept_map(iface):
    return ri.ept_map(HOST, EPM_PORT, *iface, timeout=5)[1]


def log_records(gw, since=0):
    return gw.log_since(since, limit=2_000_000).splitlines()


@pytest.fixture
def fake():
    srv = fakerpc.FakeRPCServer(slow_opnum=SLOW_OPNUM, slow_s=SLOW_S).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def start_gateway(request):
    """start_gateway(config_text, log_level='debug') -> a started Gateway; stopped at the end."""
    started = []

    def start(text, log_level='debug', ready_path='/healthz'):
        if not os.access(BINARY, os.X_OK):
            pytest.fail('rpcgate binary %s not found: run `swift build --product rpcgate`' % BINARY, pytrace=False)
        name = re.sub(r'[^A-Za-z0-9_.-]', '_', request.node.name)
        gw = Gateway(BINARY, text, OUT, name=name, log_level=log_level)
        started.append(gw)

        def ready():
            status, body = get(ready_path, timeout=2)
            assert status == 200, (status, body)
            return True
        try:
            gw.start(ready, deadline_s=20)
        except GatewayError as e:
            pytest.fail(str(e), pytrace=False)
        return gw

    try:
        yield start
    finally:
        for gw in started:
            if gw.proc is not None and gw.proc.poll() is None:
                gw.stop()


# ------------------------------------------------------------------ SIGHUP

@pytest.mark.timeout_s(60)
def test_sighup_new_policy_applies_to_new_binds_while_a_slow_call_completes(fake, start_gateway):
    gw = start_gateway(config(fake, allow=('samr',)))
    port = ept_map(SAMR)
    assert FIRST <= port <= LAST, port

    # An old connection: samr bound under the first policy, a slow call in flight.
    old, results = bind(port, SAMR, call_id=1)
    assert results == ACCEPTED
    t0 = time.monotonic()
    old.send(rawrpc.request_pdu(2, 0, SLOW_OPNUM))
    wait_for(lambda: (SLOW_OPNUM, 2) in fake.requests, 'the slow call to reach the server', timeout=5)

    # The new policy allows lsarpc and no longer samr.
    write_config(gw, config(fake, allow=('lsarpc',)))
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads('success') == 1, 'rpcgate_config_reloads_total{result="success"} == 1', timeout=5)
    assert time.monotonic() - t0 < SLOW_S, 'the reload must happen while the call is in flight'

    # New binds follow the new policy, on the same mapped port.
    samr_binds_before = sum(1 for uuid, _ in fake.binds if uuid == SAMR[0])
    new, results = bind(port, SAMR, call_id=1)
    assert results == REFUSED, 'samr is no longer allowed: %r' % results
    new.close()
    lsa, results = bind(port, LSARPC, call_id=1)
    assert results == ACCEPTED, 'lsarpc is allowed now: %r' % results
    lsa.close()
    assert sum(1 for uuid, _ in fake.binds if uuid == SAMR[0]) == samr_binds_before, \
        'the refused samr bind reached the server'
    with pytest.raises(ri.RPCError) as e:
        ept_map(SAMR)
    assert e.value.code == 0x16c9a0d6, 'ept_map(samr) after the reload: %r' % e.value

    # The old connection's call completes with the server's answer.
    pdu = old.recv_pdu(timeout=SLOW_S + 5)
    elapsed = time.monotonic() - t0
    assert pdu is not None and pdu.ptype == rawrpc.PTYPE_RESPONSE, pdu
    assert fakerpc.response_stub(pdu) == (SLOW_OPNUM, 2)
    assert elapsed >= SLOW_S - 0.5, 'the slow call answered after %.2f s' % elapsed
    old.close()

    status = json.loads(get('/status.json')[1])
    denied = [d for d in status['denials'] if d['interface'] == 'samr' and d['event'] == 'bind']
    assert denied and denied[0]['route'] == 'fake' and denied[0]['rule'] is None, status['denials']
    wait_for(lambda: 'configuration reloaded' in gw.log_since(0), 'the reload in the log', timeout=5)


@pytest.mark.timeout_s(60)
def test_sighup_with_a_broken_file_keeps_the_running_configuration(fake, start_gateway):
    good = config(fake, allow=('samr',))
    gw = start_gateway(good)
    port = ept_map(SAMR)
    assert reloads('failure') == 0 and reloads('success') == 0

    broken = [
        ('YAML syntax error', good.replace('    policy: ops\n', '    policy: [ops\n')),
        ('unknown key', good.replace('    policy: ops\n', '    polcy: ops\n')),
        ('unknown policy', good.replace('    policy: ops\n', '    policy: nope\n')),
    ]
    for n, (what, text) in enumerate(broken, start=1):
        offset = gw.log_size()
        write_config(gw, text)
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads('failure') == n, 'failure count %d after %s' % (n, what), timeout=5)
        assert gw.alive(), 'the gateway exited on a broken file (%s)' % what
        # The counter is incremented just before the line is logged: wait for the line too.
        wait_for(lambda: 'configuration rejected; the running configuration stays' in gw.log_since(offset),
                 'the rejection in the log (%s)' % what, timeout=5)
        # Decisions are the old ones: samr still allowed, wkssvc still refused.
        conn, results = bind(port, SAMR)
        assert results == ACCEPTED, (what, results)
        conn.send(rawrpc.request_pdu(2, 0, 0))
        pdu = conn.recv_pdu(timeout=5)
        assert pdu is not None and fakerpc.response_stub(pdu) == (0, 2), (what, pdu)
        conn.close()
        conn, results = bind(port, WKSSVC)
        assert results == REFUSED, (what, results)
        conn.close()
        assert ept_map(SAMR) == port
    assert reloads('success') == 0

    # A good file is picked up again afterwards.
    write_config(gw, config(fake, allow=('samr', 'wkssvc')))
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads('success') == 1, 'a successful reload after the failures', timeout=5)
    conn, results = bind(port, WKSSVC)
    assert results == ACCEPTED
    conn.close()
    assert reloads('failure') == len(broken)


# ------------------------------------------------------------------ SIGTERM

@pytest.mark.timeout_s(60)
def test_sigterm_lets_a_slow_call_finish_closes_idle_connections_and_exits_0(fake, start_gateway):
    drain_s = 10
    gw = start_gateway(config(fake, allow=('samr',), drain='%ds' % drain_s))
    port = ept_map(SAMR)
    busy, results = bind(port, SAMR, call_id=1)
    assert results == ACCEPTED
    idle, results = bind(port, SAMR, call_id=1)
    assert results == ACCEPTED
    # Connected but no bind yet (the gateway waits for it to route the connection).
    unbound = rawrpc.Conn(HOST, port)
    wait_for(lambda: json.loads(get('/status.json')[1])['connections_awaiting_bind'] == 1,
             'the unbound connection to be admitted', timeout=5)
    busy.send(rawrpc.request_pdu(7, 0, SLOW_OPNUM))
    wait_for(lambda: (SLOW_OPNUM, 7) in fake.requests, 'the slow call to reach the server', timeout=5)
    offset = gw.log_size()

    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)

    # The connection with no call in flight is closed at once.
    assert idle.wait_closed(timeout=2.0), 'the idle connection was not closed within 2 s of SIGTERM'
    idle_closed = time.monotonic() - t0
    idle.close()
    assert unbound.wait_closed(timeout=2.0), 'the connection waiting for its first bind was not closed at once'
    unbound.close()
    # The gateway is not ready any more while it drains, and accepts no new connection.
    status, body = get('/readyz')
    assert status == 503 and 'draining' in body, (status, body)
    with pytest.raises(OSError):
        socket.create_connection((HOST, EPM_PORT), timeout=2).close()

    # The busy connection gets its answer, then is closed.
    pdu = busy.recv_pdu(timeout=drain_s)
    answered = time.monotonic() - t0
    assert pdu is not None and pdu.ptype == rawrpc.PTYPE_RESPONSE, pdu
    assert fakerpc.response_stub(pdu) == (SLOW_OPNUM, 7)
    assert busy.wait_closed(timeout=2.0), 'the drained connection stayed open after its answer'
    busy.close()

    rc = gw.proc.wait(timeout=drain_s + 5)
    exited = time.monotonic() - t0
    assert rc == 0, 'exit status %s; log:\n%s' % (rc, gw.log_since(offset))
    assert idle_closed < 2.0 and idle_closed < answered - 0.5, \
        'idle connection closed after %.2f s, the busy one answered after %.2f s' % (idle_closed, answered)
    assert answered < drain_s, 'the slow call was answered after %.2f s' % answered
    assert exited < drain_s, 'the process took %.2f s to exit (drain deadline %d s)' % (exited, drain_s)
    log = gw.log_since(offset)
    assert 'drain deadline reached' not in log, log
    # Every admitted connection ends with one close line: the busy, the idle and the unbound one.
    closes = [line for line in log.splitlines() if 'connection closed' in line and 'listener=mapped' in line]
    assert len(closes) == 3 and all('reason=shutdown' in line for line in closes), closes
    assert 'rpcgate stopped' in log


@pytest.mark.timeout_s(60)
def test_a_refused_client_that_hangs_up_is_released_at_once(fake, start_gateway):
    """A bind refused by the policy is answered before any upstream connection; when the client
    then closes (a FIN: the gateway allows half-closed input), the connection must be released at
    once, not held until the bind timeout (10 s)."""
    gw = start_gateway(config(fake, allow=('samr',)))
    port = ept_map(SAMR)
    conn, results = bind(port, WKSSVC)
    assert results == REFUSED
    conn.close()
    t0 = time.monotonic()
    wait_for(lambda: scrape().value('rpcgate_connections_active', route='fake') == 0,
             'rpcgate_connections_active to return to 0', timeout=5)
    assert time.monotonic() - t0 < 2.0
    status = json.loads(get('/status.json')[1])
    assert status['active_connections'] == 0 and status['connections_awaiting_bind'] == 0, status
    mapping = [m for r in status['routes'] for m in r['mappings'] if m['gateway_port'] == port][0]
    assert mapping['active_connections'] == 0, mapping
    assert 'no bind routed within the bind timeout' not in gw.log_since(0)


# ------------------------------------------------------------------ /readyz

@pytest.mark.timeout_s(60)
def test_readyz_names_routes_whose_upstream_is_unreachable(fake, start_gateway):
    # A second route whose upstream endpoint mapper is a closed port.
    closed = socket.socket()
    closed.bind((HOST, 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    dead_route = ('  - name: dead\n    listen: %s\n    epm_port: %d\n    upstream: 127.0.0.1\n'
                  '    upstream_epm_port: %d\n    ports: %d-%d\n    policy: ops\n') % (
                      HOST, DEAD_EPM_PORT, dead_port, LAST + 1, LAST + 10)
    gw = start_gateway(config(fake, extra_routes=dead_route))

    status, body = readyz_naming('dead', timeout=5)
    assert status == 503, (status, body)
    assert body.startswith('not ready\n'), body
    assert 'route dead: upstream 127.0.0.1:%d' % dead_port in body and 'Connection refused' in body, body
    assert 'route fake:' not in body, body
    status, text = get('/readyz', headers={'Accept': 'application/json'})
    report = json.loads(text)
    assert status == 503 and report['ready'] is False and report['failing_routes'] == ['dead'], report
    fake_route = [r for r in report['routes'] if r['name'] == 'fake'][0]
    assert fake_route['ready'] is True and fake_route['last_success_age_seconds'] <= 2, fake_route
    m = scrape()
    assert m.value('rpcgate_upstream_up', route='fake') == 1, m.lines('rpcgate_upstream_up')
    assert m.value('rpcgate_upstream_up', route='dead') == 0, m.lines('rpcgate_upstream_up')
    # /healthz only says the process is alive.
    assert get('/healthz') == (200, 'ok\n')

    # The fake server's endpoint mapper goes away: after max_age (3 s) `fake` fails too.
    fake.stop_epm()
    t0 = time.monotonic()
    status, body = readyz_naming('fake', timeout=10)
    assert status == 503 and 'route dead' in body, body
    assert time.monotonic() - t0 >= 1.0, 'readiness dropped at once; it should wait for max_age'
    assert scrape().value('rpcgate_upstream_up', route='fake') == 0
    status_json = json.loads(get('/status.json')[1])
    assert status_json['ready'] is False
    assert 'upstream endpoint mapper unreachable' in gw.log_since(0)


# ------------------------------------------------------------------ token

@pytest.mark.timeout_s(60)
def test_admin_token_protects_everything_but_healthz(fake, start_gateway, tmp_path):
    token_file = os.path.join(OUT, 'admin.token')
    os.makedirs(OUT, exist_ok=True)
    with open(token_file, 'w') as f:
        f.write('first-Token_0123456789\n')
    os.chmod(token_file, 0o600)
    gw = start_gateway(config(fake, admin_extra='  token_file: %s\n' % token_file))
    good = {'Authorization': 'Bearer first-Token_0123456789'}

    assert get('/healthz') == (200, 'ok\n')
    for path in ('/metrics', '/readyz', '/', '/status.json', '/nope'):
        status, body = get(path)
        assert status == 401, (path, status, body[:200])
        assert 'rpcgate_' not in body and '<html' not in body, path
        assert get(path, headers={'Authorization': 'Bearer first-Token_012345678'})[0] == 401, path
        assert get(path, headers={'Authorization': 'Basic Zmlyc3Q='})[0] == 401, path
    assert get('/metrics', headers=good)[0] == 200
    assert get('/status.json', headers=good)[0] == 200
    assert get('/', headers=good)[0] == 200
    assert get('/nope', headers=good)[0] == 404
    assert 'first-Token' not in gw.log_since(0), 'the token must never be logged'

    # Rotation: a new file content and SIGHUP; the old token stops working at once.
    with open(token_file, 'w') as f:
        f.write('second-Token_9876543210\n')
    gw.proc.send_signal(signal.SIGHUP)
    new = {'Authorization': 'Bearer second-Token_9876543210'}
    wait_for(lambda: get('/metrics', headers=new)[0] == 200, 'the rotated token to be accepted', timeout=5)
    assert get('/metrics', headers=good)[0] == 401

    # check-config validates the file: missing, empty.
    def check(path):
        text = config(fake, admin_extra='  token_file: %s\n' % path)
        cfg = tmp_path / 'token-check.yaml'
        cfg.write_text(text)
        return subprocess.run([BINARY, 'check-config', str(cfg)], capture_output=True, text=True, timeout=30)
    r = check(str(tmp_path / 'missing.token'))
    assert r.returncode == 2 and 'admin.token_file: the token file %s does not exist' % (tmp_path / 'missing.token') in r.stderr, r
    (tmp_path / 'empty.token').write_text('\n')
    r = check(str(tmp_path / 'empty.token'))
    assert r.returncode == 2 and 'is empty' in r.stderr, r
    r = check(token_file)
    assert r.returncode == 0 and 'bearer token from %s' % token_file in r.stdout, r
    assert 'second-Token' not in r.stdout + r.stderr


# ------------------------------------------------------------------ logs

CONNECTION_FIELDS = ('conn', 'listener', 'client', 'gateway', 'server', 'route', 'started', 'bytes_from_client',
                     'bytes_from_server', 'requests', 'interfaces', 'duration_ms', 'reason')


def _exercise(port):
    """A mapped connection: bind samr, one quick call, close. Returns the client's local address."""
    conn, results = bind(port, SAMR)
    assert results == ACCEPTED
    conn.send(rawrpc.request_pdu(2, 0, 0))
    pdu = conn.recv_pdu(timeout=5)
    assert pdu is not None and pdu.ptype == rawrpc.PTYPE_RESPONSE
    local = '%s:%d' % conn.sock.getsockname()[:2]
    conn.close()
    return local


@pytest.mark.timeout_s(60)
def test_json_logs_are_one_object_per_line_with_complete_connection_records(fake, start_gateway):
    gw = start_gateway(config(fake, logging='logging:\n  format: json\n  level: info\n'), log_level=None)
    port = ept_map(SAMR)
    client = _exercise(port)
    wait_for(lambda: any('"connection closed"' in line and '"%s"' % client in line for line in log_records(gw)),
             'the connection record of %s' % client, timeout=5)
    gw.stop()

    records = []
    for line in log_records(gw):
        if line.startswith('--- '):          # lines the test harness writes
            continue
        record = json.loads(line)            # every line the gateway writes is one JSON object
        assert list(record)[:4] == ['time', 'level', 'label', 'message'], record
        assert re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$', record['time']), record
        records.append(record)
    assert not [r for r in records if r['level'] in ('debug', 'trace')], 'level info from the file applies'

    closed = [r for r in records if r['message'] == 'connection closed' and r.get('client') == client]
    assert len(closed) == 1, closed
    c = closed[0]
    missing = [f for f in CONNECTION_FIELDS if f not in c]
    assert not missing, 'connection record lacks %s: %r' % (missing, c)
    assert c['route'] == 'fake' and c['listener'] == 'mapped', c
    assert c['gateway'] == '%s:%d' % (HOST, port), c
    assert c['server'] == '127.0.0.1:%d' % fake.data_port, c
    assert c['interfaces'] == 'samr' and c['requests'] == '1' and c['reason'] == 'client_closed', c
    assert int(c['bytes_from_client']) == 72 + 32, c        # bind (one context) + request (8-byte stub)
    assert int(c['bytes_from_server']) > 0 and int(c['duration_ms']) >= 0, c
    binds = [r for r in records if r['message'] == 'bind allowed' and r.get('client') == client]
    assert binds and binds[0]['conn'] == c['conn'] and binds[0]['interface'] == 'samr' and binds[0]['rule'] == 'rule 0'
    started = [r for r in records if r['message'].startswith('rpcgate ') and r['message'].endswith(' started')]
    assert started and started[0]['log_format'] == 'json' and started[0]['log_level'] == 'info'


@pytest.mark.timeout_s(60)
def test_logfmt_logs_and_the_cli_level_overrides_the_file(fake, start_gateway):
    gw = start_gateway(config(fake, logging='logging:\n  format: logfmt\n  level: warning\n'), log_level='debug')
    port = ept_map(SAMR)
    client = _exercise(port)
    wait_for(lambda: any('msg="connection closed"' in line and 'client=%s ' % client in line for line in log_records(gw)),
             'the connection record of %s' % client, timeout=5)
    gw.stop()

    pair = re.compile(r'([A-Za-z0-9_.\-/]+)=("(?:[^"\\]|\\.)*"|\S*)')
    records = []
    for line in log_records(gw):
        if line.startswith('--- '):
            continue
        assert line.startswith('time='), line
        fields = {k: (v[1:-1] if v.startswith('"') else v) for k, v in pair.findall(line)}
        assert pair.sub('', line).strip() == '', 'not logfmt: %r' % line
        records.append(fields)
    assert any(r['level'] == 'debug' for r in records), '--log-level debug overrides level: warning'
    closed = [r for r in records if r.get('msg') == 'connection closed' and r.get('client') == client]
    assert len(closed) == 1 and all(f in closed[0] for f in CONNECTION_FIELDS), closed
    assert closed[0]['interfaces'] == 'samr' and closed[0]['label'] == 'rpcgate', closed[0]
    opened = [r for r in records if r.get('msg') == 'connection opened' and r.get('client') == client]
    assert opened and opened[0]['conn'] == closed[0]['conn'], opened


# ------------------------------------------------------------------ status page (Samba DC)

def _chromium():
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.timeout_s(120)
def test_status_page_shows_a_live_mapping_and_a_denied_bind(dc1):
    """Against the session gateway (Samba DC behind route dc1): a live mapping with an open
    connection and a refused wkssvc bind appear on the page; Chromium renders it to
    test-output/operations/status.png."""
    port = dc1.map('samr')
    live = rawrpc.Conn(dc1.host, port)
    try:
        live.send(rawrpc.bind_pdu(1, [(0, SAMR[0], 1, 0)]))
        pdu = live.recv_pdu(timeout=5)
        assert pdu is not None and pdu.bind_ack_results() == ACCEPTED, pdu
        denied_conn = rawrpc.Conn(dc1.host, port)
        denied_conn.send(rawrpc.bind_pdu(1, [(0, WKSSVC[0], 1, 0)]))
        pdu = denied_conn.recv_pdu(timeout=5)
        assert pdu is not None and pdu.bind_ack_results() == REFUSED, pdu
        denied_client = '%s:%d' % denied_conn.sock.getsockname()[:2]
        denied_conn.close()

        status, html = get('/', admin=SESSION_ADMIN)
        assert status == 200, (status, html[:300])
        assert '<td class="mono num gateway-port">%d</td>' % port in html, 'gateway port %d not on the page' % port
        assert '<td class="interface">wkssvc</td>' in html, 'the denied interface is not on the page'
        assert WKSSVC[0] in html and denied_client in html
        assert '<td class="name">dc1</td>' in html and '<td class="name">dc1-nodrs</td>' in html
        assert '<script' not in html.lower()
        snapshot = json.loads(get('/status.json', admin=SESSION_ADMIN)[1])
        route = [r for r in snapshot['routes'] if r['name'] == 'dc1'][0]
        mapping = [m for m in route['mappings'] if m['gateway_port'] == port]
        assert mapping and mapping[0]['active_connections'] >= 1 and mapping[0]['server'].startswith('10.99.0.2:'), route
        assert any(d['interface'] == 'wkssvc' and d['client'] == denied_client for d in snapshot['denials'])
        assert any(c['gateway_port'] == port and c['interfaces'] == ['samr'] for c in snapshot['connections'])

        browser = _chromium()
        assert browser, 'chromium is not installed (scripts/install-test-deps.sh installs it)'
        os.makedirs(OUT, exist_ok=True)
        png = os.path.join(OUT, 'status.png')
        html_copy = os.path.join(OUT, 'status.html')
        with open(html_copy, 'w') as f:
            f.write(html)
        if os.path.exists(png):
            os.unlink(png)
        profile = os.path.join(OUT, 'chromium-profile')
        shutil.rmtree(profile, ignore_errors=True)
        r = subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                            '--user-data-dir=%s' % profile, '--screenshot=%s' % png, '--window-size=1280,1024',
                            'http://%s/' % SESSION_ADMIN],
                           capture_output=True, text=True, timeout=90)
        shutil.rmtree(profile, ignore_errors=True)
        assert r.returncode == 0 and os.path.exists(png), 'chromium failed (%d): %s' % (r.returncode, r.stderr[-2000:])
        with open(png, 'rb') as f:
            head = f.read(24)
        assert head[:8] == b'\x89PNG\r\n\x1a\n', head
        width, height = struct.unpack('>II', head[16:24])
        assert (width, height) == (1280, 1024), (width, height)
        assert os.path.getsize(png) > 20000, 'suspiciously small screenshot (%d bytes)' % os.path.getsize(png)
    finally:
        live.close()
