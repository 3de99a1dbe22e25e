"""pytest fixtures for RPCGate's interop suite: a real Samba AD DC (scripts/samba-dc.sh)
behind a real rpcgate, driven by impacket and rpcclient.

Session layout (see IntegrationTests/README.md):
  Samba DC        10.99.0.2 (netns rpcg-srv), brought up once with `scripts/samba-dc.sh up`
                  and taken down at the end if this session brought it up
  rpcgate         one process, config written to test-output/interop/gateway.yaml, two routes:
                  dc1        EPM 10.99.0.1:135,  ports 50000-50019, policy dc    (samr lsarpc netlogon dssetup drsuapi)
                  dc1-nodrs  EPM 10.99.0.1:1135, ports 50100-50119, policy nodrs (the same without drsuapi)
                  admin 127.0.0.1:19135
                  stdout+stderr -> test-output/interop/gateway.log (the part written during a
                  failed test is attached to that test's report)

Environment:
  RPCGATE_BINARY               rpcgate to run (default .build/debug/rpcgate)
  RPCGATE_INTEROP_OUT          output dir (default test-output/interop)
  RPCGATE_INTEROP_LOG_LEVEL    gateway --log-level (default debug; empty: do not pass it)
  RPCGATE_INTEROP_KEEP_SAMBA   1: leave the DC running at the end
  RPCGATE_INTEROP_SUMMARY_FILE write "passed failed" there instead of printing the summary line
"""

import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, 'lib'))

import rpcgate_interop as ri  # noqa: E402
from gateway import Gateway, GatewayError, Metrics, http_get  # noqa: E402

SAMBA_SCRIPT = os.path.join(REPO, 'scripts', 'samba-dc.sh')
OUT = os.environ.get('RPCGATE_INTEROP_OUT') or os.path.join(REPO, 'test-output', 'interop')
BINARY = os.environ.get('RPCGATE_BINARY') or os.path.join(REPO, '.build', 'debug', 'rpcgate')
LOG_LEVEL = os.environ.get('RPCGATE_INTEROP_LOG_LEVEL', 'debug')

DEFAULT_TEST_TIMEOUT = 60

from interop_env import (  # noqa: E402
    ADMIN, DC1, NODRS, SAMBA_HOST, gateway_config)


# ------------------------------------------------------------------ per-test timeout

def _sigterm(signum, frame):
    # SIGTERM (from scripts/interop-tests.sh or `timeout`) unwinds like Ctrl-C, so session
    # fixtures still stop rpcgate and the DC.
    raise KeyboardInterrupt('SIGTERM')


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _sigterm)
    config.addinivalue_line('markers', 'timeout_s(seconds): per-test time limit (SIGALRM), default %d' % DEFAULT_TEST_TIMEOUT)
    os.makedirs(OUT, exist_ok=True)
    os.environ.setdefault('RPCGATE_TEST_STATE', '/tmp/rpcgate-test')


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _time_limit(request):
    m = request.node.get_closest_marker('timeout_s')
    limit = int(m.args[0]) if m else DEFAULT_TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise TestTimeout('test exceeded its %d s time limit' % limit)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ Samba

def _note(text):
    """A line in test-output/interop/session.log (what the session did outside the tests)."""
    with open(os.path.join(OUT, 'session.log'), 'a') as f:
        f.write('%s %s\n' % (time.strftime('%H:%M:%S'), text.rstrip()))


def _samba(cmd, timeout):
    r = subprocess.run([SAMBA_SCRIPT, cmd], capture_output=True, text=True, timeout=timeout)
    _note('scripts/samba-dc.sh %s -> exit %d\n%s%s' % (cmd, r.returncode, r.stdout, r.stderr))
    return r


@pytest.fixture(scope='session')
def samba():
    """The Samba DC at 10.99.0.2, up for the whole session."""
    with open(os.path.join(OUT, 'session.log'), 'w'):
        pass
    if os.geteuid() != 0:
        pytest.exit('the interop suite must run as root (network namespace, port 135)', returncode=2)
    was_running = _samba('status', 60).returncode == 0
    r = _samba('up', 240)
    if r.returncode != 0:
        pytest.fail('scripts/samba-dc.sh up failed (exit %d):\n%s%s' % (r.returncode, r.stdout, r.stderr), pytrace=False)
    try:
        yield SAMBA_HOST
    finally:
        if was_running:
            _note('Samba DC was already running before the suite; left running')
        elif os.environ.get('RPCGATE_INTEROP_KEEP_SAMBA') == '1':
            _note('RPCGATE_INTEROP_KEEP_SAMBA=1: Samba DC left running')
        else:
            r = _samba('down', 120)
            if r.returncode != 0:
                sys.stderr.write('\ninterop: scripts/samba-dc.sh down failed: %s%s\n' % (r.stdout, r.stderr))


