"""Replays of recorded Windows MS-RPC conversations (../shared/captures, see its INDEX.md)
through a real rpcgate: a fake server answers with the recorded server PDUs, a client sends
the recorded client PDUs and collects what comes back.

The capture bytes are read at run time with tshark and never written into the project.

    convo = extract(CAPTURE_DIR + '/x.pcapng', [1, 2, 3, 4, 5])   # [(frame, from_client, bytes)]
    server = ScriptedServer('127.0.0.1', 0, convo).start()
    got = run_client('127.0.0.1', gateway_port, convo)             # [bytes] per server frame, or an error
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CAPTURE_DIR = os.environ.get('RPCGATE_CAPTURES') or os.path.join(os.path.dirname(REPO), 'shared', 'captures')
TSHARK = '/usr/bin/tshark'

IP_FLOOR = b'\x01\x00\x09\x04\x00'    # lhs length 1, protocol 0x09 (IP), rhs length 4
TCP_FLOOR = b'\x01\x00\x07\x02\x00'   # lhs length 1, protocol 0x07 (TCP), rhs length 2


def capture_path(name):
    return os.path.join(CAPTURE_DIR, name)


def available(name):
    """None when the capture and tshark are there, else why not (for pytest.skip)."""
    if not os.path.exists(capture_path(name)):
        return 'capture %s not found under %s (the Windows captures sit beside the clone in ../shared/captures)' % (
            name, CAPTURE_DIR)
    if not os.access(TSHARK, os.X_OK):
        return 'tshark not installed (%s)' % TSHARK
    return None


def extract(name, frames):
    """The TCP payloads of `frames` (1-based frame numbers) in order, as (frame, from_client, bytes);
    the client is the side that sent the first listed frame."""
    # `frame.number == a || frame.number == b`: set syntax differs between tshark versions.
    wanted = ' || '.join('frame.number == %d' % f for f in frames)
    out = subprocess.run([TSHARK, '-r', capture_path(name), '-Y', wanted,
                          '-T', 'fields', '-e', 'frame.number', '-e', 'ip.src', '-e', 'tcp.srcport',
                          '-e', 'tcp.payload'],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split('\t')
        if len(parts) == 4 and parts[0].isdigit():
            rows[int(parts[0])] = ((parts[1], parts[2]), bytes.fromhex(parts[3].replace(':', '')))
    missing = [f for f in frames if f not in rows]
    if missing:
        raise ValueError('%s: frames %s not found' % (name, missing))
    client = rows[frames[0]][0]
    return [(f, rows[f][0] == client, rows[f][1]) for f in frames]


def patch_tower_addresses(data, address):
    """Every IPv4 floor of every tower in `data` names `address` (the fake server's), as the
    server in front of the gateway would; nothing else changes (lengths stay)."""
    packed = socket.inet_aton(address)
    out = bytearray(data)
    start = 0
    while True:
        at = out.find(IP_FLOOR, start)
        if at < 0:
            return bytes(out)
        out[at + len(IP_FLOOR):at + len(IP_FLOOR) + 4] = packed
        start = at + len(IP_FLOOR) + 4


def tower_endpoints(data):
    """(port, address) of every ncacn_ip_tcp tower floor pair in a PDU's bytes."""
    found = []
    start = 0
    while True:
        at = data.find(TCP_FLOOR, start)
        if at < 0:
            return found
        port = struct.unpack('>H', data[at + 5:at + 7])[0]
        ip_at = data.find(IP_FLOOR, at + 7, at + 7 + 16)
        address = socket.inet_ntoa(data[ip_at + 5:ip_at + 9]) if ip_at >= 0 else None
        found.append((port, address))
        start = at + 7


def read_pdu(sock):
    """One whole PDU (by frag_length), or b'' at EOF before any byte."""
    head = _read_exact(sock, 16)
    if not head:
        return b''
    if len(head) < 16:
        raise EOFError('connection closed inside a PDU header')
    length = struct.unpack('<H' if head[4] & 0x10 else '>H', head[8:10])[0]
    body = _read_exact(sock, length - 16)
    if len(body) < length - 16:
        raise EOFError('connection closed inside a PDU')
    return head + body


def _read_exact(sock, n):
    data = b''
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class ScriptedServer:
    """Accepts connections; on each, plays the server side of `convo`: reads one PDU for each
    client frame, sends each server frame. Records what it read (per connection)."""

    def __init__(self, host, port, convo, patch_address=None, timeout=10.0):
        self.convo = convo
        self.patch_address = patch_address
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.address = self.sock.getsockname()
        self.received = []       # one list of PDUs per connection
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def server_frame(self, data):
        return patch_tower_addresses(data, self.patch_address) if self.patch_address else data

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        got = []
        self.received.append(got)
        conn.settimeout(self.timeout)
        try:
            for _, from_client, data in self.convo:
                if from_client:
                    pdu = read_pdu(conn)
                    if not pdu:
                        return
                    got.append(pdu)
                else:
                    conn.sendall(self.server_frame(data))
            # Script done: keep the connection until the peer closes it or the test ends, so a
            # close the client sees is the gateway's.
            conn.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    if not conn.recv(4096):
                        return
                except socket.timeout:
                    continue
        except Exception as e:  # recorded for the test's message
            self.errors.append(repr(e))
        finally:
            try:
                conn.close()
            except OSError:
                pass


CLIENT = r'''
import json, socket, sys
sys.path.insert(0, %r)
import replay
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path) as f:
    convo = [(n, c, bytes.fromhex(h)) for n, c, h in json.load(f)]
print(json.dumps(replay.play_client(host, port, convo)))
''' % HERE


def play_client(host, port, convo, timeout=5.0):
    """Plays the client side: sends each client frame, reads one PDU for each server frame.
    Returns {'received': [hex per server frame read], 'closed': bool (EOF where a PDU was
    expected), 'error': text or None}."""
    received = []
    result = {'received': received, 'closed': False, 'error': None}
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        result['error'] = 'connect: %r' % e
        return result
    sock.settimeout(timeout)
    try:
        for _, from_client, data in convo:
            if from_client:
                sock.sendall(data)
            else:
                pdu = read_pdu(sock)
                if not pdu:
                    result['closed'] = True
                    break
                received.append(pdu.hex())
        else:
            # Nothing more is expected: a closed connection shows as EOF right away.
            sock.settimeout(0.3)
            try:
                result['closed'] = sock.recv(1) == b''
            except socket.timeout:
                pass
    except (OSError, EOFError) as e:
        result['error'] = repr(e)
        if isinstance(e, (ConnectionResetError, BrokenPipeError, EOFError)):
            result['closed'] = True
    finally:
        sock.close()
    return result


def run_client(host, port, convo, outdir, netns=None, timeout=30):
    """play_client in a subprocess (inside `netns` when given), so a client namespace works."""
    path = os.path.join(outdir, 'replay-convo.json')
    with open(path, 'w') as f:
        json.dump([(n, c, d.hex()) for n, c, d in convo], f)
    argv = ([] if netns is None else ['ip', 'netns', 'exec', netns]) + [
        '/usr/bin/python3', '-c', CLIENT, host, str(port), path]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    os.unlink(path)
    if r.returncode != 0:
        raise RuntimeError('replay client failed:\n%s\n%s' % (r.stdout, r.stderr))
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out['received'] = [bytes.fromhex(h) for h in out['received']]
    return out
