#!/usr/bin/python3
"""Capture real DCE/RPC PDUs from a Samba AD DC and save them as hex fixtures.

Needs: root, the Samba DC from `scripts/samba-dc.sh up` (10.99.0.2 in netns
rpcg-srv, host side veth rpcg-h = 10.99.0.1), Debian's python3-impacket,
dumpcap (tshark package) and rpcclient (smbclient package).

Every scenario runs in its own packet capture (dumpcap on rpcg-h). The pcap is
parsed here (Ethernet/IPv4/TCP), each TCP direction is reassembled by sequence
number and split into PDUs by frag_length (offset 8, byte order from drep[0]).
The pcaps are kept under ${RPCGATE_TEST_STATE:-/tmp/rpcgate-test}/captures.

Usage:
    sudo scripts/samba-dc.sh up
    sudo /usr/bin/python3 scripts/capture-fixtures.py [--out DIR] [--lookup-frag N]

Fixture format: first line(s) start with '#' (comment), then lowercase hex,
64 characters a line. One PDU per file, except *_stream.hex (PDUs back to back).
"""

import argparse
import datetime
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid as uuidlib

sys.path.insert(0, '/usr/lib/python3/dist-packages')

from impacket import version as impacket_version  # noqa: E402
from impacket.dcerpc.v5 import transport, epm, samr, lsat, drsuapi, rpcrt  # noqa: E402
from impacket.dcerpc.v5.dtypes import NULL  # noqa: E402
from impacket.dcerpc.v5.rpcrt import DCERPCException  # noqa: E402
from impacket.uuid import uuidtup_to_bin  # noqa: E402

SRV = '10.99.0.2'
IFACE = 'rpcg-h'
USER, PASSWORD, DOMAIN = 'Administrator', 'Passw0rd!Test', 'EXAMPLE'
SAMR = ('12345778-1234-abcd-ef00-0123456789ac', '1.0')
NDR32 = ('8a885d04-1ceb-11c9-9fe8-08002b104860', 2, 0)
NDR64 = ('71710533-beba-4937-8319-b5dbef9ccc36', 1, 0)
BTFN = ('6cb71c2c-9812-4540-0300-000000000000', 1, 0)
EPM_IF = ('e1af8308-5d1f-11c9-91a4-08002b14a0fa', 3, 0)
SAMR_IF = ('12345778-1234-abcd-ef00-0123456789ac', 1, 0)
TIMEOUT = 10

PTYPES = {0: 'request', 2: 'response', 3: 'fault', 11: 'bind', 12: 'bind_ack', 13: 'bind_nak',
          14: 'alter_context', 15: 'alter_context_resp', 16: 'auth3', 17: 'shutdown',
          18: 'co_cancel', 19: 'orphaned'}

STATE = os.environ.get('RPCGATE_TEST_STATE', '/tmp/rpcgate-test')
CAPDIR = os.path.join(STATE, 'captures')


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- PDU helpers

def pdu_header(p):
    le = p[4] & 0x10
    e = '<' if le else '>'
    frag_len, auth_len, call_id = struct.unpack(e + 'HHI', p[8:16])
    return {'ptype': p[2], 'flags': p[3], 'drep': p[4:8].hex(), 'frag_len': frag_len,
            'auth_len': auth_len, 'call_id': call_id, 'le': bool(le)}


def split_pdus(stream):
    """Split a byte stream into PDUs; returns list of (offset, pdu). Trailing partial data raises."""
    out, off = [], 0
    while off < len(stream):
        if len(stream) - off < 16:
            raise ValueError('trailing %d bytes, not a PDU header' % (len(stream) - off))
        h = pdu_header(stream[off:off + 16])
        if h['frag_len'] < 16 or off + h['frag_len'] > len(stream):
            raise ValueError('bad/partial PDU at %d: frag_len %d, %d bytes left'
                             % (off, h['frag_len'], len(stream) - off))
        out.append((off, stream[off:off + h['frag_len']]))
        off += h['frag_len']
    return out


def summary(p):
    h = pdu_header(p)
    s = 'ptype=%d(%s) flags=0x%02x frag_len=%d auth_len=%d call_id=%d' % (
        h['ptype'], PTYPES.get(h['ptype'], '?'), h['flags'], h['frag_len'], h['auth_len'], h['call_id'])
    if h['ptype'] in (0, 2, 3):
        ctx = struct.unpack('<H', p[20:22])[0]
        s += ' ctx=%d' % ctx
        if h['ptype'] == 0:
            s += ' opnum=%d' % struct.unpack('<H', p[22:24])[0]
    if h['auth_len']:
        t = h['frag_len'] - h['auth_len'] - 8
        s += ' auth_type=%d auth_level=%d auth_pad=%d' % (p[t], p[t + 1], p[t + 2])
    return s


