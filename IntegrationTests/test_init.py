"""`rpcgate init --server DC` against the Samba DC: the configuration it writes loads as written
(`check-config`, positional and `--config`), and a gateway run on it lets the rig's clients through
(impacket samr, dssetup, netlogon, drsuapi; rpcclient) while an interface it left commented out
(wkssvc, registered by the DC) is refused.

Its own gateway (not the session one): EPM 127.0.0.21:135 (rpcclient always asks port 135 of
the host it is given), ports 52700-52719, admin 127.0.0.1:19152.
"""

import os
import re
import subprocess

import pytest
from impacket.dcerpc.v5.rpcrt import DCERPCException

import rawrpc
import rpcgate_interop as ri
from gateway import Gateway, Metrics, http_get
from interop_env import SAMBA_HOST

GATEWAY_HOST = '127.0.0.21'
EPM_PORT = 135
FIRST, LAST = 52700, 52719
ADMIN = '127.0.0.1:19152'


@pytest.fixture(scope='module')
def written(samba, rpcgate_binary, outdir):
    """The file `rpcgate init` wrote, and what it printed."""
    path = os.path.join(outdir, 'init.yaml')
    if os.path.exists(path):
        os.unlink(path)
    argv = [rpcgate_binary, 'init', '--server', SAMBA_HOST, '--listen', GATEWAY_HOST, '--epm-port', str(EPM_PORT),
            '--ports', '%d-%d' % (FIRST, LAST), '--admin', ADMIN, '--output', path]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, 'rpcgate init: exit %d\n%s%s' % (r.returncode, r.stdout, r.stderr)
    with open(path) as f:
        return path, f.read(), r.stderr


@pytest.fixture(scope='module')
def init_gateway(written, rpcgate_binary, outdir, interop_log_level):
    path, text, _ = written
    gw = Gateway(rpcgate_binary, text, outdir, name='init-gateway', log_level=interop_log_level)

    def ready():
        status, body = http_get('http://%s/healthz' % ADMIN, timeout=2)
        if status != 200:
            raise AssertionError('/healthz: HTTP %s %r' % (status, body))
        ri.ept_map(GATEWAY_HOST, EPM_PORT, *ri.IFACES['samr'], timeout=3)
        return True
    gw.start(ready, deadline_s=30)
    try:
        yield gw
    finally:
        gw.stop()


def _allowed_block(text):
    """The interface lines of the (uncommented) allow rule."""
    m = re.search(r'^      - action: allow\n        interfaces:\n((?:          - .*\n)+)', text, re.M)
    assert m, text
    return [line.split()[1] for line in m.group(1).splitlines()]


def _commented_block(text):
    m = re.search(r'^      # - action: allow\n      #   interfaces:\n((?:      #     - .*\n)+)', text, re.M)
    assert m, text
    return [line.split()[2] for line in m.group(1).splitlines()]


def test_init_writes_a_starter_configuration(written):
    path, text, stderr = written
    # one route in front of the DC, on the addresses asked for
    assert re.search(r'^routes:\n  - name: dc\n    listen: %s\n    epm_port: %d\n' % (re.escape(GATEWAY_HOST), EPM_PORT), text, re.M), text
    assert '    upstream: %s\n    upstream_epm_port: 135\n' % SAMBA_HOST in text
    assert '    ports: %d-%d\n' % (FIRST, LAST) in text
    # the hardening profiles first, default deny, admin on loopback, learning advice
    rules = text[text.index('    rules:'):]
    assert rules.index('- profile: block-dcsync') < rules.index('- profile: block-coercion') < \
        rules.index('- profile: block-remote-exec') < rules.index('- action: allow')
    assert '    default: deny\n' in text
    assert 'admin:\n  listen: %s\n' % ADMIN in text
    assert 'set `default: audit`' in text
    # what AD clients need, allowed; what else Samba registers over TCP, commented out
    allowed = _allowed_block(text)
    assert allowed[:1] == ['epmapper'], allowed
    for name in ('samr', 'lsarpc', 'netlogon', 'dssetup', 'drsuapi'):
        assert name in allowed, (name, allowed)
    commented = _commented_block(text)
    assert 'wkssvc' in commented, commented
    assert not set(allowed) & set(commented)
    assert 'Next: rpcgate check-config %s' % path in stderr


