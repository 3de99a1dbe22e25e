"""A small fake DCE/RPC server (ncacn_ip_tcp) for tests that need control over the server:
an endpoint mapper and one data port, both on 127.0.0.1.

    srv = FakeRPCServer(slow_opnum=1, slow_s=3.0).start()
    srv.epm_port, srv.data_port
    ...
    srv.stop()

Endpoint mapper port: accepts any bind (NDR32), answers ept_map (opnum 3) with one
ncacn_ip_tcp tower for the interface asked about, pointing at 127.0.0.1:data_port; other
opnums get a fault (nca_s_op_rng_error).
Data port: accepts every presentation context that offers NDR32 (bind and alter_context);
answers every request with a response whose stub is b'FAKE' + opnum (u16) + call_id (u32),
after `slow_s` seconds for `slow_opnum`, at once otherwise.

Little-endian NDR only, no authentication. Every socket has a timeout, every loop checks the
stop flag, and stop() joins every thread with a bound: nothing outlives the test.
"""

import socket
import struct
import threading
import time
import uuid as _uuid

PTYPE_REQUEST = 0
PTYPE_RESPONSE = 2
PTYPE_FAULT = 3
PTYPE_BIND = 11
PTYPE_BIND_ACK = 12
PTYPE_ALTER_CONTEXT = 14
PTYPE_ALTER_CONTEXT_RESP = 15

NDR32 = _uuid.UUID('8a885d04-1ceb-11c9-9fe8-08002b104860').bytes_le + struct.pack('<HH', 2, 0)
NCA_S_OP_RNG_ERROR = 0x1C010002
EPT_MAP = 3


def _pdu(ptype, call_id, body, flags=0x03):
    return struct.pack('<BBBB4sHHI', 5, 0, ptype, flags, b'\x10\x00\x00\x00', 16 + len(body), 0, call_id) + body


def floor(lhs, rhs):
    return struct.pack('<H', len(lhs)) + lhs + struct.pack('<H', len(rhs)) + rhs


def tcp_tower(if_uuid_le, if_major, if_minor, port, ip='127.0.0.1'):
    """The 5-floor ncacn_ip_tcp tower (C706 appendix L): interface, NDR32, RPC CO, TCP port, IP."""
    floors = [
        floor(b'\x0d' + if_uuid_le + struct.pack('<H', if_major), struct.pack('<H', if_minor)),
        floor(b'\x0d' + NDR32[:16] + struct.pack('<H', 2), struct.pack('<H', 0)),
        floor(b'\x0b', struct.pack('<H', 0)),
        floor(b'\x07', struct.pack('>H', port)),
        floor(b'\x09', socket.inet_aton(ip)),
    ]
    return struct.pack('<H', len(floors)) + b''.join(floors)


def parse_ept_map_request(stub):
    """(if_uuid_le, major, minor, max_towers) from an NDR32 ept_map request stub."""
    off = 0
    obj_ref = struct.unpack_from('<I', stub, off)[0]
    off += 4
    if obj_ref:
        off += 16
    tower_ref = struct.unpack_from('<I', stub, off)[0]
    off += 4
    if not tower_ref:
        raise ValueError('ept_map without a tower')
    _conformance, length = struct.unpack_from('<II', stub, off)
    off += 8
    tower = stub[off:off + length]
    off += length
    off += (-off) % 4
    off += 20                                   # entry handle
    max_towers = struct.unpack_from('<I', stub, off)[0]
    # floor 1: lhs = 0x0d + uuid + major, rhs = minor
    lhs_len = struct.unpack_from('<H', tower, 2)[0]
    lhs = tower[4:4 + lhs_len]
    rhs_len = struct.unpack_from('<H', tower, 4 + lhs_len)[0]
    rhs = tower[6 + lhs_len:6 + lhs_len + rhs_len]
    if lhs[0] != 0x0d or len(lhs) != 19:
        raise ValueError('unexpected first floor %s' % lhs.hex())
    return lhs[1:17], struct.unpack('<H', lhs[17:19])[0], struct.unpack('<H', rhs[:2])[0], max_towers


def ept_map_response_stub(tower, max_towers):
    """NDR32 ept_map [out]: entry handle, num_towers 1, the conformant varying array of one
    tower pointer, the deferred twr_t, status 0."""
    stub = b'\x00' * 20 + struct.pack('<I', 1)
    stub += struct.pack('<III', max(1, max_towers), 0, 1) + struct.pack('<I', 0x00020000)
    stub += struct.pack('<II', len(tower), len(tower)) + tower
    stub += b'\x00' * ((-len(stub)) % 4)
    return stub + struct.pack('<I', 0)


