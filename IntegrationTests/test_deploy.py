"""deploy/ and config/: the files operators copy must be valid.

  systemd   `systemd-analyze verify` accepts deploy/systemd/rpcgate.service (run against a scratch
            root holding the unit, the rpcgate binary at /usr/local/bin and /bin/kill, since
            verify checks that every Exec path is executable); no warnings; the hardening the
            unit promises is there; `systemd-analyze security --offline` rates it OK
  kubernetes every manifest is valid YAML with the expected objects; the ConfigMap's
            rpcgate.yaml passes `rpcgate check-config`; probes, replicas, security context,
            Prometheus annotations, NetworkPolicy ports agree with that configuration
  grafana   the dashboard is valid JSON, and every metric it queries is one rpcgate exports
  nftables  `nft -c` accepts every deploy/nftables/*.nft (check only, nothing is loaded)
  docker    the Dockerfile's build commands are exactly the README's "Deploy" build commands
            (there is no Docker engine here to build the image)
  config    config/*.yaml pass `rpcgate check-config`

None of these needs the Samba DC or the session gateway.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEPLOY = os.path.join(REPO, 'deploy')
BINARY = os.environ.get('RPCGATE_BINARY') or os.path.join(REPO, '.build', 'debug', 'rpcgate')
UNIT = os.path.join(DEPLOY, 'systemd', 'rpcgate.service')


def check_config(path):
    return subprocess.run([BINARY, 'check-config', path], capture_output=True, text=True, timeout=30)


def exported_metric_names():
    """Metric names rpcgate exports: every `rpcgate_...` string literal in the sources
    (GatewayMetrics.Name, TLSMetrics, the CLI's reload counter)."""
    names = set()
    for directory, _, files in os.walk(os.path.join(REPO, 'Sources')):
        for name in files:
            if name.endswith('.swift'):
                with open(os.path.join(directory, name)) as f:
                    names.update(re.findall(r'"(rpcgate_[a-z_]+)"', f.read()))
    return names


# ------------------------------------------------------------------ systemd

def _unit_settings():
    settings = {}
    with open(UNIT) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(('#', '[')):
                continue
            key, _, value = line.partition('=')
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_has_the_promised_hardening():
    s = _unit_settings()
    expected = {
        'User': 'rpcgate', 'Group': 'rpcgate',
        'AmbientCapabilities': 'CAP_NET_BIND_SERVICE', 'CapabilityBoundingSet': 'CAP_NET_BIND_SERVICE',
        'NoNewPrivileges': 'yes', 'ProtectSystem': 'strict', 'ProtectHome': 'yes', 'PrivateTmp': 'yes',
        'ReadWritePaths': '/var/log/rpcgate', 'ExecReload': '/bin/kill -HUP $MAINPID', 'Restart': 'on-failure',
        'ExecStartPre': '/usr/local/bin/rpcgate check-config /etc/rpcgate/rpcgate.yaml',
        'ExecStart': '/usr/local/bin/rpcgate run --config /etc/rpcgate/rpcgate.yaml',
    }
    for key, value in expected.items():
        assert s.get(key) == [value], '%s=%r, expected %r' % (key, s.get(key), value)
    # SIGTERM drains for timeouts.drain (30 s by default): systemd must wait longer.
    assert int(s['TimeoutStopSec'][0].rstrip('s')) > 30


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = shutil.which('systemd-analyze')
    assert analyze, 'systemd-analyze not found (Debian package systemd)'
    assert os.access(BINARY, os.X_OK), 'rpcgate binary %s not built' % BINARY
    # A scratch root: systemd-analyze verify --root resolves units and Exec paths inside it,
    # so nothing is installed on this machine. It needs the distribution's units (targets).
    root = tmp_path / 'root'
    (root / 'etc' / 'systemd' / 'system').mkdir(parents=True)
    (root / 'usr' / 'local' / 'bin').mkdir(parents=True)
    (root / 'usr' / 'bin').mkdir(parents=True)
    (root / 'usr' / 'lib' / 'systemd').mkdir(parents=True)
    os.symlink('usr/bin', root / 'bin')
    shutil.copytree('/usr/lib/systemd/system', root / 'usr' / 'lib' / 'systemd' / 'system', symlinks=True)
    shutil.copy2(BINARY, root / 'usr' / 'local' / 'bin' / 'rpcgate')
    shutil.copy2(shutil.which('kill') or '/bin/kill', root / 'usr' / 'bin' / 'kill')
    shutil.copy2(UNIT, root / 'etc' / 'systemd' / 'system' / 'rpcgate.service')

    r = subprocess.run([analyze, 'verify', '--root=%s' % root, 'rpcgate.service'],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    output = (r.stdout + r.stderr).strip()
    assert r.returncode == 0, 'systemd-analyze verify failed (%d):\n%s' % (r.returncode, output)
    # Unknown keys and bad values are only warnings (exit 0): there must be none.
    assert output == '', 'systemd-analyze verify warned:\n%s' % output

    # The same check fails when an Exec path is missing: the verification is real.
    os.unlink(root / 'usr' / 'bin' / 'kill')
    r = subprocess.run([analyze, 'verify', '--root=%s' % root, 'rpcgate.service'],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0 and '/bin/kill' in r.stdout + r.stderr, r

    r = subprocess.run([analyze, 'security', '--offline=yes', '--root=%s' % root, 'rpcgate.service'],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    m = re.search(r'Overall exposure level for rpcgate\.service: ([0-9.]+)', r.stdout + r.stderr)
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    assert float(m.group(1)) <= 2.5, 'exposure %s:\n%s' % (m.group(1), r.stdout[-3000:])


# ------------------------------------------------------------------ kubernetes

def _manifests():
    docs = {}
    directory = os.path.join(DEPLOY, 'kubernetes')
    for name in sorted(os.listdir(directory)):
        if name.endswith('.yaml'):
            with open(os.path.join(directory, name)) as f:
                docs[name] = [d for d in yaml.safe_load_all(f) if d is not None]
    return docs


def _objects(kind):
    return [d for docs in _manifests().values() for d in docs if d.get('kind') == kind]


def test_kubernetes_manifests_are_valid_yaml_with_the_expected_objects():
    docs = _manifests()
    kinds = sorted(d['kind'] for ds in docs.values() for d in ds)
    assert kinds == ['ConfigMap', 'Deployment', 'Kustomization', 'Namespace', 'NetworkPolicy', 'Service', 'Service'], kinds
    for ds in docs.values():
        for d in ds:
            assert d.get('apiVersion') and d.get('kind'), d
            if d['kind'] not in ('Kustomization', 'Namespace'):
                assert d['metadata']['namespace'] == 'rpcgate', d['metadata']
    kustomization = _objects('Kustomization')[0]
    assert sorted(kustomization['resources']) == sorted(n for n in docs if n != 'kustomization.yaml')


def test_kubernetes_configmap_passes_check_config(tmp_path):
    config = _objects('ConfigMap')[0]['data']['rpcgate.yaml']
    path = tmp_path / 'rpcgate.yaml'
    path.write_text(config)
    r = check_config(str(path))
    assert r.returncode == 0, r.stderr


def test_kubernetes_deployment_probes_security_and_ports_match_the_config():
    config = yaml.safe_load(_objects('ConfigMap')[0]['data']['rpcgate.yaml'])
    route = config['routes'][0]
    if route.get('mode') == 'single-port':
        data_ports = [int(route['port'])]
    else:
        first, last = (int(x) for x in route['ports'].split('-'))
        data_ports = list(range(first, last + 1))
    admin_port = int(config['admin']['listen'].rsplit(':', 1)[1])

    deployment = _objects('Deployment')[0]
    spec = deployment['spec']
    assert spec['replicas'] == 2
    pod = spec['template']
    annotations = pod['metadata']['annotations']
    assert annotations['prometheus.io/scrape'] == 'true'
    assert annotations['prometheus.io/port'] == str(admin_port) and annotations['prometheus.io/path'] == '/metrics'
    assert pod['spec']['securityContext']['runAsNonRoot'] is True
    container = [c for c in pod['spec']['containers'] if c['name'] == 'rpcgate'][0]
    security = container['securityContext']
    assert security['runAsNonRoot'] is True
    assert security['capabilities']['add'] == ['NET_BIND_SERVICE'] and security['capabilities']['drop'] == ['ALL']
    ports = {p['name']: p['containerPort'] for p in container['ports']}
    assert ports['epm'] == route.get('epm_port', 135) and ports['admin'] == admin_port
    assert container['livenessProbe']['httpGet'] == {'path': '/healthz', 'port': 'admin'}
    assert container['readinessProbe']['httpGet'] == {'path': '/readyz', 'port': 'admin'}
    # SIGTERM drains for timeouts.drain: the grace period must be longer.
    drain = int(str(config['timeouts']['drain']).rstrip('s'))
    assert pod['spec']['terminationGracePeriodSeconds'] > drain
    assert pod['spec']['volumes'][0]['configMap']['name'] == _objects('ConfigMap')[0]['metadata']['name']

    services = {s['metadata']['name']: s for s in _objects('Service')}
    client = services['rpcgate']['spec']
    assert client['externalTrafficPolicy'] == 'Local', 'the policy needs the client addresses'
    assert client['loadBalancerIP'] == route['advertise']
    assert sorted(p['port'] for p in client['ports']) == [135] + data_ports
    assert all(p['port'] == p['targetPort'] for p in client['ports'])

    policy = _objects('NetworkPolicy')[0]['spec']
    allowed = set()
    for rule in policy['ingress']:
        for p in rule['ports']:
            allowed.update(range(p['port'], p.get('endPort', p['port']) + 1))
    assert {135, admin_port, *data_ports} <= allowed, allowed
    egress = [rule for rule in policy['egress'] if any('ipBlock' in t for t in rule['to'])][0]
    assert egress['to'][0]['ipBlock']['cidr'] == route['upstream'] + '/32'


# ------------------------------------------------------------------ grafana

def test_grafana_dashboard_is_valid_and_queries_only_exported_metrics():
    with open(os.path.join(DEPLOY, 'grafana', 'rpcgate-dashboard.json')) as f:
        dashboard = json.load(f)
    assert dashboard['title'] and dashboard['uid'] and isinstance(dashboard['schemaVersion'], int)
    panels = dashboard['panels']
    ids = [p['id'] for p in panels]
    assert len(ids) == len(set(ids)), 'duplicate panel ids'
    exported = exported_metric_names()
    assert {'rpcgate_binds_total', 'rpcgate_upstream_up', 'rpcgate_config_reloads_total'} <= exported, exported
    used = set()
    for panel in panels:
        grid = panel['gridPos']
        assert 0 <= grid['x'] and grid['x'] + grid['w'] <= 24 and grid['h'] > 0, panel['title']
        if panel['type'] == 'row':
            continue
        assert panel['targets'], panel['title']
        for target in panel['targets']:
            names = set(re.findall(r'\brpcgate_[a-z_]+', target['expr']))
            assert names, target['expr']
            unknown = names - exported
            assert not unknown, '%s queries %s, which rpcgate does not export' % (panel['title'], unknown)
            used |= names
    assert used == exported, 'metrics without a panel: %s' % (exported - used)
    variables = {v['name'] for v in dashboard['templating']['list']}
    assert {'datasource', 'route'} <= variables


# ------------------------------------------------------------------ nftables

@pytest.mark.parametrize('name', sorted(n for n in os.listdir(os.path.join(DEPLOY, 'nftables')) if n.endswith('.nft')))
def test_nftables_ruleset_passes_nft_check(name):
    nft = shutil.which('nft')
    assert nft, 'nft not found (Debian package nftables)'
    r = subprocess.run([nft, '-c', '-f', os.path.join(DEPLOY, 'nftables', name)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------ Dockerfile == README

def _readme_build_commands():
    with open(os.path.join(REPO, 'README.md')) as f:
        text = f.read()
    section = text.split('\n## Deploy\n', 1)[1].split('\n## ', 1)[0]
    block = re.search(r'<!-- build-steps -->\n```sh\n(.*?)```', section, re.S)
    assert block, 'README "Deploy" has no build-steps block'
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith('#')]


def test_dockerfile_build_steps_are_the_readme_build_steps():
    with open(os.path.join(DEPLOY, 'Dockerfile')) as f:
        dockerfile = f.read()
    build_stage = dockerfile.split('\nFROM ', 2)[1]        # the first stage, up to the runtime FROM
    run_lines = [line[len('RUN '):].strip() for line in build_stage.splitlines() if line.startswith('RUN ')]
    assert run_lines == _readme_build_commands()
    # The shipped build's flags (docs/PERFORMANCE.md: exclusivity checks off in every module).
    assert 'swift build -c release -Xswiftc -enforce-exclusivity=unchecked --static-swift-stdlib --product rpcgate' in run_lines
    runtime = dockerfile.split('\nFROM ', 2)[2]
    assert re.search(r'^USER (?!root)\w+', runtime, re.M), 'the runtime image must not run as root'
    assert re.search(r'^EXPOSE 135\b', runtime, re.M)
    assert re.search(r'^HEALTHCHECK .*\n?.*?/healthz', runtime, re.M)


# ------------------------------------------------------------------ config/

@pytest.mark.parametrize('name', ['rpcgate.example.yaml', 'rpcgate.dc-hardened.yaml', 'rpcgate.transparent.yaml'])
def test_shipped_configurations_pass_check_config(name):
    r = check_config(os.path.join(REPO, 'config', name))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(os.path.join(REPO, 'config', name) + ': OK'), r.stdout


def test_hardened_configuration_uses_the_three_profiles():
    with open(os.path.join(REPO, 'config', 'rpcgate.dc-hardened.yaml')) as f:
        config = yaml.safe_load(f)
    rules = config['policies']['dc-hardened']['rules']
    profiles = [r['profile'] for r in rules if 'profile' in r]
    assert profiles[:3] == ['block-dcsync', 'block-coercion', 'block-remote-exec'], profiles
    assert rules[0]['except_sources'], 'block-dcsync must except the other domain controllers'
    assert config['policies']['dc-hardened']['default'] == 'deny'
