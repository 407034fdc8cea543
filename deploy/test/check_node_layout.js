#!/usr/bin/env node
// The node side of deploy/k8s, with the real binaries and no cluster: runs the agent
// DaemonSet's init script and agent command line, then the example workload's processes
// with its environment, users and read-only mounts, and expects the agent to build their
// spans. Container paths are mapped to a temporary directory; the read-only mount of the
// socket directory is a read-only bind mount in a private mount namespace. Needs root
// (setpriv, unshare, chown) and a build:
//
//   node check_node_layout.js BUILD_DIR       prints "N passed, N failed"
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, spawnSync } = require('child_process');
const YAML = require('yaml');
const { kustomize } = require('./check_deploy.js');

const deployDir = path.resolve(__dirname, '..');
const buildDir = process.argv[2];
let passed = 0;
let failed = 0;
function check(ok, what) {
  if (ok) passed++;
  else {
    failed++;
    console.log(`FAIL ${what}`);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function main() {
  if (process.getuid() !== 0) {
    console.log('check_node_layout: needs root (setpriv, unshare); skipped');
    console.log('0 passed, 0 failed');
    return;
  }
  for (const built of ['agent/reptrace-agent', 'hook/libreptrace.so']) {
    if (!buildDir || !fs.existsSync(path.join(buildDir, built))) {
      console.log(`FAIL ${built} is not built in '${buildDir || ''}'`);
      process.exitCode = 1;
      return;
    }
  }
  const base = kustomize(path.join(deployDir, 'k8s'));
  const example = kustomize(path.join(deployDir, 'k8s', 'example'));
  const agent = base.find((o) => o.kind === 'DaemonSet' && o.metadata.name === 'reptrace-agent');
  const config = base.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'reptrace-config');
  const podSpec = agent.spec.template.spec;
  const init = podSpec.initContainers.find((c) => c.name === 'install-hook');
  const agentContainer = podSpec.containers.find((c) => c.name === 'agent');

  // Node directories and the paths inside the containers, mapped under one temporary dir.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'reptrace-node-'));
  fs.chmodSync(root, 0o755);
  const hostPath = (p) => path.join(root, 'node', p);
  const image = path.join(root, 'agent-image');
  fs.mkdirSync(path.join(image, 'usr/lib/reptrace'), { recursive: true });
  fs.copyFileSync(path.join(buildDir, 'hook/libreptrace.so'),
    path.join(image, 'usr/lib/reptrace/libreptrace.so'));
  const hostPathOfVolume = (name) => podSpec.volumes.find((v) => v.name === name).hostPath.path;
  const mapIn = (container, mounts, text) => {
    let out = text.replace(/\/usr\/lib\/reptrace\//g, `${image}/usr/lib/reptrace/`);
    for (const m of mounts) {
      out = out.split(m.mountPath).join(hostPath(container(m.name)));
    }
    return out;
  };
  for (const v of podSpec.volumes) fs.mkdirSync(hostPath(v.hostPath.path), { recursive: true });

  let agentProcess;
  try {
    // 1. The init container: as root, its script, its mounts.
    const script = mapIn(hostPathOfVolume, init.volumeMounts, init.command[2]);
    const initRun = spawnSync(init.command[0], [init.command[1], script], { encoding: 'utf8' });
    check(initRun.status === 0, `init script failed: ${initRun.stderr}`);

    // 2. The agent: its uid, its arguments with $(VAR) from the ConfigMap and the downward API.
    const env = { NODE_NAME: 'node-a' };
    for (const e of agentContainer.env) {
      const ref = e.valueFrom && e.valueFrom.configMapKeyRef;
      if (ref) env[e.name] = config.data[ref.key];
    }
    env.CONTROLLER = '127.0.0.1:1';  // no controller: spans are built and held
    const args = agentContainer.args.map((a) => mapIn(hostPathOfVolume,
      agentContainer.volumeMounts, a.replace(/\$\((\w+)\)/g, (_, name) => env[name])));
    const user = String(agentContainer.securityContext.runAsUser);
    let log = '';
    agentProcess = spawn('setpriv', ['--reuid', user, '--regid', user, '--clear-groups',
      path.join(buildDir, 'agent/reptrace-agent'), ...args]);
    const agentExited = new Promise((resolve) => agentProcess.on('exit', resolve));
    agentProcess.stderr.on('data', (d) => { log += d; });
    agentProcess.stdout.on('data', (d) => { log += d; });
    const socket = args.find((a) => a.startsWith('--socket=')).slice('--socket='.length);
    for (let i = 0; i < 50 && !fs.existsSync(socket); i++) await sleep(100);
    // The agent's probes, as the agent's user.
    const probe = mapIn(hostPathOfVolume, agentContainer.volumeMounts,
      agentContainer.readinessProbe.exec.command.join(' '));
    check(spawnSync('setpriv', ['--reuid', user, '--regid', user, '--clear-groups',
      'sh', '-c', probe.replace(/^\/bin\/sh -c /, '')]).status === 0,
    `the agent's readiness probe fails: ${log}`);

    // 3. The example's web app and client: their env, uid and read-only mounts.
    const web = example.find((o) => o.kind === 'Deployment' && o.metadata.name === 'web');
    const webPod = web.spec.template.spec;
    const webContainer = webPod.containers[0];
    const workloadEnv = Object.fromEntries(webContainer.env.map((e) => [e.name, e.value]));
    const uid = String(webPod.securityContext.runAsUser);
    const binds = webContainer.volumeMounts.map((m) => {
      const source = hostPath(webPod.volumes.find((v) => v.name === m.name).hostPath.path);
      const target = path.join(root, 'pod', m.mountPath);
      fs.mkdirSync(target, { recursive: true });
      return `mount --bind ${source} ${target}` +
        (m.readOnly ? ` && mount -o remount,bind,ro ${target}` : '');
    });
    const inPod = (p) => path.join(root, 'pod', p);
    const podEnv = `LD_PRELOAD=${inPod(workloadEnv.LD_PRELOAD)} ` +
      `REPTRACE_SOCKET=${inPod(workloadEnv.REPTRACE_SOCKET)}`;
    const asUser = `setpriv --reuid ${uid} --regid ${uid} --clear-groups`;
    const python = '/usr/bin/python3';
    const workload = [
      ...binds,
      // The workload's user cannot write into the socket directory (nor remove the socket).
      `! ${asUser} touch ${inPod('/run/reptrace')}/x 2>/dev/null`,
      `env ${podEnv} REPTRACE_SERVICE=web PYTHONUNBUFFERED=1 ${asUser} ${python} -m http.server 0 --bind 127.0.0.1` +
        ` --directory /usr/share/doc > ${root}/web.out 2>&1 & web=$!`,
      `for i in $(seq 50); do grep -q 'Serving HTTP' ${root}/web.out && break; sleep 0.1; done`,
      `port=$(sed -n 's/.*port \\([0-9]*\\).*/\\1/p' ${root}/web.out | head -1)`,
      `env ${podEnv} REPTRACE_SERVICE=client ${asUser} ${python} -c "import urllib.request, time, sys; ` +
        `[urllib.request.urlopen('http://127.0.0.1:' + sys.argv[1] + '/').read() for _ in range(3)]; ` +
        'time.sleep(0.5)" $port; status=$?',
      'kill $web; wait $web || true; exit $status',
    ].join('\n');
    const run = spawnSync('unshare', ['-m', 'sh', '-ec', workload], { encoding: 'utf8' });
    check(run.status === 0, `the example's processes failed: ${run.stdout}${run.stderr}`);

    agentProcess.kill('SIGTERM');
    await agentExited;
    agentProcess = null;
    const built = log.match(/stopped: (\d+) events, (\d+) spans built/);
    check(built && Number(built[2]) >= 6,
      `the agent built ${built ? built[2] : 'no'} spans from the example's 3 requests (want 6): ${log}`);
  } finally {
    if (agentProcess) agentProcess.kill('SIGKILL');
    fs.rmSync(root, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.log(`FAIL ${e.stack}`);
  process.exitCode = 1;
});
