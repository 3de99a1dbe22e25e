"""5. ept_lookup through the gateway, with fragment sizes that make the reply span several
fragments (Samba lists ~53 entries; at some sizes a fragment boundary falls inside a tower).
Every ncacn_ip_tcp tower must point at the gateway, or be redacted; every tower of a denied
interface, whatever its protocol, shows no pipe name, port or host (issue 14)."""

import re

import pytest

import rpcgate_interop as ri
from interop_env import DC1, EPM_UUID, NODRS, SAMBA_HOST, SAMBA_REAL_PORTS

FRAG_SIZES = [2048, 2248, 2900, 3500, 4280]
PTYPE_RESPONSE = 2


def _check_lookup(route, entries):
    problems = []
    for e in entries:
        if e['protocol'] != 'ncacn_ip_tcp':
            if e['port'] in SAMBA_REAL_PORTS:
                problems.append('real port left in a %s tower: %r' % (e['protocol'], e))
            uuid, major = (e['uuid'] or '').upper(), (e['version'] or '0.0').split('.')[0]
            if e['uuid'] and uuid != EPM_UUID and not route.allows(uuid, major):
                revealed = [k for k in ('endpoint', 'host') if e[k] and any(e[k])]
                revealed += [k for k in ('port',) if e[k]]
                revealed += [k for k in ('ip',) if e[k] not in (None, '0.0.0.0')]
                if revealed:
                    problems.append('denied interface reveals its %s in a %s tower: %r' % (
                        ', '.join(revealed), e['protocol'], e))
            continue
        port, ip, uuid = e['port'], e['ip'], (e['uuid'] or '').upper()
        major = (e['version'] or '0.0').split('.')[0]
        if uuid == EPM_UUID:
            if port != route.epm_port or ip != route.host:
                problems.append("the EPM's own tower must be %s:%d, got %s:%s: %r" % (route.host, route.epm_port, ip, port, e))
        elif route.allows(uuid, major):
            if port not in route.ports or ip != route.host:
                problems.append('allowed interface not advertised at a gateway port (%s:%s): %r' % (ip, port, e))
        else:
            if port != 0 or ip != '0.0.0.0':
                problems.append('denied interface not redacted to 0.0.0.0:0 (got %s:%s): %r' % (ip, port, e))
        if port in SAMBA_REAL_PORTS:
            problems.append('real server port left: %r' % e)
    return problems


@pytest.mark.parametrize('max_frag', FRAG_SIZES)
@pytest.mark.parametrize('route', [DC1, NODRS], ids=lambda r: r.name)
def test_ept_lookup_multifragment_rewritten(gateway, route, max_frag):
    direct_frags, frags = [], []
    direct = ri.ept_lookup(SAMBA_HOST, 135, max_frag=max_frag, frag_log=direct_frags)
    entries = ri.ept_lookup(route.host, route.epm_port, max_frag=max_frag, frag_log=frags)
    responses = [f for f in frags if f[0] == PTYPE_RESPONSE]
    assert len(responses) >= 2, 'expected a multi-fragment reply at max_frag %d, got %r' % (max_frag, frags)
    assert [(e['uuid'], e['version'], e['protocol'], e['annotation']) for e in entries] == \
        [(e['uuid'], e['version'], e['protocol'], e['annotation']) for e in direct], \
        'the gateway changed the list of entries (max_frag %d)' % max_frag
    problems = _check_lookup(route, entries)
    assert not problems, 'max_frag %d, fragments %r:\n  %s' % (max_frag, responses, '\n  '.join(problems))


def test_ept_lookup_agrees_with_ept_map(dc1):
    entries = ri.ept_lookup(dc1.host, dc1.epm_port, max_frag=2048)
    for name in ('samr', 'lsarpc', 'netlogon', 'drsuapi'):
        uuid, version = ri.IFACES[name]
        ports = {e['port'] for e in entries if e['protocol'] == 'ncacn_ip_tcp'
                 and (e['uuid'] or '').lower() == uuid and e['version'] == version}
        assert ports == {dc1.map(name)}, '%s: ept_lookup ports %r, ept_map port %d' % (name, ports, dc1.map(name))


@pytest.mark.timeout_s(120)
def test_ept_lookup_fragment_size_sweep(dc1):
    """Every negotiable fragment size from 2048 (Samba's floor) to 4280 in steps of 8: some
    put a fragment boundary inside a tower, which a per-fragment rewriter would get wrong."""
    failures = []
    for max_frag in range(2048, 4281, 8):
        frags = []
        try:
            entries = ri.ept_lookup(dc1.host, dc1.epm_port, max_frag=max_frag, frag_log=frags, timeout=5)
        except ri.RPCError as e:
            failures.append('max_frag %d: %s' % (max_frag, e))
            continue
        problems = _check_lookup(dc1, entries)
        if len(entries) < 40:
            problems.append('only %d entries' % len(entries))
        if problems:
            failures.append('max_frag %d (fragments %r): %s' % (
                max_frag, [f[2] for f in frags if f[0] == PTYPE_RESPONSE], '; '.join(problems[:3])))
    assert not failures, '%d of %d sizes wrong:\n%s' % (len(failures), len(range(2048, 4281, 8)), '\n'.join(failures[:20]))


EPMLOOKUP_LINE = re.compile(r' (ncacn_np|ncalrpc|ncacn_ip_tcp|ncacn_http|ncadg_ip_udp):([^\[]*)\[(.*?),?abstract_syntax='
                            r'([0-9a-fA-F-]+)/0x([0-9a-fA-F]+)\]')


@pytest.mark.timeout_s(120)
def test_rpcclient_epmlookup_shows_nothing_of_denied_interfaces(dc1):
    """rpcclient `epmlookup` (every entry, as rpcdump.py does) through the gateway: the pipes
    only denied interfaces use (\\pipe\\browser, \\pipe\\unixinfo, \\pipe\\dnsserver) are gone, and no
    tower of a denied interface names a pipe, port or host; rpcclient `epmmap` still works."""
    direct = ri.rpcclient(SAMBA_HOST, 'epmlookup', timeout=60).stdout
    assert '\\pipe\\browser' in direct and '\\pipe\\unixinfo' in direct, 'Samba lists other pipes now:\n%s' % direct
    out = ri.rpcclient(dc1.host, 'epmlookup', timeout=60).stdout
    lines = [line for line in out.splitlines() if 'abstract_syntax=' in line]
    assert len(lines) == len([line for line in direct.splitlines() if 'abstract_syntax=' in line]), out
    for pipe in ('\\pipe\\browser', '\\pipe\\unixinfo', '\\pipe\\dnsserver'):
        assert pipe not in out, '%s is listed through the gateway:\n%s' % (pipe, out)
    problems = []
    for line in lines:
        m = EPMLOOKUP_LINE.search(line)
        if not m:
            problems.append('unparsed: %r' % line)
            continue
        protocol, host, endpoint, uuid, major = m.groups()
        if uuid.upper() == EPM_UUID or dc1.allows(uuid, int(major, 16) & 0xFFFF):
            continue
        endpoint, host = endpoint.replace('\x00', '').strip(), host.replace('\x00', '').strip()
        if endpoint not in ('', '0') or host not in ('', '0.0.0.0'):
            problems.append(line)
    assert not problems, 'denied interfaces still show endpoints:\n' + '\n'.join(problems)
    mapped = ri.rpcclient(dc1.host, 'epmmap', timeout=60).stdout
    assert 'tower[0]' in mapped, mapped