# ---------------------------------------------------------------- pcap parsing

def read_pcap(path):
    with open(path, 'rb') as f:
        data = f.read()
    magic = data[:4]
    if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1'):
        e = '<'
    elif magic in (b'\xa1\xb2\xc3\xd4', b'\xa1\xb2\x3c\x4d'):
        e = '>'
    else:
        raise ValueError('%s: not a classic pcap file' % path)
    nsec = magic in (b'\x4d\x3c\xb2\xa1', b'\xa1\xb2\x3c\x4d')
    linktype = struct.unpack(e + 'I', data[20:24])[0]
    off, pkts = 24, []
    while off + 16 <= len(data):
        ts_s, ts_u, incl, _orig = struct.unpack(e + 'IIII', data[off:off + 16])
        off += 16
        frame = data[off:off + incl]
        off += incl
        ts = ts_s + ts_u / (1e9 if nsec else 1e6)
        if linktype == 1:          # Ethernet
            et = struct.unpack('>H', frame[12:14])[0]
            l3 = frame[14:]
            if et == 0x8100:
                et = struct.unpack('>H', frame[16:18])[0]
                l3 = frame[18:]
        elif linktype == 113:      # Linux cooked
            et = struct.unpack('>H', frame[14:16])[0]
            l3 = frame[16:]
        elif linktype == 101:      # raw IP
            et, l3 = 0x0800, frame
        else:
            raise ValueError('unsupported linktype %d' % linktype)
        if et != 0x0800 or len(l3) < 20 or l3[9] != 6:
            continue
        ihl = (l3[0] & 0x0f) * 4
        tot = struct.unpack('>H', l3[2:4])[0]
        src, dst = socket.inet_ntoa(l3[12:16]), socket.inet_ntoa(l3[16:20])
        tcp = l3[ihl:tot]
        sport, dport, seq = struct.unpack('>HHI', tcp[:8])
        doff = (tcp[12] >> 4) * 4
        flags = tcp[13]
        pkts.append({'ts': ts, 'src': (src, sport), 'dst': (dst, dport), 'seq': seq,
                     'flags': flags, 'payload': bytes(tcp[doff:])})
    return pkts


def tcp_conversations(pkts):
    """Reassemble TCP connections. Returns list of dicts ordered by first packet:
    client, server, c2s bytes, s2c bytes, and 'pdus': [(ts, 'c2s'|'s2c', offset, pdu)]."""
    conns = {}
    order = []
    for p in pkts:
        key = tuple(sorted([p['src'], p['dst']]))
        if key not in conns:
            conns[key] = {'dirs': {}, 'first': p['ts'], 'client': None}
            order.append(key)
        c = conns[key]
        d = c['dirs'].setdefault(p['src'], {'isn': None, 'segs': []})
        if p['flags'] & 0x02:  # SYN
            d['isn'] = p['seq']
            if not (p['flags'] & 0x10):  # SYN without ACK: the client
                c['client'] = p['src']
        if p['payload']:
            d['segs'].append((p['seq'], p['ts'], p['payload']))
    out = []
    for key in order:
        c = conns[key]
        client = c['client']
        if client is None:
            continue  # connection started before the capture: ignore
        server = key[0] if key[1] == client else key[1]
        res = {'client': client, 'server': server, 'first': c['first']}
        pdus = []
        for name, ep in (('c2s', client), ('s2c', server)):
            d = c['dirs'].get(ep, {'isn': None, 'segs': []})
            if d['isn'] is None and d['segs']:
                raise ValueError('no SYN seen for %s' % (ep,))
            buf = bytearray()
            starts = []  # (offset, ts)
            for seq, ts, pl in sorted(d['segs'], key=lambda s: ((s[0] - d['isn'] - 1) & 0xffffffff)):
                rel = (seq - d['isn'] - 1) & 0xffffffff
                if rel > len(buf):
                    raise ValueError('gap in TCP stream %s (missing %d bytes)' % (ep, rel - len(buf)))
                if rel + len(pl) > len(buf):
                    starts.append((max(rel, len(buf)), ts))
                    buf[rel:rel + len(pl)] = pl
            res[name] = bytes(buf)
            for off, pdu in split_pdus(bytes(buf)):
                ts = [t for o, t in starts if o <= off][-1]
                pdus.append((ts, name, off, pdu))
        pdus.sort(key=lambda x: (x[0], 0 if x[1] == 'c2s' else 1, x[2]))
        res['pdus'] = pdus
        out.append(res)
    return out


