"""Opnum-level policy against the real Samba DC: the block-dcsync profile (IDL_DRSGetNCChanges
refused for everyone but an excepted source), min_auth_level, and the audit log.

This module runs a second rpcgate of its own (config test-output/interop/gateway-opnums.yaml,
log gateway-opnums.log), because it needs policies and an audit file the session gateway does
not have:

  route opn-dcsync        EPM 10.99.0.1:2135, ports 50200-50219, policy dcsync:
                            rule 0  - profile: block-dcsync, except_sources: [10.98.0.2/32]
                            rule 1  - allow drsuapi, samr, lsarpc, netlogon, dssetup
                            default deny
  route opn-samr-privacy  EPM 10.99.0.1:3135, ports 50300-50319, policy samr-privacy:
                            rule 0  - allow samr, min_auth_level: privacy
                            default deny
  admin 127.0.0.1:19136;  audit: {file: <pytest tmp dir>/audit.jsonl} (copied to
                          test-output/interop/gateway-opnums-audit.jsonl at the end)

Clients: impacket on the host (source 10.99.0.1: client and gateway share the address, so
client -> gateway traffic crosses `lo`), and impacket in a client namespace `rpcg-cli`
(source 10.98.0.2, veth rpcgc-h, see lib/client_netns.py) run through lib/drs_session.py, which
prints JSON. Gateway -> DC traffic crosses the veth `rpcg-h`; the captures there show which
request opnums reached 10.99.0.2 (the opnum is in the clear even on a sealed connection).
"""

import functools
import json
import os
import re
import shutil
import time

import pytest
from impacket.dcerpc.v5 import samr
from impacket.dcerpc.v5.rpcrt import DCERPCException

import rawrpc
import rpcgate_interop as ri
from capture import Capture
from client_netns import CLIENT_IP, VETH_HOST as CLIENT_VETH, ClientNetns
from drs_session import DRSSession
from gateway import Gateway, GatewayError, Metrics, http_get
from interop_env import GATEWAY_HOST, SAMBA_HOST, Route
from pdu_capture import (PFC_DID_NOT_EXECUTE, PTYPE_FAULT, PTYPE_REQUEST, describe, flows_offering,
                         request_opnums, reverse, rpc_flows)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.environ.get('RPCGATE_INTEROP_OUT') or os.path.join(REPO, 'test-output', 'interop')
BINARY = os.environ.get('RPCGATE_BINARY') or os.path.join(REPO, '.build', 'debug', 'rpcgate')
LOG_LEVEL = os.environ.get('RPCGATE_INTEROP_LOG_LEVEL', 'debug')
DRS_RUNNER = os.path.join(HERE, 'lib', 'drs_session.py')

ADMIN = '127.0.0.1:19136'
DCSYNC = Route('opn-dcsync', 2135, 50200, 50219, ['drsuapi', 'samr', 'lsarpc', 'netlogon', 'dssetup'])
SAMR_PRIVACY = Route('opn-samr-privacy', 3135, 50300, 50319, ['samr'])
DRSUAPI_UUID = ri.IFACES['drsuapi'][0]
DC_DNS_NAME = 'dc1.example.test'

OP_DRSBIND, OP_GETNCCHANGES, OP_CRACKNAMES, OP_DCINFO = 0, 3, 12, 16
STATUS_ACCESS_DENIED = 0x5
NCA_S_FAULT_SEC_PKG_ERROR = 0x721
REFUSAL_LIMIT_S = 5.0
AUDIT_WAIT_S = 5.0


def gateway_config(audit_path):
    def route(r, policy):
        return ('  - name: %s\n    listen: %s\n    epm_port: %d\n    upstream: %s\n'
                '    ports: %d-%d\n    policy: %s\n') % (r.name, r.host, r.epm_port, SAMBA_HOST, r.first, r.last, policy)
    return ('# Written by IntegrationTests/test_policy_opnums.py\nroutes:\n'
            + route(DCSYNC, 'dcsync') + route(SAMR_PRIVACY, 'samr-privacy')
            + 'policies:\n'
            '  dcsync:\n'
            '    default: deny\n'
            '    rules:\n'
            '      - profile: block-dcsync\n'
            '        except_sources: [%s/32]\n'
            '      - action: allow\n'
            '        interfaces: [%s]\n'
            '  samr-privacy:\n'
            '    default: deny\n'
            '    rules:\n'
            '      - action: allow\n'
            '        interfaces: [samr]\n'
            '        min_auth_level: privacy\n' % (CLIENT_IP, ', '.join(DCSYNC.allowed))
            + 'admin:\n  listen: %s\n' % ADMIN
            + 'audit:\n  file: %s\n' % audit_path)