def test_init_output_passes_check_config(written, rpcgate_binary):
    path, _, _ = written
    for argv in ([rpcgate_binary, 'check-config', path], [rpcgate_binary, 'check-config', '--config', path]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, '%s: exit %d\n%s%s' % (' '.join(argv), r.returncode, r.stdout, r.stderr)
        assert '%s: OK' % path in r.stdout
        assert 'route dc (mapped): epm %s:%d -> %s:135, ports %d-%d, policy dc' % (
            GATEWAY_HOST, EPM_PORT, SAMBA_HOST, FIRST, LAST) in r.stdout, r.stdout


def test_init_refuses_to_overwrite(written, rpcgate_binary):
    path, text, _ = written
    r = subprocess.run([rpcgate_binary, 'init', '--server', SAMBA_HOST, '--output', path],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'exists' in r.stderr, (r.returncode, r.stderr)
    with open(path) as f:
        assert f.read() == text


@pytest.mark.timeout_s(120)
def test_clients_pass_through_the_init_gateway(init_gateway, direct):
    samr_port = ri.ept_map(GATEWAY_HOST, EPM_PORT, *ri.IFACES['samr'])[1]
    lsarpc_port = ri.ept_map(GATEWAY_HOST, EPM_PORT, *ri.IFACES['lsarpc'])[1]
    netlogon_port = ri.ept_map(GATEWAY_HOST, EPM_PORT, *ri.IFACES['netlogon'])[1]
    drsuapi_port = ri.ept_map(GATEWAY_HOST, EPM_PORT, *ri.IFACES['drsuapi'])[1]
    for port in (samr_port, lsarpc_port, netlogon_port, drsuapi_port):
        assert FIRST <= port <= LAST, port
    assert ri.samr_enumerate_domains(GATEWAY_HOST, samr_port) == direct['samr_domains']
    assert ri.samr_enumerate_domains(GATEWAY_HOST, samr_port, auth_level=ri.AUTH_PRIVACY) == direct['samr_domains']
    assert ri.dssetup_primary_domain(GATEWAY_HOST, lsarpc_port) == direct['dssetup']
    ri.netlogon_server_challenge(GATEWAY_HOST, netlogon_port)
    ri.drsuapi_bind(GATEWAY_HOST, drsuapi_port)   # DRSBind at privacy: block-dcsync refuses only opnums 2 and 3
    r = ri.rpcclient(GATEWAY_HOST, 'enumdomains', 'sign', timeout=60)
    assert 'name:[EXAMPLE]' in r.stdout, r.stdout + r.stderr
    metrics = Metrics.scrape(ADMIN)
    for name in ('samr', 'dssetup', 'netlogon', 'drsuapi'):
        assert metrics.value('rpcgate_binds_total', route='dc', interface=name, decision='allow') >= 1, \
            metrics.lines('rpcgate_binds_total')


def test_commented_out_interface_is_refused(init_gateway):
    # The DC registers wkssvc over TCP; init listed it commented out, so the default denies it.
    with pytest.raises(ri.RPCError) as ei:
        ri.ept_map(GATEWAY_HOST, EPM_PORT, *ri.IFACES['wkssvc'])
    assert ei.value.code == 0x16c9a0d6 or 'ept_s_not_registered' in str(ei.value), ei.value
    samr_port = ri.ept_map(GATEWAY_HOST, EPM_PORT, *ri.IFACES['samr'])[1]
    d = ri.connect(GATEWAY_HOST, samr_port)
    try:
        with pytest.raises((DCERPCException, ri.RPCError)) as ei:
            d.bind(rawrpc.syntax_id(ri.IFACES['wkssvc'][0], 1, 0))
    finally:
        d.disconnect()
    assert 'abstract_syntax_not_supported' in str(ei.value), ei.value
    metrics = Metrics.scrape(ADMIN)
    assert metrics.value('rpcgate_binds_total', route='dc', interface='wkssvc', decision='deny') >= 1, \
        metrics.lines('rpcgate_binds_total')