class Capture:
    """dumpcap on the host side of the veth, for one scenario."""

    def __init__(self, name):
        os.makedirs(CAPDIR, exist_ok=True)
        self.path = os.path.join(CAPDIR, name + '.pcap')
        self.proc = None

    def __enter__(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.proc = subprocess.Popen(
            ['dumpcap', '-q', '-i', IFACE, '-P', '-s', '0', '-f', 'tcp and net 10.99.0.0/24',
             '-w', self.path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # dumpcap -q prints nothing when ready; wait until the file header is written.
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('dumpcap exited: %s' % self.proc.stderr.read().decode(errors='replace'))
            if os.path.exists(self.path) and os.path.getsize(self.path) >= 24:
                break
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError('dumpcap did not start within 15 s')
        time.sleep(0.5)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            time.sleep(0.5)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __exit__(self, *exc):
        self.stop()
        return False

    def conversations(self):
        return tcp_conversations(read_pcap(self.path))


# ---------------------------------------------------------------- fixture writer

class Writer:
    def __init__(self, outdir, meta):
        self.outdir = outdir
        self.meta = meta
        self.written = []
        os.makedirs(outdir, exist_ok=True)

    def save(self, name, data, what, single=True):
        if single:
            h = pdu_header(data)
            if h['frag_len'] != len(data):
                raise ValueError('%s: frag_len %d != %d bytes' % (name, h['frag_len'], len(data)))
            info = summary(data)
        else:
            parts = split_pdus(data)
            info = 'stream of %d PDUs, %d bytes: %s' % (
                len(parts), len(data), '; '.join(summary(p) for _, p in parts))
        comment = '# %s: %s. %s. %s' % (name, what, self.meta, info)
        hx = data.hex()
        lines = [hx[i:i + 64] for i in range(0, len(hx), 64)]
        with open(os.path.join(self.outdir, name), 'w') as f:
            f.write(comment.replace('\n', ' ') + '\n')
            f.write('\n'.join(lines) + '\n')
        self.written.append(name)
        print('%-42s %s' % (name, info))


def conv_pdus(conv, direction=None, ptype=None):
    return [p for ts, d, off, p in conv['pdus']
            if (direction is None or d == direction) and (ptype is None or p[2] == ptype)]


def print_conv(conv):
    log('  conn %s:%d -> %s:%d' % (conv['client'] + conv['server']))
    for ts, d, off, p in conv['pdus']:
        log('    %s @%-5d %s' % (d, off, summary(p)))


# ---------------------------------------------------------------- clients

def dce_for(port, auth_level=None, creds=False):
    t = transport.DCERPCTransportFactory('ncacn_ip_tcp:%s[%d]' % (SRV, port))
    t.set_connect_timeout(TIMEOUT)
    if creds:
        t.set_credentials(USER, PASSWORD, DOMAIN)
    dce = t.get_dce_rpc()
    if auth_level is not None:
        dce.set_auth_level(auth_level)
    dce.connect()
    return dce


def map_port(uuidtup):
    dce = dce_for(135)
    try:
        b = epm.hept_map(SRV, uuidtup_to_bin(uuidtup), protocol='ncacn_ip_tcp', dce=dce)
    finally:
        dce.disconnect()
    return int(b.rsplit('[', 1)[1].rstrip(']'))


class FragSize:
    """Make impacket propose max_xmit_frag/max_recv_frag = size in its binds."""

    def __init__(self, size):
        self.size = size
        self.orig = rpcrt.MSRPCBind.__init__

    def __enter__(self):
        orig, size = self.orig, self.size

        def init(obj, data=None, alignment=0):
            orig(obj, data, alignment)
            if data is None:
                obj['max_tfrag'] = size
                obj['max_rfrag'] = size
        rpcrt.MSRPCBind.__init__ = init
        return self

    def __exit__(self, *exc):
        rpcrt.MSRPCBind.__init__ = self.orig
        return False


def guid_le(s):
    return uuidlib.UUID(s).bytes_le


def ctx_elem(ctx_id, abstract, transfer):
    u, ma, mi = abstract
    tu, tma, tmi = transfer
    return (struct.pack('<HBB', ctx_id, 1, 0) + guid_le(u) + struct.pack('<HH', ma, mi)
            + guid_le(tu) + struct.pack('<HH', tma, tmi))


def three_context_bind(iface, call_id=2, frag=5840):
    body = struct.pack('<HHIB3x', frag, frag, 0, 3)
    body += ctx_elem(0, iface, NDR32) + ctx_elem(1, iface, NDR64) + ctx_elem(2, iface, BTFN)
    hdr = struct.pack('<BBBB4sHHI', 5, 0, 11, 0x03, b'\x10\x00\x00\x00', 16 + len(body), 0, call_id)
    return hdr + body


def recv_pdu(sock):
    buf = b''
    while len(buf) < 16:
        c = sock.recv(65536)
        if not c:
            raise EOFError('connection closed')
        buf += c
    h = pdu_header(buf)
    while len(buf) < h['frag_len']:
        c = sock.recv(65536)
        if not c:
            raise EOFError('connection closed')
        buf += c
    return buf


def raw_exchange(port, pdu):
    with socket.create_connection((SRV, port), timeout=TIMEOUT) as s:
        s.sendall(pdu)
        return recv_pdu(s)


# ---------------------------------------------------------------- NDR32 ept_lookup parsing

def parse_tower(tw, base):
    """Return [(proto_id, abs_offset_of_rhs, rhs_len)] for the floors of a tower at stub offset base."""
    n = struct.unpack('<H', tw[:2])[0]
    o, floors = 2, []
    for _ in range(n):
        ll = struct.unpack('<H', tw[o:o + 2])[0]
        proto = tw[o + 2]
        o += 2 + ll
        rl = struct.unpack('<H', tw[o:o + 2])[0]
        floors.append((proto, base + o + 2, rl, tw[o + 2:o + 2 + rl]))
        o += 2 + rl
    return floors


def parse_lookup_stub(stub):
    """NDR32 ept_lookup response stub. Returns (entries, status); each entry has
    annotation and floors with absolute stub offsets."""
    o = 20
    num = struct.unpack('<I', stub[o:o + 4])[0]
    o += 4
    _maxc, _off, actual = struct.unpack('<III', stub[o:o + 12])
    o += 12
    ents = []
    for _ in range(actual):
        obj = stub[o:o + 16]
        ref, aoff, alen = struct.unpack('<III', stub[o + 16:o + 28])
        ann = stub[o + 28:o + 28 + alen]
        o += 28 + alen
        o += (-o) % 4
        ents.append({'object': obj, 'ref': ref, 'annotation': ann.rstrip(b'\0').decode(errors='replace')})
    for e in ents:
        if not e['ref']:
            continue
        o += (-o) % 4
        _conf, tlen = struct.unpack('<II', stub[o:o + 8])
        e['tower_off'] = o + 8
        e['floors'] = parse_tower(stub[o + 8:o + 8 + tlen], o + 8)
        o += 8 + tlen
    o += (-o) % 4
    status = struct.unpack('<I', stub[o:o + 4])[0]
    return num, ents, status


def lookup_ports(stub):
    """[(kind, stub_offset, length, value, annotation)] for TCP port / IP floors."""
    _n, ents, _st = parse_lookup_stub(stub)
    res = []
    for e in ents:
        for proto, off, rl, rhs in e.get('floors', []):
            if proto in (0x07, 0x1f):  # TCP port / ncacn_http port, big-endian
                res.append(('port', off, rl, struct.unpack('>H', rhs)[0],
                            e['annotation'] + (' (http)' if proto == 0x1f else '')))
            elif proto == 0x09:
                res.append(('ip', off, rl, socket.inet_ntoa(rhs), e['annotation']))
    return res


def samba_send_frag(client_max_recv):
    # Samba's dcesrv bind: max_rep = MIN(MAX(2048, client max_recv_frag), 5840)
    return min(max(2048, client_max_recv), 5840)


def predict_straddles(stub_len, fields, frag, auth_overhead=0):
    chunk = samba_send_frag(frag) - 24 - auth_overhead
    chunk -= chunk % 16
    bounds = list(range(chunk, stub_len, chunk))
    hits = []
    for kind, off, ln, val, ann in fields:
        for b in bounds:
            if off < b < off + ln:
                hits.append((kind, off, ln, val, b))
    nfrag = len(bounds) + 1
    return chunk, nfrag, hits


# ---------------------------------------------------------------- scenarios

def sc_ept_map(w):
    with Capture('ept_map') as cap:
        map_port(SAMR)
        # and one for a version Samba does not register (samr 2.0): status ept_s_not_registered
        try:
            map_port((SAMR[0], '2.0'))
        except DCERPCException as e:
            log('  samr 2.0: %s' % e)
    convs = cap.conversations()
    for c in convs:
        print_conv(c)
    c = convs[0]
    w.save('ept_bind.hex', conv_pdus(c, 'c2s', 11)[0], 'impacket 0.10 anonymous bind to the endpoint mapper (epm v3.0, NDR32) on %s:135' % SRV)
    w.save('ept_bind_ack.hex', conv_pdus(c, 's2c', 12)[0], 'Samba bind_ack to ept_bind.hex (sec_addr "135")')
    w.save('ept_map_request.hex', conv_pdus(c, 'c2s', 0)[0], 'impacket hept_map request (opnum 3) for samr 12345778-1234-abcd-ef00-0123456789ac v1.0, NDR32, ncacn_ip_tcp, anonymous; object pointer non-null (nil UUID), referents 1 and 2, max_towers 1, NDR pad byte 0xab after the tower')
    w.save('ept_map_response.hex', conv_pdus(c, 's2c', 2)[0], 'Samba ept_map response: one tower, TCP port 49154, IP floor 0.0.0.0, status 0')
    c2 = convs[1]
    w.save('ept_map_not_registered_response.hex', conv_pdus(c2, 's2c', 2)[0], 'Samba ept_map response for samr v2.0 (not registered): num_towers 0, status 0x16c9a0d6 ept_s_not_registered')


def sc_ept_lookup(w, frag):
    # First learn the stub at impacket's default size (4280), then pick a fragment
    # size whose boundaries fall inside a port/IP field if one exists.
    def do_lookup(size, name):
        with Capture(name) as cap, FragSize(size):
            dce = dce_for(135)
            try:
                dce.bind(epm.MSRPC_UUID_PORTMAP)
                req = epm.ept_lookup()
                req['inquiry_type'] = epm.RPC_C_EP_ALL_ELTS
                req['object'] = NULL
                req['Ifid'] = NULL
                req['vers_option'] = epm.RPC_C_VERS_ALL
                req['entry_handle'] = epm.ept_lookup_handle_t()
                req['max_ents'] = 500
                resp = dce.request(req)
                log('  ept_lookup max_frag %d: num_ents %d' % (size, resp['num_ents']))
            finally:
                dce.disconnect()
        convs = cap.conversations()
        return convs[0]

    c = do_lookup(4280, 'ept_lookup_4280')
    print_conv(c)
    frags = conv_pdus(c, 's2c', 2)
    stub = b''.join(p[24:] for p in frags)
    fields = lookup_ports(stub)
    num, ents, status = parse_lookup_stub(stub)
    log('  stub %d bytes, %d entries, status 0x%08x, %d port/ip fields' % (len(stub), num, status, len(fields)))
    w.save('ept_lookup_4280_response_stream.hex', b''.join(frags),
           'Samba ept_lookup reply (max_ents 500, %d entries) at impacket default max_recv_frag 4280: all fragments back to back' % num,
           single=False)
    chosen = frag
    if chosen is None:
        # Samba's chunks are multiples of 16 and towers start 4-aligned, so a port
        # (4-aligned in the stub) never straddles; an IP floor (offset 3 mod 4) can.
        for want in ('port', 'ip'):
            for size in range(2048, 4281):
                chunk, nfrag, hits = predict_straddles(len(stub), fields, size)
                if nfrag >= 3 and any(h[0] == want for h in hits):
                    chosen = size
                    break
            if chosen is not None:
                break
        if chosen is None:
            chosen = 2048
    chunk, nfrag, hits = predict_straddles(len(stub), fields, chosen)
    log('  chosen max_recv_frag %d: predicted chunk %d, %d fragments, straddles %s' % (chosen, chunk, nfrag, hits))
    c = do_lookup(chosen, 'ept_lookup_%d' % chosen)
    print_conv(c)
    frags = conv_pdus(c, 's2c', 2)
    stub2 = b''.join(p[24:] for p in frags)
    # the entry_handle (first 20 bytes) is a fresh context handle per call
    assert stub2[20:] == stub[20:], 'lookup stub differs between the two runs'
    stub = stub2
    bind = conv_pdus(c, 'c2s', 11)[0]
    ack = conv_pdus(c, 's2c', 12)[0]
    w.save('ept_lookup_bind.hex', bind, 'impacket anonymous epm bind proposing max_xmit_frag=max_recv_frag=%d (patched MSRPCBind defaults)' % chosen)
    w.save('ept_lookup_bind_ack.hex', ack, 'Samba bind_ack to ept_lookup_bind.hex (max_xmit %d, max_recv %d)' % struct.unpack('<HH', ack[16:20]))
    w.save('ept_lookup_request.hex', conv_pdus(c, 'c2s', 0)[0],
           'impacket ept_lookup request (opnum 2): inquiry_type RPC_C_EP_ALL_ELTS, object NULL, Ifid NULL, vers_option RPC_C_VERS_ALL, null entry_handle, max_ents 500')
    for i, p in enumerate(frags, 1):
        w.save('ept_lookup_response_frag%d.hex' % i, p,
               'Samba ept_lookup reply fragment %d of %d (negotiated max_recv_frag %d)' % (i, len(frags), chosen))
    w.save('ept_lookup_response_stream.hex', b''.join(frags),
           'Samba ept_lookup reply, all %d fragments back to back (max_recv_frag %d, %d entries)' % (len(frags), chosen, num),
           single=False)
    # facts: actual stub boundaries and straddling fields
    bounds, acc = [], 0
    for p in frags[:-1]:
        acc += len(p) - 24
        bounds.append(acc)
    print('  lookup: max_recv_frag %d, fragment frag_lens %s, stub %d bytes, stub boundaries %s'
          % (chosen, [len(p) for p in frags], len(stub), bounds))
    for kind, off, ln, val, ann in fields:
        for k, b in enumerate(bounds):
            if off < b < off + ln:
                # offsets in the concatenated stream: stub offset s lives in fragment j at 24 + s - start_j
                fi = k  # field starts in fragment k (0-based), ends in k+1
                start_k = bounds[k - 1] if k else 0
                s_off = sum(len(p) for p in frags[:fi]) + 24 + (off - start_k)
                print('  STRADDLE %s %s (%s) stub off %d..%d, boundary at stub %d: frag%d bytes %d..%d + frag%d bytes 24..%d; stream offset %d'
                      % (kind, val, ann, off, off + ln - 1, b, fi + 1, 24 + off - start_k, len(frags[fi]) - 1,
                         fi + 2, 24 + (off + ln - b) - 1, s_off))
    ports = sorted({(val, ann) for kind, off, ln, val, ann in fields if kind == 'port'})
    print('  lookup ports: %s' % sorted({v for v, a in ports}))
    return chosen


def sc_ntlm(w, samr_port):
    with Capture('ntlm_integrity') as cap:
        dce = dce_for(samr_port, rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, creds=True)
        try:
            dce.bind(samr.MSRPC_UUID_SAMR)
            h = samr.hSamrConnect(dce)['ServerHandle']
            r = samr.hSamrEnumerateDomainsInSamServer(dce, h)
            log('  domains: %s' % [d['Name'] for d in r['Buffer']['Buffer']])
        finally:
            dce.disconnect()
    c = cap.conversations()[0]
    print_conv(c)
    w.save('ntlm_bind.hex', conv_pdus(c, 'c2s', 11)[0], 'impacket bind to samr v1.0 on %s:%d with NTLMSSP NEGOTIATE, auth level 5 (PKT_INTEGRITY), EXAMPLE\\Administrator' % (SRV, samr_port))
    w.save('ntlm_bind_ack.hex', conv_pdus(c, 's2c', 12)[0], 'Samba bind_ack with NTLMSSP CHALLENGE')
    w.save('ntlm_auth3.hex', conv_pdus(c, 'c2s', 16)[0], 'impacket auth3 with NTLMSSP AUTHENTICATE')
    w.save('signed_request.hex', conv_pdus(c, 'c2s', 0)[0], 'impacket SamrConnect (opnum 0) at auth level 5 (integrity), NTLM signature in trailer')
    w.save('signed_response.hex', conv_pdus(c, 's2c', 2)[0], 'Samba response to signed_request.hex, signed')


def sc_sealed(w, samr_port):
    with Capture('ntlm_privacy') as cap:
        dce = dce_for(samr_port, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, creds=True)
        try:
            dce.bind(samr.MSRPC_UUID_SAMR)
            h = samr.hSamrConnect(dce)['ServerHandle']
            samr.hSamrCloseHandle(dce, h)
        finally:
            dce.disconnect()
    c = cap.conversations()[0]
    print_conv(c)
    w.save('sealed_bind.hex', conv_pdus(c, 'c2s', 11)[0], 'impacket bind to samr with NTLMSSP, auth level 6 (PKT_PRIVACY)')
    w.save('sealed_request.hex', conv_pdus(c, 'c2s', 0)[0], 'impacket SamrConnect (opnum 0) at auth level 6 (privacy): stub sealed, NTLM trailer')
    w.save('sealed_response.hex', conv_pdus(c, 's2c', 2)[0], 'Samba response to sealed_request.hex, sealed')


def sc_spnego(w):
    os.makedirs(os.path.join(STATE, 'client'), exist_ok=True)
    conf = os.path.join(STATE, 'client', 'smb.conf')
    with open(conf, 'w') as f:
        f.write('[global]\n\tworkgroup = EXAMPLE\n\trealm = EXAMPLE.TEST\n')
    cmd = ['rpcclient', '-s', conf, '-U', '%s\\%s%%%s' % (DOMAIN, USER, PASSWORD), '--use-kerberos=off',
           'ncacn_ip_tcp:%s[spnego,seal]' % SRV, '-c', 'enumdomains']
    with Capture('rpcclient_spnego_seal') as cap:
        r = subprocess.run(cmd, capture_output=True, timeout=60, text=True)
        log('  rpcclient rc=%d: %s %s' % (r.returncode, r.stdout.strip(), r.stderr.strip()))
        if r.returncode:
            raise RuntimeError('rpcclient failed')
    convs = cap.conversations()
    for c in convs:
        print_conv(c)
    m = [c for c in convs if c['server'][1] == 135][0]
    d = [c for c in convs if c['server'][1] != 135][0]
    w.save('rpcclient_ept_map_request.hex', conv_pdus(m, 'c2s', 0)[0], 'rpcclient 4.17 (Samba client library) anonymous ept_map request for samr v1.0 (max_towers 1)')
    w.save('rpcclient_ept_map_response.hex', conv_pdus(m, 's2c', 2)[0], 'Samba ept_map response to rpcclient_ept_map_request.hex')
    w.save('spnego_bind.hex', conv_pdus(d, 'c2s', 11)[0], 'rpcclient [spnego,seal] bind to samr on %s:%d: auth_type 9 (SPNEGO) NegTokenInit with NTLMSSP NEGOTIATE, level 6' % (SRV, d['server'][1]))
    w.save('spnego_bind_ack.hex', conv_pdus(d, 's2c', 12)[0], 'Samba bind_ack: SPNEGO NegTokenResp with NTLMSSP CHALLENGE')
    w.save('spnego_alter_context.hex', conv_pdus(d, 'c2s', 14)[0], 'rpcclient alter_context carrying SPNEGO NegTokenResp with NTLMSSP AUTHENTICATE (third leg)')
    w.save('spnego_alter_context_resp.hex', conv_pdus(d, 's2c', 15)[0], 'Samba alter_context_resp: SPNEGO accept-completed with mechListMIC')
    w.save('spnego_sealed_request.hex', conv_pdus(d, 'c2s', 0)[0], 'rpcclient first request (SamrConnect2/5) sealed under SPNEGO/NTLM, level 6')


def sc_three_contexts(w, samr_port):
    with Capture('three_contexts') as cap:
        a1 = raw_exchange(135, three_context_bind(EPM_IF))
        a2 = raw_exchange(samr_port, three_context_bind(SAMR_IF))
    convs = cap.conversations()
    for c in convs:
        print_conv(c)
    c1 = [c for c in convs if c['server'][1] == 135][0]
    c2 = [c for c in convs if c['server'][1] == samr_port][0]
    assert conv_pdus(c1, 's2c', 12)[0] == a1 and conv_pdus(c2, 's2c', 12)[0] == a2
    w.save('bind_three_contexts.hex', conv_pdus(c1, 'c2s', 11)[0],
           'Windows-style bind crafted in Python, sent raw to %s:135: epm v3.0 x {ctx0 NDR32, ctx1 NDR64, ctx2 bind-time feature negotiation 6cb71c2c-9812-4540-0300-000000000000 v1.0}, max frag 5840, pfc 0x03' % SRV)
    w.save('bind_ack_three_contexts.hex', a1, 'Samba bind_ack to bind_three_contexts.hex: results accept(NDR32) / provider_rejection(NDR64) / negotiate_ack')
    w.save('bind_three_contexts_samr.hex', conv_pdus(c2, 'c2s', 11)[0],
           'same three-context bind for samr v1.0 sent raw to %s:%d' % (SRV, samr_port))
    w.save('bind_ack_three_contexts_samr.hex', a2, 'Samba bind_ack to bind_three_contexts_samr.hex')


def sc_alter_drsuapi(w, lsa_port):
    with Capture('alter_drsuapi') as cap:
        dce = dce_for(lsa_port)
        try:
            dce.bind(lsat.MSRPC_UUID_LSAT)
            dce.alter_ctx(drsuapi.MSRPC_UUID_DRSUAPI)
        finally:
            dce.disconnect()
    c = cap.conversations()[0]
    print_conv(c)
    w.save('alter_context_drsuapi.hex', conv_pdus(c, 'c2s', 14)[0],
           'impacket anonymous alter_context to drsuapi v4.0 (ctx 1) on an lsarpc connection (%s:%d), after bind to lsarpc v0.0 (ctx 0)' % (SRV, lsa_port))
    w.save('alter_context_resp_drsuapi.hex', conv_pdus(c, 's2c', 15)[0], 'Samba alter_context_resp accepting drsuapi on the lsarpc endpoint')


def sc_fault(w):
    with Capture('fault') as cap:
        dce = dce_for(135)
        try:
            dce.bind(epm.MSRPC_UUID_PORTMAP)
            dce.call(0, b'\x00' * 16)
            try:
                dce.recv()
            except DCERPCException as e:
                log('  opnum 0: %s' % e)
        finally:
            dce.disconnect()
    c = cap.conversations()[0]
    print_conv(c)
    w.save('fault_request_epm_opnum0.hex', conv_pdus(c, 'c2s', 0)[0], 'impacket raw request opnum 0 (ept_insert) with 16 zero stub bytes to the Samba endpoint mapper')
    w.save('fault_op_rng_error.hex', conv_pdus(c, 's2c', 3)[0], 'Samba fault 0x1c010002 nca_op_rng_error for EPM opnum 0')


def main():
    global TIMEOUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument('--out', default=os.path.join(here, '..', 'Tests', 'RPCWireTests', 'Fixtures'))
    ap.add_argument('--lookup-frag', type=int, default=None,
                    help='max_recv_frag for the multi-fragment ept_lookup (default: smallest size >= 2048 (Samba never sends smaller fragments) whose fragment boundaries split a TCP port field, else an IPv4 field, with >= 3 fragments)')
    ap.add_argument('--only', default=None, help='comma list of scenarios: map,lookup,ntlm,sealed,spnego,three,alter,fault')
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('capture-fixtures: must run as root (dumpcap on %s)' % IFACE)
    if subprocess.run(['ip', 'link', 'show', IFACE], capture_output=True).returncode:
        sys.exit('capture-fixtures: %s missing; run scripts/samba-dc.sh up first' % IFACE)
    try:
        samr_port = map_port(SAMR)
        lsa_port = map_port(('12345778-1234-abcd-ef00-0123456789ab', '0.0'))
    except Exception as e:
        sys.exit('capture-fixtures: Samba DC at %s:135 not answering (%s); run scripts/samba-dc.sh up' % (SRV, e))
    sv = subprocess.run(['samba', '-V'], capture_output=True, text=True).stdout.strip()
    date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
    meta = ('Captured %s by scripts/capture-fixtures.py (dumpcap on veth %s, TCP reassembled) from a Samba %s AD DC (EXAMPLE.TEST, %s) '
            'with Debian python3-impacket %s and rpcclient of the same Samba build' % (date, IFACE, sv.replace('Version ', ''), SRV, impacket_version.version))
    w = Writer(os.path.abspath(args.out), meta)
    only = set(args.only.split(',')) if args.only else None
    print('samr port %d, lsarpc port %d' % (samr_port, lsa_port))
    steps = [('map', lambda: sc_ept_map(w)), ('lookup', lambda: sc_ept_lookup(w, args.lookup_frag)),
             ('ntlm', lambda: sc_ntlm(w, samr_port)), ('sealed', lambda: sc_sealed(w, samr_port)),
             ('spnego', lambda: sc_spnego(w)), ('three', lambda: sc_three_contexts(w, samr_port)),
             ('alter', lambda: sc_alter_drsuapi(w, lsa_port)), ('fault', lambda: sc_fault(w))]
    for name, fn in steps:
        if only and name not in only:
            continue
        log('== %s' % name)
        fn()
    print('%d fixtures written to %s' % (len(w.written), os.path.abspath(args.out)))


if __name__ == '__main__':
    main()