# ------------------------------------------------------------------ fixtures

_GW = None


@pytest.fixture(scope='module')
def opn_gateway(samba, tmp_path_factory):
    """This module's rpcgate (own PID; SIGTERM at the end). Yields the Gateway with
    .audit_path set."""
    global _GW
    if not os.access(BINARY, os.X_OK):
        pytest.fail('rpcgate binary %s not found: run `swift build --product rpcgate`' % BINARY, pytrace=False)
    audit_path = str(tmp_path_factory.mktemp('opnums-audit') / 'audit.jsonl')
    gw = Gateway(BINARY, gateway_config(audit_path), OUT, name='gateway-opnums', log_level=LOG_LEVEL)
    gw.audit_path = audit_path

    def ready():
        status, body = http_get('http://%s/healthz' % ADMIN, timeout=2)
        if status != 200:
            raise AssertionError('/healthz: HTTP %s %r' % (status, body))
        ri.ept_map(GATEWAY_HOST, DCSYNC.epm_port, *ri.IFACES['drsuapi'], timeout=3)
        ri.ept_map(GATEWAY_HOST, SAMR_PRIVACY.epm_port, *ri.IFACES['samr'], timeout=3)
        return True

    try:
        gw.start(ready, deadline_s=30)
    except GatewayError as e:
        pytest.fail(str(e), pytrace=False)
    _GW = gw
    try:
        yield gw
    finally:
        _GW = None
        gw.stop()
        try:
            shutil.copyfile(audit_path, os.path.join(OUT, 'gateway-opnums-audit.jsonl'))
        except OSError:
            pass


@pytest.fixture(scope='module')
def client_ns(samba):
    """Network namespace rpcg-cli with client address 10.98.0.2; removed at the end."""
    ns = ClientNetns()
    try:
        ns.up()
    except Exception as e:
        ns.down(force=True)
        pytest.fail('cannot create the client namespace: %s' % e, pytrace=False)
    try:
        yield ns
    finally:
        ns.down()


@pytest.fixture(autouse=True)
def _opn_gateway_watch():
    yield
    gw = _GW
    if gw is not None and not gw.alive():
        pytest.fail('rpcgate (gateway-opnums) exited (status %s) during this test; log tail:\n%s'
                    % (gw.proc.returncode, gw.log_tail()), pytrace=False)