class FakeRPCServer:
    def __init__(self, host='127.0.0.1', slow_opnum=1, slow_s=3.0, idle_timeout_s=60.0):
        self.host = host
        self.slow_opnum = slow_opnum
        self.slow_s = slow_s
        self.idle_timeout_s = idle_timeout_s
        self.epm_port = None
        self.data_port = None
        self._stop = threading.Event()
        self._listeners = []
        self._threads = []
        self._conns = set()
        self._lock = threading.Lock()
        # What the server saw: (listener, interface uuid string, major) per accepted context,
        # and (opnum, call_id) per request on the data port.
        self.binds = []
        self.requests = []

    # -------------------------------------------------------------- lifecycle

    def start(self):
        for kind in ('epm', 'data'):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, 0))
            s.listen(32)
            s.settimeout(0.2)
            self._listeners.append(s)
            if kind == 'epm':
                self.epm_port = s.getsockname()[1]
            else:
                self.data_port = s.getsockname()[1]
            t = threading.Thread(target=self._accept_loop, args=(s, kind), daemon=True, name='fakerpc-%s' % kind)
            t.start()
            self._threads.append(t)
        return self

    def stop_epm(self):
        """Close the endpoint-mapper listener only (readiness tests): new connections are refused."""
        s = self._listeners[0]
        try:
            s.close()
        except OSError:
            pass

    def stop(self, timeout=5.0):
        self._stop.set()
        for s in self._listeners:
            try:
                s.close()
            except OSError:
                pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        end = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, end - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -------------------------------------------------------------- connections

    def _accept_loop(self, listener, kind):
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return                      # listener closed
            conn.settimeout(0.5)
            with self._lock:
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn, kind), daemon=True, name='fakerpc-conn')
            t.start()
            self._threads.append(t)

    def _recv_exact(self, conn, n, deadline):
        buf = b''
        while len(buf) < n:
            if self._stop.is_set() or time.monotonic() > deadline:
                return None
            try:
                chunk = conn.recv(n - len(buf))
            except socket.timeout:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, conn, kind):
        try:
            while not self._stop.is_set():
                deadline = time.monotonic() + self.idle_timeout_s
                head = self._recv_exact(conn, 16, deadline)
                if head is None:
                    return
                frag_length = struct.unpack_from('<H', head, 8)[0]
                rest = self._recv_exact(conn, frag_length - 16, deadline) if frag_length > 16 else b''
                if rest is None:
                    return
                ptype = head[2]
                call_id = struct.unpack_from('<I', head, 12)[0]
                if ptype in (PTYPE_BIND, PTYPE_ALTER_CONTEXT):
                    conn.sendall(self._bind_ack(kind, ptype, call_id, rest))
                elif ptype == PTYPE_REQUEST:
                    reply = self._answer(kind, call_id, rest)
                    if reply is None:
                        return
                    conn.sendall(reply)
                # anything else (auth3, shutdown, ...) is ignored
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _bind_ack(self, kind, ptype, call_id, body):
        max_xmit, max_recv, assoc = struct.unpack_from('<HHI', body, 0)
        n = body[8]
        off = 12
        results = b''
        for _ in range(n):
            _ctx_id, n_ts = struct.unpack_from('<HB', body, off)
            abstract = body[off + 4:off + 24]
            transfers = [body[off + 24 + 20 * i:off + 44 + 20 * i] for i in range(n_ts)]
            off += 24 + 20 * n_ts
            if NDR32 in transfers:
                results += struct.pack('<HH', 0, 0) + NDR32
                self.binds.append((kind, str(_uuid.UUID(bytes_le=abstract[:16])), struct.unpack('<H', abstract[16:18])[0]))
            else:
                results += struct.pack('<HH', 2, 2) + b'\x00' * 20   # provider rejection: transfer syntaxes
        secondary = b'135\x00' if kind == 'epm' else ('%d\x00' % self.data_port).encode()
        if ptype == PTYPE_ALTER_CONTEXT:
            secondary = b''
        out = struct.pack('<HHI', max_xmit or 4280, max_recv or 4280, assoc or 0x1234)
        out += struct.pack('<H', len(secondary)) + secondary
        out += b'\x00' * ((-(16 + len(out))) % 4)
        out += struct.pack('<B3x', n) + results
        return _pdu(PTYPE_BIND_ACK if ptype == PTYPE_BIND else PTYPE_ALTER_CONTEXT_RESP, call_id, out)

    def _answer(self, kind, call_id, body):
        _alloc_hint, ctx_id, opnum = struct.unpack_from('<IHH', body, 0)
        stub = body[8:]
        if kind == 'epm':
            if opnum != EPT_MAP:
                return _pdu(PTYPE_FAULT, call_id, struct.pack('<IHBBI4x', 0, ctx_id, 0, 0, NCA_S_OP_RNG_ERROR))
            if_uuid, major, minor, max_towers = parse_ept_map_request(stub)
            out = ept_map_response_stub(tcp_tower(if_uuid, major, minor, self.data_port), max_towers)
        else:
            self.requests.append((opnum, call_id))
            if opnum == self.slow_opnum:
                end = time.monotonic() + self.slow_s
                while time.monotonic() < end:
                    if self._stop.is_set():
                        return None
                    time.sleep(0.05)
            out = b'FAKE' + struct.pack('<HI', opnum, call_id)
            out += b'\x00' * ((-len(out)) % 8)
        return _pdu(PTYPE_RESPONSE, call_id, struct.pack('<IHBB', len(out), ctx_id, 0, 0) + out)


def response_stub(pdu):
    """(opnum, call_id) a FakeRPCServer response carries, from a rawrpc.PDU."""
    stub = pdu.body[8:]
    if stub[:4] != b'FAKE':
        raise AssertionError('not a fake server response: %r' % pdu)
    return struct.unpack_from('<HI', stub, 4)


if __name__ == '__main__':  # manual use: python3 fakerpc.py, Ctrl-C to stop (bounded to 10 min)
    srv = FakeRPCServer().start()
    print('epm 127.0.0.1:%d data 127.0.0.1:%d' % (srv.epm_port, srv.data_port), flush=True)
    try:
        time.sleep(600)
    except KeyboardInterrupt:
        pass
    srv.stop()
