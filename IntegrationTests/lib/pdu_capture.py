"""DCE/RPC PDUs in captured TCP flows (see capture.py): which interfaces a connection bound and
which operation numbers its requests carried.

Sealed (PKT_PRIVACY) PDUs encrypt only the stub: the common header and the request header
(alloc_hint, p_cont_id, opnum at offset 22) are in the clear, so opnums can be read from a
capture of a sealed connection.

    flows = rpc_flows(cap.segments())                  # {(src, sport, dst, dport): [Pdu, ...]}
    drs = flows_offering(flows, DRSUAPI_UUID, dst='10.99.0.2')
    opnums = [p.opnum for p in drs[key] if p.ptype == PTYPE_REQUEST]
"""

import struct
import uuid as _uuid

from capture import streams

PTYPE_REQUEST = 0
PTYPE_RESPONSE = 2
PTYPE_FAULT = 3
PTYPE_BIND = 11
PTYPE_BIND_ACK = 12
PTYPE_ALTER_CONTEXT = 14
PTYPE_ALTER_CONTEXT_RESP = 15

PFC_FIRST_FRAG = 0x01
PFC_LAST_FRAG = 0x02
PFC_DID_NOT_EXECUTE = 0x20
PFC_OBJECT_UUID = 0x80


class Pdu:
    __slots__ = ('ptype', 'flags', 'little_endian', 'frag_length', 'auth_length', 'call_id', 'opnum',
                 'context_id', 'status', 'raw')

    def __init__(self, raw):
        self.raw = raw
        self.ptype, self.flags = raw[2], raw[3]
        self.little_endian = bool(raw[4] & 0x10)
        e = '<' if self.little_endian else '>'
        self.frag_length, self.auth_length, self.call_id = struct.unpack(e + 'HHI', raw[8:16])
        self.opnum = self.context_id = self.status = None
        if self.ptype == PTYPE_REQUEST and len(raw) >= 24:
            # alloc_hint u32 @16, p_cont_id u16 @20, opnum u16 @22 (the object uuid, if any, follows)
            self.context_id, self.opnum = struct.unpack(e + 'HH', raw[20:24])
        elif self.ptype == PTYPE_FAULT and len(raw) >= 28:
            # alloc_hint u32 @16, p_cont_id u16 @20, cancel_count u8 @22, reserved @23, status u32 @24
            self.context_id = struct.unpack(e + 'H', raw[20:22])[0]
            self.status = struct.unpack(e + 'I', raw[24:28])[0]

    def offers(self, uuid):
        """For a bind / alter_context: whether one of its abstract syntaxes is `uuid`."""
        return self.ptype in (PTYPE_BIND, PTYPE_ALTER_CONTEXT) and _uuid.UUID(uuid).bytes_le in self.raw

    def __repr__(self):
        extra = ''
        if self.opnum is not None:
            extra = ' opnum=%d' % self.opnum
        if self.status is not None:
            extra = ' status=0x%08x' % self.status
        return 'Pdu(ptype=%d flags=0x%02x call_id=%d len=%d%s)' % (
            self.ptype, self.flags, self.call_id, self.frag_length, extra)


def frame_pdus(data):
    """Split a TCP byte stream into PDUs. Stops at a truncated tail or at bytes that are not a
    version-5 connection-oriented header (the rest of such a stream is not framed)."""
    out = []
    off = 0
    while off + 16 <= len(data):
        if data[off] != 5 or data[off + 1] != 0:
            break
        frag_length = struct.unpack('<H' if data[off + 4] & 0x10 else '>H', data[off + 8:off + 10])[0]
        if frag_length < 16 or off + frag_length > len(data):
            break
        out.append(Pdu(bytes(data[off:off + frag_length])))
        off += frag_length
    return out


def rpc_flows(segments):
    """{(src, sport, dst, dport): [Pdu]} for every flow with a payload, in capture order."""
    return {k: frame_pdus(v) for k, v in streams(segments).items()}


def flows_offering(flows, uuid, dst=None, dport=None):
    """The flows (keyed as in rpc_flows) that offered `uuid` in a bind or alter_context,
    optionally only those towards dst / dport."""
    return {k: pdus for k, pdus in flows.items()
            if (dst is None or k[2] == dst) and (dport is None or k[3] == dport)
            and any(p.offers(uuid) for p in pdus)}


def reverse(key):
    src, sport, dst, dport = key
    return (dst, dport, src, sport)


def request_opnums(pdus):
    """Opnums of the first fragments of the requests in a PDU list, in order."""
    return [p.opnum for p in pdus if p.ptype == PTYPE_REQUEST and p.flags & PFC_FIRST_FRAG]


def describe(flows):
    """A short text of flows and their PDUs, for assertion messages."""
    lines = []
    for k, pdus in flows.items():
        lines.append('%s:%d > %s:%d: %s' % (k + (', '.join(repr(p) for p in pdus[:40]),)))
    return '\n'.join(lines) or '(no flows)'