def with_gateway_log(fn):
    """On failure, print (into the test's captured stdout) what this module's gateway logged and
    what the audit log holds."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        gw = _GW
        offset = gw.log_size() if gw else 0
        try:
            return fn(*args, **kwargs)
        except BaseException:
            if gw is not None:
                print('--- gateway-opnums log during the test (%s):\n%s' % (gw.log_path, gw.log_since(offset, limit=20000)))
                print('--- audit log %s:\n%s' % (gw.audit_path, _read(gw.audit_path)[-20000:]))
            raise
    return wrapper


# ------------------------------------------------------------------ helpers

def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return '(%s)' % e


def _pcap(name):
    return os.path.join(OUT, 'opnums-%s.pcap' % name)


def _server_capture(name):
    return Capture('rpcg-h', 'tcp and host %s' % SAMBA_HOST, _pcap(name + '-rpcg-h'))


def _drs_flows_to_dc(cap):
    """gateway -> DC flows that bound drsuapi, and all flows (for messages)."""
    flows = rpc_flows(cap.segments())
    return flows_offering(flows, DRSUAPI_UUID, dst=SAMBA_HOST), flows


def _calls_denied(route):
    return Metrics.scrape(ADMIN).value('rpcgate_calls_denied_total', route=route.name, interface='drsuapi')


# ------------------------------------------------------------------ 1. block-dcsync from the host

@with_gateway_log
def test_getncchanges_denied_from_host_and_never_reaches_dc(opn_gateway):
    """DRSBind (0) and DRSDomainControllerInfo (16) work at privacy as Administrator from
    10.99.0.1; DRSGetNCChanges (3) gets the gateway's fault (0x5, did not execute) at once, and
    no request with opnum 3 reaches 10.99.0.2."""
    port = DCSYNC.map('drsuapi')
    assert port in DCSYNC.ports, port
    denied_before = _calls_denied(DCSYNC)
    with _server_capture('host') as srv, \
            Capture('lo', 'tcp and host %s and port %d' % (GATEWAY_HOST, port), _pcap('host-lo')) as cli:
        s = DRSSession(DCSYNC.host, port)
        try:
            local = s.local_address()
            assert local[0] == GATEWAY_HOST, local
            assert s.bind() > 0
            info = s.dc_info()
            assert info['count'] >= 1 and info.get('dns_host_name') == DC_DNS_NAME, info
            t0 = time.monotonic()
            with pytest.raises(DCERPCException) as ei:
                s.get_nc_changes()
            elapsed = time.monotonic() - t0
        finally:
            s.close()
    assert 'rpc_s_access_denied' in str(ei.value), 'DRSGetNCChanges: expected the gateway fault 0x5, got %r' % str(ei.value)
    assert elapsed < REFUSAL_LIMIT_S, 'the refusal took %.2f s' % elapsed

    # client -> gateway (lo): the client did send opnum 3; the gateway answered that call with
    # fault 0x5 and PFC_DID_NOT_EXECUTE.
    cflows = rpc_flows(cli.segments())
    key = (GATEWAY_HOST, local[1], GATEWAY_HOST, port)
    assert key in cflows, 'no client flow %r on lo: %s' % (key, describe(cflows))
    sent = request_opnums(cflows[key])
    assert sent == [OP_DRSBIND, OP_DCINFO, OP_GETNCCHANGES], 'client sent opnums %r' % sent
    call_id = [p.call_id for p in cflows[key] if p.ptype == PTYPE_REQUEST and p.opnum == OP_GETNCCHANGES][0]
    answers = [p for p in cflows.get(reverse(key), []) if p.call_id == call_id]
    assert len(answers) == 1 and answers[0].ptype == PTYPE_FAULT, 'answer to call %d: %r' % (call_id, answers)
    assert answers[0].status == STATUS_ACCESS_DENIED, answers
    assert answers[0].flags & PFC_DID_NOT_EXECUTE, 'fault without PFC_DID_NOT_EXECUTE: %r' % answers

    # gateway -> DC (rpcg-h): DRSBind and DRSDomainControllerInfo reached the DC, DRSGetNCChanges never did.
    drs, flows = _drs_flows_to_dc(srv)
    assert drs, 'capture on rpcg-h saw no drsuapi bind to the DC; is the capture broken?\n%s' % describe(flows)
    leaked = {k: request_opnums(p) for k, p in drs.items() if OP_GETNCCHANGES in request_opnums(p)}
    assert not leaked, 'opnum 3 reached the DC (pcap %s): %r' % (_pcap('host-rpcg-h'), leaked)
    assert any(request_opnums(p) == [OP_DRSBIND, OP_DCINFO] for p in drs.values()), describe(drs)

    assert _calls_denied(DCSYNC) == denied_before + 1, \
        Metrics.scrape(ADMIN).lines('rpcgate_calls_denied_total')


# ------------------------------------------------------------------ 1b. ... but not from the excepted source

@with_gateway_log
def test_getncchanges_from_excepted_source_reaches_dc(opn_gateway, client_ns):
    """From 10.98.0.2 (except_sources of the profile) DRSGetNCChanges is forwarded: the capture
    shows the opnum-3 request reaching 10.99.0.2 and the DC's answer going back to the client."""
    with _server_capture('netns') as srv, \
            Capture(CLIENT_VETH, 'tcp and host %s' % CLIENT_IP, _pcap('netns-' + CLIENT_VETH)) as cli:
        out = client_ns.run_python_json(DRS_RUNNER, ['--host', GATEWAY_HOST, '--epm-port', DCSYNC.epm_port,
                                                     '--steps', 'bind,dc_info,get_nc_changes', '--timeout', 10],
                                        timeout=60)
    steps = {s['step']: s for s in out['steps']}
    assert out.get('local', [None])[0] == CLIENT_IP, out
    assert steps['bind']['ok'] and steps['dc_info']['ok'], out
    assert steps['dc_info']['result'].get('dns_host_name') == DC_DNS_NAME, out
    assert 'get_nc_changes' in steps, out

    drs, flows = _drs_flows_to_dc(srv)
    reached = {k: p for k, p in drs.items() if OP_GETNCCHANGES in request_opnums(p)}
    assert reached, 'no opnum-3 request reached the DC (pcap %s):\n%s\nclient: %r' % (
        _pcap('netns-rpcg-h'), describe(drs or flows), out)
    # The DC's answer to it is what the client got (not a fault made up by the gateway).
    (key, pdus), = reached.items()
    up_call = [p.call_id for p in pdus if p.ptype == PTYPE_REQUEST and p.opnum == OP_GETNCCHANGES][0]
    dc_answer = [p for p in flows.get(reverse(key), []) if p.call_id == up_call]
    assert dc_answer, 'the DC did not answer call %d: %s' % (up_call, describe({reverse(key): flows.get(reverse(key), [])}))
    cflows = rpc_flows(cli.segments())
    ckey = (CLIENT_IP, out['local'][1], GATEWAY_HOST, out['port'])
    assert ckey in cflows, describe(cflows)
    c_call = [p.call_id for p in cflows[ckey] if p.ptype == PTYPE_REQUEST and p.opnum == OP_GETNCCHANGES][0]
    c_answer = [p for p in cflows.get(reverse(ckey), []) if p.call_id == c_call]
    assert c_answer and c_answer[0].ptype == dc_answer[0].ptype, (c_answer, dc_answer)
    if c_answer[0].ptype == PTYPE_FAULT:
        assert c_answer[0].status == dc_answer[0].status, (c_answer, dc_answer)
    # Samba 4.17 replicates the NC head for Administrator.
    if steps['get_nc_changes']['ok']:
        assert steps['get_nc_changes']['result']['objects'] == 1, out