@pytest.fixture(scope='session')
def direct(samba):
    """What the DC answers when called directly (the reference for 'same through the gateway')."""
    ports = {name: ri.ept_map(SAMBA_HOST, 135, *ri.IFACES[name])[1]
             for name in ('samr', 'lsarpc', 'netlogon', 'drsuapi', 'dssetup', 'wkssvc')}
    return {
        'ports': ports,
        'samr_domains': ri.samr_enumerate_domains(SAMBA_HOST, ports['samr']),
        'dssetup': ri.dssetup_primary_domain(SAMBA_HOST, ports['lsarpc']),
    }


# ------------------------------------------------------------------ gateway

_GATEWAY = None


@pytest.fixture(scope='session')
def gateway(samba):
    """The rpcgate process (both routes), started once."""
    global _GATEWAY
    if not os.access(BINARY, os.X_OK):
        pytest.fail('rpcgate binary %s not found: run `swift build --product rpcgate`' % BINARY, pytrace=False)
    gw = Gateway(BINARY, gateway_config(), OUT, name='gateway', log_level=LOG_LEVEL)

    def ready():
        status, body = http_get('http://%s/healthz' % ADMIN, timeout=2)
        if status != 200:
            raise AssertionError('/healthz: HTTP %s %r' % (status, body))
        for r in (DC1, NODRS):
            ri.ept_map(r.host, r.epm_port, *ri.IFACES['samr'], timeout=3)
        return True

    _GATEWAY = gw
    error = None
    try:
        gw.start(ready, deadline_s=30)
    except GatewayError as e:
        error = str(e)
    if error:
        _note(error)
        pytest.fail(error, pytrace=False)
    _note('gateway started: pid %d, %s' % (gw.proc.pid, ' '.join(gw.argv)))
    try:
        yield gw
    finally:
        died = None if gw.alive() else gw.proc.returncode
        status = gw.stop()
        if died is not None:
            _note('the gateway had exited with status %s before the end of the session; log %s' % (died, gw.log_path))
        else:
            _note('gateway stopped: exit status %s after SIGTERM; log %s' % (status, gw.log_path))


@pytest.fixture
def dc1(gateway):
    return DC1


@pytest.fixture
def nodrs(gateway):
    return NODRS


@pytest.fixture
def metrics(gateway):
    """Callable: one scrape of the gateway's /metrics."""
    return lambda: Metrics.scrape(ADMIN)


@pytest.fixture(scope='session')
def outdir():
    return OUT


@pytest.fixture(scope='session')
def rpcgate_binary():
    """The rpcgate executable under test (for tests that start their own instance)."""
    if not os.access(BINARY, os.X_OK):
        pytest.fail('rpcgate binary %s not found: run `swift build --product rpcgate`' % BINARY, pytrace=False)
    return BINARY


@pytest.fixture(scope='session')
def interop_log_level():
    return LOG_LEVEL


@pytest.fixture(autouse=True)
def _gateway_watch(request):
    """Remember where the gateway log was when the test started; after the test, fail it if
    the gateway died during it."""
    gw = _GATEWAY
    request.node.stash[_LOG_OFFSET] = {g: g.log_size() for g in Gateway.running}
    yield
    gw = _GATEWAY
    if gw is not None and gw.proc is not None and not gw.alive():
        pytest.fail('the gateway exited (status %s) during this test; log tail:\n%s' % (gw.proc.returncode, gw.log_tail()),
                    pytrace=False)


_LOG_OFFSET = pytest.StashKey()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        offsets = item.stash.get(_LOG_OFFSET, {})
        for gw in list(Gateway.running):
            rep.sections.append(('%s log during %s (%s)' % (gw.name, rep.when, gw.log_path),
                                 gw.log_since(offsets.get(gw, 0), limit=20000)))


# ------------------------------------------------------------------ summary

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    stats = terminalreporter.stats
    passed = len([r for r in stats.get('passed', []) if getattr(r, 'when', 'call') == 'call'])
    failed = len({r.nodeid for key in ('failed', 'error') for r in stats.get(key, [])})
    if exitstatus not in (0, 1) and failed == 0:
        failed = 1  # interrupted, usage or internal error: never report success
    path = os.environ.get('RPCGATE_INTEROP_SUMMARY_FILE')
    if path:
        with open(path, 'w') as f:
            f.write('%d %d\n' % (passed, failed))
    else:
        terminalreporter.write_line('interop: %d passed, %d failed' % (passed, failed))
