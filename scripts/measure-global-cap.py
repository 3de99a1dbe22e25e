"""What a well-behaved client sees when the gateway's global cap is full (docs/SECURITY.md, "Fair
admission"): refused at once (what rpcgate does) or left in the kernel's accept backlog (what a
paused accept loop, as HAProxy does at maxconn, would do; emulated with a socket that listens and
never accepts). Needs no DC: the gateway's upstream is a local listener that accepts and holds.

    python3 scripts/measure-global-cap.py [--binary .build/debug/rpcgate]

Everything on 127.0.0.0/8; every socket has a timeout; the gateway is stopped at the end.
"""

import argparse
import os
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'IntegrationTests', 'lib'))

import rawrpc  # noqa: E402
from gateway import Gateway, Metrics, http_get  # noqa: E402

CAP = 20
ADMIN = '127.0.0.1:19145'
LISTEN, EPM = '127.0.0.1', 6135
UPSTREAM = ('127.0.0.7', 13136)
PAUSED = ('127.0.0.1', 6136)
CLIENT_TIMEOUT = 5.0


def holder(stop):
    """The upstream: accepts and holds every connection until stopped."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(UPSTREAM)
    srv.listen(512)
    srv.settimeout(0.2)
    held = []
    while not stop.is_set():
        try:
            held.append(srv.accept()[0])
        except socket.timeout:
            pass
    for s in held:
        s.close()
    srv.close()


def good_client(addr):
    """Connect from 127.0.0.1, send an EPM bind, wait for an answer: (outcome, seconds)."""
    t0 = time.monotonic()
    try:
        c = rawrpc.Conn(addr[0], addr[1], timeout=CLIENT_TIMEOUT)
    except OSError as e:
        return 'connect failed (%s)' % e.__class__.__name__, time.monotonic() - t0
    try:
        c.send(rawrpc.bind_pdu(1, [(0,) + rawrpc.EPM_UUID]))
        pdu = c.recv_pdu(timeout=CLIENT_TIMEOUT)
        outcome = 'answered' if pdu is not None else 'closed by the gateway'
    except socket.timeout:
        outcome = 'no answer within %.0f s' % CLIENT_TIMEOUT
    except (OSError, ConnectionError) as e:
        outcome = 'closed by the gateway (%s)' % e.__class__.__name__
    finally:
        c.close()
    return outcome, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--binary', default=os.path.join(REPO, '.build', 'debug', 'rpcgate'))
    ap.add_argument('--rounds', type=int, default=10)
    a = ap.parse_args()
    stop = threading.Event()
    t = threading.Thread(target=holder, args=(stop,), daemon=True)
    t.start()
    out = os.path.join(REPO, 'test-output', 'global-cap')
    config = ('routes:\n  - name: cap\n    listen: %s\n    epm_port: %d\n    upstream: %s\n    upstream_epm_port: %d\n'
              '    ports: 50590-50591\n    policy: p\npolicies:\n  p:\n    default: deny\n'
              'limits:\n  max_connections: %d\n  max_connections_per_source: 1000\n'
              '  new_connections_per_second_per_source: 1000\nadmin:\n  listen: %s\n') % (
                  LISTEN, EPM, UPSTREAM[0], UPSTREAM[1], CAP, ADMIN)
    gw = Gateway(a.binary, config, out, name='global-cap', log_level='notice')
    flood = []
    paused = None
    try:
        gw.start(lambda: http_get('http://%s/healthz' % ADMIN, timeout=2)[0] == 200, deadline_s=30)
        for _ in range(CAP):  # many sources together fill the global cap (here: one, limits raised)
            s = socket.socket()
            s.settimeout(3)
            s.bind(('127.0.0.66', 0))
            s.connect((LISTEN, EPM))
            flood.append(s)
        time.sleep(0.5)
        refused = [good_client((LISTEN, EPM)) for _ in range(a.rounds)]
        paused = socket.socket()
        paused.bind(PAUSED)
        paused.listen(256)  # never accepted: the kernel completes the handshake and queues it
        waited = [good_client(PAUSED) for _ in range(min(a.rounds, 3))]
        m = Metrics.scrape(ADMIN)
        for name, results in (('refused at the cap (rpcgate)', refused), ('paused accept (backlog)', waited)):
            outcomes = sorted({o for o, _ in results})
            times = [s for _, s in results]
            print('%-30s %s; median %.1f ms, max %.1f ms over %d tries' % (
                name, ', '.join(outcomes), statistics.median(times) * 1000, max(times) * 1000, len(times)))
        print('rpcgate_connections_refused_total{reason="cap"} = %d' % m.value(
            'rpcgate_connections_refused_total', route='cap', reason='cap'))
    finally:
        for s in flood:
            s.close()
        if paused is not None:
            paused.close()
        gw.stop()
        stop.set()
        t.join(5)


if __name__ == '__main__':
    main()