# ------------------------------------------------------------------ 2. a denied call mid-session

@with_gateway_log
def test_denied_call_leaves_the_connection_usable(opn_gateway):
    """Gateway level, on a connection without per-message security (anonymous drsuapi bind, raw
    PDUs): after the gateway's fault for opnum 3, the next calls on the same connection are
    forwarded and answered by the DC (Samba refuses anonymous drsuapi calls with its own fault 0x5,
    which is fine: what matters is who answers). The DC never sees opnum 3."""
    port = DCSYNC.map('drsuapi')
    answers = {}
    with _server_capture('raw') as srv:
        with rawrpc.Conn(DCSYNC.host, port, timeout=REFUSAL_LIMIT_S) as c:
            c.send(rawrpc.bind_pdu(1, [(0, DRSUAPI_UUID, 4, 0)]))
            ack = c.recv_pdu()
            assert ack is not None and ack.ptype == rawrpc.PTYPE_BIND_ACK and ack.bind_ack_results() == [(0, 0)], ack
            for call_id, opnum in ((2, OP_DCINFO), (3, OP_GETNCCHANGES), (4, OP_DCINFO), (5, OP_CRACKNAMES),
                                   (6, OP_GETNCCHANGES), (7, OP_DRSBIND)):
                c.send(rawrpc.request_pdu(call_id, 0, opnum, b'\x00' * 32))
                pdu = c.recv_pdu()
                assert pdu is not None, 'connection closed after the request with opnum %d (call %d)' % (opnum, call_id)
                assert pdu.call_id == call_id, (call_id, pdu)
                answers[call_id] = pdu
    for call_id in (3, 6):
        pdu = answers[call_id]
        assert pdu.ptype == rawrpc.PTYPE_FAULT and pdu.fault_status == STATUS_ACCESS_DENIED, pdu
        assert pdu.flags & PFC_DID_NOT_EXECUTE, pdu
    drs, flows = _drs_flows_to_dc(srv)
    assert len(drs) == 1, describe(drs or flows)
    (key, pdus), = drs.items()
    assert request_opnums(pdus) == [OP_DCINFO, OP_DCINFO, OP_CRACKNAMES, OP_DRSBIND], describe(drs)
    from_dc = {p.call_id for p in flows.get(reverse(key), [])}
    assert {2, 4, 5, 7} <= from_dc and not ({3, 6} & from_dc), 'calls the DC answered: %r' % sorted(from_dc)


@with_gateway_log
def test_denied_call_on_sealed_session_ends_connection_and_reconnect_works(opn_gateway):
    """On a sealed (privacy, NTLM) drsuapi connection the refused DRSGetNCChanges cannot leave the
    session usable: NTLM sealing is stateful (RC4 stream and sequence number) and the client has
    already sealed the refused request, so the DC would fail to unseal the next one
    (nca_s_fault_sec_pkg_error 0x721, seen before the gateway closed such sessions). The gateway
    therefore answers the fault and closes the connection: the next call on it fails at once, a
    new connection works, opnum 3 never reaches the DC, and the DC never reports 0x721."""
    port = DCSYNC.map('drsuapi')
    with _server_capture('sealed-after-deny') as srv:
        s = DRSSession(DCSYNC.host, port)
        try:
            s.bind()
            s.dc_info()
            with pytest.raises(DCERPCException, match='rpc_s_access_denied'):
                s.get_nc_changes()
            t0 = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017 - any error: the connection is gone
                s.dc_info()
            assert time.monotonic() - t0 < REFUSAL_LIMIT_S, 'the closed session must fail fast'
        finally:
            s.close()
        again = DRSSession(DCSYNC.host, port)
        try:
            again.bind()
            info = again.dc_info()
            names = again.crack_names()
        finally:
            again.close()
    drs, flows = _drs_flows_to_dc(srv)
    assert len(drs) == 2, describe(drs or flows)
    for key, pdus in drs.items():
        assert OP_GETNCCHANGES not in request_opnums(pdus), 'opnum 3 reached the DC: %s' % describe(drs)
    dc_faults = [p.status for pdus in flows.values() for p in pdus if p.ptype == PTYPE_FAULT]
    assert NCA_S_FAULT_SEC_PKG_ERROR not in dc_faults, dc_faults
    assert info.get('dns_host_name') == DC_DNS_NAME, info
    assert names and names[0][0] == 0, names


# ------------------------------------------------------------------ 3. min_auth_level: privacy

def _samr_bind(level):
    """Bind samr through opn-samr-privacy at `level`; returns (client port, exception or None)."""
    port = SAMR_PRIVACY.map('samr')
    dce = ri.connect(SAMR_PRIVACY.host, port, level)
    try:
        local = dce.get_rpc_transport().get_socket().getsockname()
        try:
            dce.bind(samr.MSRPC_UUID_SAMR)
            return local[1], None
        except Exception as e:  # noqa: BLE001 - returned to the caller
            return local[1], e
    finally:
        dce.disconnect()


@with_gateway_log
def test_min_auth_level_privacy(opn_gateway, direct):
    """samr allowed only at privacy: a bind at integrity is refused at once (bind_ack rejecting
    the context); at privacy SamrConnect + SamrEnumerateDomainsInSamServer work."""
    port = SAMR_PRIVACY.map('samr')   # ept_map answers: samr is bindable at privacy
    assert port in SAMR_PRIVACY.ports, port
    t0 = time.monotonic()
    with pytest.raises(ri.RPCError) as ei:
        ri.samr_enumerate_domains(SAMR_PRIVACY.host, port, ri.AUTH_INTEGRITY)
    elapsed = time.monotonic() - t0
    assert ei.value.step == 'bind samr', str(ei.value)
    assert 'abstract_syntax_not_supported' in str(ei.value), str(ei.value)
    assert elapsed < REFUSAL_LIMIT_S, 'the refusal took %.2f s' % elapsed
    names = ri.samr_enumerate_domains(SAMR_PRIVACY.host, port, ri.AUTH_PRIVACY)
    assert names == direct['samr_domains'], (names, direct['samr_domains'])


# ------------------------------------------------------------------ 4. audit log

def _audit_lines(path):
    lines = []
    for n, text in enumerate(_read(path).splitlines(), 1):
        if text.strip():
            try:
                lines.append(json.loads(text))
            except ValueError:
                raise AssertionError('audit line %d is not JSON: %r' % (n, text))
    return lines


def _wait_audit(path, predicates, deadline_s=AUDIT_WAIT_S):
    """Poll the audit file (the writer is asynchronous) until every predicate matches some line.
    Returns (lines, {name: [matching lines]})."""
    end = time.monotonic() + deadline_s
    while True:
        lines = _audit_lines(path)
        found = {name: [l for l in lines if pred(l)] for name, pred in predicates.items()}
        if all(found.values()) or time.monotonic() > end:
            return lines, found
        time.sleep(0.1)


@with_gateway_log
def test_audit_log(opn_gateway, client_ns):
    """One sequence, then the JSON lines: the drsuapi bind allowed by rule 1 at privacy, the
    opnum-3 call denied by rule 0 (profile block-dcsync) for 10.99.0.1, the samr bind at
    integrity denied by the default (rule null), and no deny for the opnum-3 call from 10.98.0.2."""
    path = opn_gateway.audit_path
    # (a) host: DRSBind, DRSGetNCChanges (denied)
    port = DCSYNC.map('drsuapi')
    s = DRSSession(DCSYNC.host, port)
    try:
        host_port = s.local_address()[1]
        s.bind()
        s.dc_info()
        with pytest.raises(DCERPCException, match='rpc_s_access_denied'):
            s.get_nc_changes()
    finally:
        s.close()
    # (b) client namespace: the same, forwarded
    out = client_ns.run_python_json(DRS_RUNNER, ['--host', GATEWAY_HOST, '--epm-port', DCSYNC.epm_port,
                                                 '--steps', 'bind,dc_info,get_nc_changes'], timeout=60)
    assert out.get('local', [None])[0] == CLIENT_IP and out['steps'][0]['ok'], out
    ns_port = out['local'][1]
    # (c) samr at integrity, refused by the default; last, so its line also proves that the
    # writer has caught up with (b)
    samr_port, err = _samr_bind(ri.AUTH_INTEGRITY)
    assert err is not None and 'abstract_syntax_not_supported' in str(err), err

    lines, found = _wait_audit(path, {
        'drs bind allow (host)': lambda l: l.get('source.port') == host_port and l.get('event.action') == 'bind'
        and l.get('rpc.interface') == 'drsuapi',
        'drs call deny (host)': lambda l: l.get('source.port') == host_port and l.get('event.action') == 'call',
        'drs bind allow (netns)': lambda l: l.get('source.ip') == CLIENT_IP and l.get('source.port') == ns_port
        and l.get('event.action') == 'bind',
        'samr bind deny': lambda l: l.get('source.port') == samr_port and l.get('event.action') == 'bind'
        and l.get('rpc.interface') == 'samr',
    })
    missing = [k for k, v in found.items() if not v]
    assert not missing, 'audit lines missing after %.0f s: %r; file %s:\n%s' % (
        AUDIT_WAIT_S, missing, path, '\n'.join(json.dumps(l) for l in lines[-30:]))

    ts = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')
    assert all(ts.match(l.get('@timestamp', '')) for l in lines), [l.get('@timestamp') for l in lines]

    (bind,) = found['drs bind allow (host)']
    expect = {'rpc.route': DCSYNC.name, 'event.action': 'bind', 'source.ip': GATEWAY_HOST, 'rpc.listener': 'mapped',
              'rpc.interface': 'drsuapi', 'rpc.interface_uuid': DRSUAPI_UUID, 'rpc.interface_version': '4.0', 'rpc.auth_type': 'ntlm',
              'rpc.auth_level': 'privacy', 'rpc.decision': 'allow', 'rule.id': 1, 'rule.category': None, 'rule.ruleset': 'dcsync',
              'destination.ip': SAMBA_HOST, 'destination.port': 49153}
    assert {k: bind.get(k) for k in expect} == expect, bind

    (call,) = found['drs call deny (host)']
    expect = {'rpc.route': DCSYNC.name, 'event.action': 'call', 'source.ip': GATEWAY_HOST, 'rpc.listener': 'mapped',
              'rpc.interface': 'drsuapi', 'rpc.opnum': 3, 'rpc.auth_type': 'ntlm', 'rpc.auth_level': 'privacy',
              'rpc.decision': 'deny', 'rule.id': 0, 'rule.category': 'block-dcsync', 'rule.ruleset': 'dcsync',
              'event.outcome': 'failure', 'threat.framework': 'MITRE ATT&CK', 'threat.technique.id': ['T1003'],
              'threat.technique.subtechnique.id': ['T1003.006']}
    assert {k: call.get(k) for k in expect} == expect, call

    (deny,) = found['samr bind deny']
    expect = {'rpc.route': SAMR_PRIVACY.name, 'event.action': 'bind', 'source.ip': GATEWAY_HOST, 'rpc.interface': 'samr',
              'rpc.auth_type': 'ntlm', 'rpc.auth_level': 'integrity', 'rpc.decision': 'deny', 'rule.id': None,
              'rule.category': None, 'rule.ruleset': 'samr-privacy'}
    assert {k: deny.get(k) for k in expect} == expect, deny

    (nsbind,) = found['drs bind allow (netns)']
    assert (nsbind['rpc.decision'], nsbind['rule.id'], nsbind['rpc.auth_level']) == ('allow', 1, 'privacy'), nsbind
    ns_denies = [l for l in lines if l.get('source.ip') == CLIENT_IP and l.get('rpc.decision') == 'deny']
    assert not ns_denies, 'deny lines for the excepted source %s: %r' % (CLIENT_IP, ns_denies)
    ns_calls = [l for l in lines if l.get('source.port') == ns_port and l.get('event.action') == 'call']
    assert not ns_calls, 'the forwarded opnum-3 call from %s was logged: %r' % (CLIENT_IP, ns_calls)
