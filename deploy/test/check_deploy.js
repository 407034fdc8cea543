#!/usr/bin/env node
// Offline checks of deploy/ (no cluster, no Docker engine needed):
//  1. every kustomization under deploy/k8s renders (a small kustomize of our own, for the
//     few features we use; cross-checked against `kubectl kustomize` where kubectl exists);
//  2. every object validates against the Kubernetes schema (kubernetes-models), and has no
//     field the schema does not know (a typo there is silently dropped by many tools);
//  3. the objects refer to each other correctly: selectors match pod labels, Services target
//     container ports, mounts name volumes, probes name ports, env refers to keys that exist,
//     RBAC bindings name real roles and accounts, instrumented workloads mount the agent's
//     node directories;
//  4. the Dockerfile is sound: bookworm bases only, stages referenced exist, final images
//     are slim and not root, and (when the binaries are built) install every package that
//     provides a library the binaries link directly.
//
//   node check_deploy.js [BUILD_DIR]       exits 1 and lists every problem, else prints
//                                          "N passed, 0 failed"
'use strict';

const fs = require('fs');
const path = require('path');
const { execFileSync, spawnSync } = require('child_process');
const YAML = require('yaml');

const deployDir = path.resolve(__dirname, '..');
const k8sDir = path.join(deployDir, 'k8s');
const buildDir = process.argv[2] || '';

let passed = 0;
const failures = [];
function check(ok, what) {
  if (ok) passed++;
  else failures.push(what);
  return ok;
}

// ---------------------------------------------------------------- 1. kustomize, ours

const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding',
  'PersistentVolume', 'StorageClass', 'CustomResourceDefinition', 'PriorityClass']);
const KUSTOMIZATION_KEYS = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'patches',
  'images']);

function loadYamlDocuments(file) {
  return YAML.parseAllDocuments(fs.readFileSync(file, 'utf8')).map((doc) => {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    return doc.toJS();
  }).filter((o) => o !== null);
}

function sameTarget(a, b) {
  return a.kind === b.kind && a.metadata.name === b.metadata.name;
}

// Deep merge as a strategic merge patch does for what we patch (maps merge, lists replace).
function merge(target, patch) {
  for (const [key, value] of Object.entries(patch)) {
    if (value && typeof value === 'object' && !Array.isArray(value) &&
        target[key] && typeof target[key] === 'object' && !Array.isArray(target[key])) {
      merge(target[key], value);
    } else {
      target[key] = value;
    }
  }
}

function podSpecOf(object) {
  const spec = object.spec || {};
  if (spec.template && spec.template.spec) return spec.template.spec;
  if (spec.jobTemplate) return spec.jobTemplate.spec.template.spec;
  if (object.kind === 'Pod') return spec;
  return null;
}

function containersOf(podSpec) {
  return [...(podSpec.initContainers || []), ...(podSpec.containers || [])];
}

function kustomize(dir) {
  const file = path.join(dir, 'kustomization.yaml');
  const [k] = loadYamlDocuments(file);
  for (const key of Object.keys(k)) {
    if (!KUSTOMIZATION_KEYS.has(key)) {
      throw new Error(`${file}: '${key}' is not a kustomize feature check_deploy.js renders`);
    }
  }
  let objects = [];
  for (const resource of k.resources || []) {
    const p = path.resolve(dir, resource);
    objects.push(...(fs.statSync(p).isDirectory() ? kustomize(p) : loadYamlDocuments(p)));
  }
  for (const entry of k.patches || []) {
    const patch = entry.patch ? YAML.parse(entry.patch) : loadYamlDocuments(
      path.resolve(dir, entry.path))[0];
    const index = objects.findIndex((o) => sameTarget(o, patch));
    if (index < 0) throw new Error(`${file}: a patch targets no ${patch.kind} ${patch.metadata.name}`);
    if (patch.$patch === 'delete') {
      objects.splice(index, 1);
    } else {
      merge(objects[index], patch);
    }
  }
  if (k.namespace) {
    for (const o of objects) {
      if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
    }
  }
  for (const image of k.images || []) {
    for (const o of objects) {
      const podSpec = podSpecOf(o);
      if (!podSpec) continue;
      for (const c of containersOf(podSpec)) {
        const [name, tag] = c.image.split(':');
        if (name !== image.name) continue;
        const newTag = image.newTag || tag;
        c.image = (image.newName || name) + (newTag ? `:${newTag}` : '');
      }
    }
  }
  return objects;
}

function identity(o) {
  return `${o.apiVersion} ${o.kind} ${o.metadata.namespace || '-'}/${o.metadata.name}`;
}

function findKustomizations(dir) {
  const found = fs.existsSync(path.join(dir, 'kustomization.yaml')) ? [dir] : [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) found.push(...findKustomizations(path.join(dir, entry.name)));
  }
  return found;
}

function kubectlAvailable() {
  if (process.env.REPTRACE_DEPLOY_NO_KUBECTL) return false;
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return true;
  } catch (e) {
    return false;
  }
}

// ---------------------------------------------------------------- 2. schema

const modelsDir = path.dirname(require.resolve('kubernetes-models/package.json'));

// kubernetes-models/<group>/<version>/<Kind>: one model (an index would load them all).
function modelFile(o) {
  return path.join(modelsDir, o.apiVersion.includes('/') ? o.apiVersion : 'v1', o.kind);
}

function modelClass(o) {
  try {
    return require(modelFile(o))[o.kind] || null;
  } catch (e) {
    return null;
  }
}

// Field names per type, read from kubernetes-models' type declarations (the schemas it
// validates with allow unknown fields, as the OpenAPI document does).
const interfaceCache = new Map();
function readInterface(dtsFile) {
  if (interfaceCache.has(dtsFile)) return interfaceCache.get(dtsFile);
  const text = fs.readFileSync(dtsFile, 'utf8');
  const imports = new Map();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
    imports.set(m[1], m[2]);
  }
  const body = text.match(/^export interface I\w+(?: extends [\w, ]+)? \{\n([\s\S]*?)^\}/m);
  const fields = new Map();
  if (body) {
    for (const m of body[1].matchAll(/^ {4}"([^"]+)"\??: (.*)$/gm)) {
      const ref = m[2].match(/\b(IIoK8s\w+)\b/);
      let refFile = null;
      if (ref && imports.has(ref[1])) {
        const from = imports.get(ref[1]);
        refFile = from.startsWith('.') ? path.resolve(path.dirname(dtsFile), `${from}.d.ts`)
          : `${require.resolve(`${from.split('/').slice(0, 2).join('/')}/package.json`)
            .replace(/package\.json$/, '')}${from.split('/').slice(2).join('/')}.d.ts`;
      }
      fields.set(m[1], refFile);
    }
  }
  const result = { fields, open: !body };
  interfaceCache.set(dtsFile, result);
  return result;
}

function unknownFields(value, dtsFile, where, out) {
  if (!value || typeof value !== 'object' || !dtsFile) return;
  if (Array.isArray(value)) {
    value.forEach((v, i) => unknownFields(v, dtsFile, `${where}[${i}]`, out));
    return;
  }
  const { fields, open } = readInterface(dtsFile);
  if (open) return;
  for (const [key, v] of Object.entries(value)) {
    if (!fields.has(key)) out.push(`${where}.${key}`);
    else unknownFields(v, fields.get(key), `${where}.${key}`, out);
  }
}

function checkSchema(o, where) {
  const Model = modelClass(o);
  if (!check(Model, `${where}: no Kubernetes model for ${o.apiVersion} ${o.kind}`)) return;
  try {
    new Model(o).validate();
    check(true);  // valid
  } catch (e) {
    const details = (e.errors || []).map((x) => `${x.instancePath} ${x.message}`).join('; ');
    check(false, `${where}: schema: ${details || e.message}`);
  }
  const out = [];
  unknownFields(o, `${modelFile(o)}.d.ts`, '', out);
  check(out.length === 0, `${where}: fields the schema does not have: ${out.join(', ')}`);
}

// ---------------------------------------------------------------- 3. cross-references

function matches(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
}

function find(objects, kind, namespace, name) {
  return objects.find((o) => o.kind === kind && o.metadata.name === name &&
    (CLUSTER_SCOPED.has(kind) || o.metadata.namespace === namespace));
}

function portExists(container, port) {
  return (container.ports || []).some((p) => p.name === port || p.containerPort === port);
}

function checkReferences(objects, name, allObjects) {
  const workloads = objects.filter((o) => podSpecOf(o));
  for (const o of objects) {
    const ns = o.metadata.namespace;
    const where = `${name}: ${identity(o)}`;
    if (!CLUSTER_SCOPED.has(o.kind)) {
      check(ns && find(objects, 'Namespace', null, ns),
        `${where}: its namespace '${ns}' is not created by the same kustomization`);
    }
    const podSpec = podSpecOf(o);
    if (podSpec) {
      const labels = o.spec.template.metadata.labels;
      check(o.spec.selector && matches(o.spec.selector.matchLabels, labels) &&
        Object.keys(o.spec.selector.matchLabels || {}).length > 0,
      `${where}: selector does not match its pod template's labels`);
      if (podSpec.serviceAccountName) {
        check(find(objects, 'ServiceAccount', ns, podSpec.serviceAccountName),
          `${where}: service account ${podSpec.serviceAccountName} does not exist`);
      }
      if (o.kind === 'StatefulSet') {
        check(find(objects, 'Service', ns, o.spec.serviceName),
          `${where}: serviceName ${o.spec.serviceName} is not a Service`);
      }
      const volumes = new Set([...(podSpec.volumes || []).map((v) => v.name),
        ...((o.spec.volumeClaimTemplates || []).map((v) => v.metadata.name))]);
      for (const v of podSpec.volumes || []) {
        if (v.configMap) {
          check(find(objects, 'ConfigMap', ns, v.configMap.name) || v.configMap.optional,
            `${where}: volume ${v.name}: no ConfigMap ${v.configMap.name}`);
        }
        if (v.secret) {
          check(find(objects, 'Secret', ns, v.secret.secretName) || v.secret.optional,
            `${where}: volume ${v.name}: no Secret ${v.secret.secretName}`);
        }
      }
      const containerNames = new Set();
      for (const c of containersOf(podSpec)) {
        const cw = `${where} container ${c.name}`;
        check(!containerNames.has(c.name), `${cw}: name used twice`);
        containerNames.add(c.name);
        for (const m of c.volumeMounts || []) {
          check(volumes.has(m.name), `${cw}: mounts volume ${m.name}, which the pod lacks`);
        }
        for (const probeName of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
          const probe = c[probeName];
          if (!probe) continue;
          const action = probe.httpGet || probe.tcpSocket || probe.grpc;
          if (action) {
            check(portExists(c, action.port), `${cw}: ${probeName} port ${action.port} is not a container port`);
          } else {
            check(probe.exec && probe.exec.command.length > 0, `${cw}: ${probeName} has no action`);
          }
        }
        for (const e of c.env || []) {
          const ref = e.valueFrom && (e.valueFrom.configMapKeyRef || e.valueFrom.secretKeyRef);
          if (!ref) continue;
          const kind = e.valueFrom.configMapKeyRef ? 'ConfigMap' : 'Secret';
          const source = find(objects, kind, ns, ref.name);
          const data = source && { ...(source.data || {}), ...(source.stringData || {}) };
          check(ref.optional || (data && ref.key in data),
            `${cw}: env ${e.name} refers to ${kind} ${ref.name} key ${ref.key}, which does not exist`);
        }
        // $(VAR) in args and command must name a variable the container defines.
        const defined = new Set((c.env || []).map((e) => e.name));
        for (const arg of [...(c.args || []), ...(c.command || [])]) {
          for (const m of arg.matchAll(/\$\((\w+)\)/g)) {
            check(defined.has(m[1]), `${cw}: '${arg}' uses $(${m[1]}), which is not in env`);
          }
        }
        // Instrumented: the hook and the socket must come from the agent's node directories.
        const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
        if (env.LD_PRELOAD && env.LD_PRELOAD.includes('libreptrace')) {
          checkInstrumented(c, podSpec, env, cw, allObjects);
        }
      }
    }
    if (o.kind === 'Service' && o.spec.selector) {
      const targets = workloads.filter((w) => w.metadata.namespace === ns &&
        matches(o.spec.selector, w.spec.template.metadata.labels));
      check(targets.length > 0, `${where}: selects no pods`);
      for (const p of o.spec.ports || []) {
        const target = p.targetPort === undefined ? p.port : p.targetPort;
        check(targets.length > 0 && targets.every((w) => w.spec.template.spec.containers
          .some((c) => portExists(c, target))),
        `${where}: port ${p.name || p.port} targets ${target}, not a port of the pods it selects`);
      }
    }
    if (o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding') {
      check(find(objects, o.roleRef.kind, ns, o.roleRef.name),
        `${where}: roleRef ${o.roleRef.kind} ${o.roleRef.name} does not exist`);
      for (const s of o.subjects || []) {
        if (s.kind !== 'ServiceAccount') continue;
        check(find(objects, 'ServiceAccount', s.namespace || ns, s.name),
          `${where}: subject ServiceAccount ${s.namespace}/${s.name} does not exist`);
      }
    }
  }
}

// What naming pods in spans takes (agent/workload.h, agent/pod_directory.h): the agent
// sees the host's pids (its peers' /proc entries), has its service account's token, and
// that account may list pods cluster-wide; the agent is not told to do without.
function checkAgentPodNaming(objects, name) {
  const agent = objects.find((o) => o.kind === 'DaemonSet' && o.metadata.name === 'reptrace-agent');
  if (!agent) return;
  const where = `${name}: ${identity(agent)}`;
  const podSpec = agent.spec.template.spec;
  check(podSpec.hostPID === true,
    `${where}: no hostPID: the agent cannot read its peers' cgroups (container and pod ids)`);
  const account = podSpec.serviceAccountName || 'default';
  const ns = agent.metadata.namespace;
  const sa = find(objects, 'ServiceAccount', ns, account);
  check(podSpec.automountServiceAccountToken !== false &&
    !(sa && sa.automountServiceAccountToken === false),
  `${where}: its service account token is not mounted: it cannot list pods`);
  const canList = objects.filter((o) => o.kind === 'ClusterRoleBinding' &&
      (o.subjects || []).some((s) => s.kind === 'ServiceAccount' && s.name === account &&
        s.namespace === ns))
    .map((b) => find(objects, 'ClusterRole', null, b.roleRef.name))
    .some((role) => role && (role.rules || []).some((r) => (r.apiGroups || []).includes('') &&
      (r.resources || []).includes('pods') && (r.verbs || []).includes('list')));
  check(canList, `${where}: service account ${account} may not list pods cluster-wide`);
  const container = podSpec.containers.find((c) => c.name === 'agent');
  check(!(container.args || []).some((a) => /^--kube[-_]api[-_]server=off$/.test(a)),
    `${where}: --kube-api-server=off: spans would carry no pod names`);
}

// The agent DaemonSet's node directories, from the default install.
function agentNodeDirectories(allObjects) {
  const agent = allObjects.find((o) => o.kind === 'DaemonSet' && o.metadata.name === 'reptrace-agent');
  const podSpec = agent.spec.template.spec;
  const container = podSpec.containers.find((c) => c.name === 'agent');
  const socketArg = container.args.find((a) => a.startsWith('--socket='));
  const socket = socketArg.slice('--socket='.length);
  const socketMount = container.volumeMounts.find((m) => socket.startsWith(`${m.mountPath}/`));
  const hostPathOf = (volumeName) => podSpec.volumes.find((v) => v.name === volumeName).hostPath.path;
  const init = podSpec.initContainers.find((c) => c.name === 'install-hook');
  const libMount = init.volumeMounts.find((m) => init.command.join(' ')
    .includes(`${m.mountPath}/libreptrace.so`));
  return {
    socketDir: socketMount && hostPathOf(socketMount.name),
    socketName: socketMount && socket.slice(socketMount.mountPath.length + 1),
    libDir: libMount && hostPathOf(libMount.name),
  };
}

function checkInstrumented(c, podSpec, env, where, allObjects) {
  let node;
  try {
    node = agentNodeDirectories(allObjects);
  } catch (e) {
    check(false, `${where}: cannot tell the agent DaemonSet's node directories (${e.message})`);
    return;
  }
  const hostDirOf = (file) => {
    const m = (c.volumeMounts || []).find((vm) => file.startsWith(`${vm.mountPath}/`));
    const v = m && (podSpec.volumes || []).find((vol) => vol.name === m.name);
    return v && v.hostPath ? { dir: v.hostPath.path, rest: file.slice(m.mountPath.length + 1) } : {};
  };
  const lib = hostDirOf(env.LD_PRELOAD);
  check(lib.dir === node.libDir && lib.rest === 'libreptrace.so',
    `${where}: LD_PRELOAD ${env.LD_PRELOAD} is not the agent's ${node.libDir}/libreptrace.so`);
  const socket = hostDirOf(env.REPTRACE_SOCKET || '/run/reptrace/agent.sock');
  check(socket.dir === node.socketDir && socket.rest === node.socketName,
    `${where}: REPTRACE_SOCKET is not the agent's socket in ${node.socketDir} (mount the directory: the config page is beside the socket)`);
  check(Boolean(env.REPTRACE_SERVICE), `${where}: instrumented but REPTRACE_SERVICE is not set`);
}

// ---------------------------------------------------------------- 4. Dockerfile

function parseDockerfile(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n')
    .filter((l) => !/^\s*#/.test(l)).join('\n').replace(/\\\n/g, ' ').split('\n');
  const stages = [];
  for (const line of lines) {
    const m = line.trim().match(/^(\w+)\s+(.*)$/);
    if (!m) continue;
    const [, instruction, rest] = [m[0], m[1].toUpperCase(), m[2]];
    if (instruction === 'FROM') {
      const f = rest.match(/^(\S+)(?:\s+AS\s+(\S+))?$/i);
      stages.push({ base: f[1], name: f[2] || String(stages.length), instructions: [] });
    } else {
      stages[stages.length - 1].instructions.push({ instruction, rest });
    }
  }
  return stages;
}

function checkDockerfile(file, imagesInManifests) {
  const where = path.relative(deployDir, file);
  const stages = parseDockerfile(file);
  const byName = new Map();
  const usedAsSource = new Set();
  for (const s of stages) {
    check(!byName.has(s.name), `${where}: stage ${s.name} defined twice`);
    check(byName.has(s.base) || /^debian:bookworm(-slim)?(@sha256:[0-9a-f]{64})?$/.test(s.base),
      `${where}: stage ${s.name} is based on ${s.base}, neither an earlier stage nor Debian bookworm`);
    if (byName.has(s.base)) usedAsSource.add(s.base);
    for (const { instruction, rest } of s.instructions) {
      const from = rest.match(/--from=(\S+)/);
      if (instruction === 'COPY' && from) {
        check(byName.has(from[1]), `${where}: stage ${s.name} copies from ${from[1]}, not an earlier stage`);
        usedAsSource.add(from[1]);
      }
    }
    byName.set(s.name, s);
  }
  const chain = (s) => (byName.has(s.base) ? [...chain(byName.get(s.base)), s] : [s]);
  const finals = stages.filter((s) => !usedAsSource.has(s.name));
  for (const s of finals) {
    const c = chain(s);
    const all = c.flatMap((x) => x.instructions);
    check(c[0].base.startsWith('debian:bookworm-slim'),
      `${where}: final image ${s.name} is not built on debian:bookworm-slim`);
    const users = all.filter((i) => i.instruction === 'USER').map((i) => i.rest.split(':')[0]);
    check(users.length > 0 && !['root', '0'].includes(users[users.length - 1]),
      `${where}: final image ${s.name} runs as root (no USER, or USER root)`);
    const entrypoint = all.filter((i) => i.instruction === 'ENTRYPOINT').pop();
    check(entrypoint && entrypoint.rest.trim().startsWith('['),
      `${where}: final image ${s.name} has no ENTRYPOINT in exec (JSON) form`);
  }
  for (const image of imagesInManifests) {
    const target = image.replace(/^reptrace\//, '').split(':')[0];
    check(finals.some((s) => s.name === target),
      `${where}: the manifests use ${image}, but there is no final stage '${target}' to build it`);
  }
  return { byName, chain };
}

// The packages a stage installs with apt-get, following its base stages.
function aptPackages(stageChain) {
  const packages = new Set();
  for (const s of stageChain) {
    for (const { instruction, rest } of s.instructions) {
      if (instruction !== 'RUN') continue;
      for (const m of rest.matchAll(/apt-get install ([^&;|]*)/g)) {
        m[1].split(/\s+/).filter((w) => w && !w.startsWith('-') && !w.includes('='))
          .forEach((p) => packages.add(p));
      }
    }
  }
  return packages;
}

// Debian packages providing the libraries each built file links directly (its DT_NEEDED):
// file -> Map(library -> package or null). One dpkg call for all (each costs seconds here).
function neededPackages(files) {
  const candidatesOf = new Map();
  for (const file of files) {
    const needed = execFileSync('objdump', ['-p', file], { encoding: 'utf8' })
      .split('\n').map((l) => l.match(/^\s+NEEDED\s+(\S+)/)).filter(Boolean).map((m) => m[1]);
    // ldd prints "name => path (address)", and the dynamic loader as "path (address)".
    const resolved = new Map(execFileSync('ldd', [file], { encoding: 'utf8' }).split('\n')
      .map((l) => l.match(/^\s*(\S+) => (\S+)/) || l.match(/^\s*((\/\S+\/)?([^/\s]+)) \(/))
      .filter(Boolean).map((m) => (m[3] ? [m[3], m[1]] : [m[1], m[2]])));
    // dpkg knows a file by the path its package ships (/lib or /usr/lib: usrmerge).
    candidatesOf.set(file, new Map(needed.map((lib) => {
      const p = resolved.get(lib);
      return [lib, p ? [...new Set([p, fs.realpathSync(p), p.replace(/^\/lib/, '/usr/lib'),
        fs.realpathSync(p).replace(/^\/usr\/lib/, '/lib')])] : []];
    })));
  }
  const all = [...new Set([...candidatesOf.values()].flatMap((m) => [...m.values()].flat()))];
  const owner = new Map();
  const dpkg = spawnSync('dpkg', ['-S', ...all], { encoding: 'utf8' });
  for (const line of (dpkg.stdout || '').split('\n')) {
    const m = line.match(/^([^:,\s]+)(?::\S+)?: (\S+)$/);
    if (m) owner.set(m[2], m[1]);
  }
  return new Map([...candidatesOf].map(([file, libs]) => [file, new Map([...libs].map(
    ([lib, candidates]) => [lib, candidates.map((c) => owner.get(c)).find(Boolean) || null]))]));
}

// ---------------------------------------------------------------- main

function main() {
  const rendered = new Map();
  for (const dir of findKustomizations(k8sDir)) {
    const name = path.relative(deployDir, dir);
    try {
      rendered.set(name, kustomize(dir));
      check(true);  // rendered
    } catch (e) {
      check(false, `${name}: ${e.message}`);
    }
  }
  check(rendered.has('k8s'), 'k8s/kustomization.yaml is missing (kubectl apply -k deploy/k8s)');

  if (kubectlAvailable()) {
    for (const [name, objects] of rendered) {
      const theirs = YAML.parseAllDocuments(execFileSync('kubectl',
        ['kustomize', path.join(deployDir, name)], { encoding: 'utf8' })).map((d) => d.toJS());
      const canonical = (v) => (Array.isArray(v) ? v.map(canonical)
        : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort()
          .map((k) => [k, canonical(v[k])])) : v);
      const key = (list) => JSON.stringify(list.map((o) => JSON.stringify(canonical(o))).sort());
      check(key(theirs) === key(objects),
        `${name}: kubectl kustomize renders something else than check_deploy.js does`);
    }
  } else {
    console.log('check_deploy: no kubectl here; kustomize output not cross-checked');
  }

  const base = rendered.get('k8s') || [];
  const images = new Set();
  for (const [name, objects] of rendered) {
    for (const o of objects) {
      checkSchema(o, `${name}: ${identity(o)}`);
      const podSpec = podSpecOf(o);
      if (podSpec) {
        containersOf(podSpec).filter((c) => c.image.startsWith('reptrace/'))
          .forEach((c) => images.add(c.image));
      }
    }
    checkReferences(objects, name, base);
    checkAgentPodNaming(objects, name);
  }
  const example = rendered.get(path.join('k8s', 'example')) || [];
  check(example.some((o) => podSpecOf(o) && containersOf(podSpecOf(o)).some((c) =>
    (c.env || []).some((e) => e.name === 'LD_PRELOAD'))), 'k8s/example instruments no workload');

  const dockerfile = path.join(deployDir, 'docker', 'Dockerfile');
  const { byName, chain } = checkDockerfile(dockerfile, images);

  // With a build at hand: every directly linked library comes from a package the image
  // installs (or from libc/libstdc++, which every Debian image has), and the hook links
  // nothing but libc, so it loads into any glibc workload image.
  const builtFiles = { controller: 'controller/reptrace-controller', agent: 'agent/reptrace-agent',
    cli: 'cli/reptracectl', hook: 'hook/libreptrace.so' };
  const present = Object.entries(builtFiles).filter(([, relative]) => {
    const built = buildDir && fs.existsSync(path.join(buildDir, relative));
    if (!built) console.log(`check_deploy: ${relative} not built; its libraries not checked`);
    return built;
  });
  const owners = neededPackages(present.map(([, relative]) => path.join(buildDir, relative)));
  const inEveryImage = new Set(['libc6', 'libstdc++6', 'libgcc-s1']);
  for (const [stage, relative] of present) {
    const libs = owners.get(path.join(buildDir, relative));
    if (stage === 'hook') {
      check([...libs.values()].every((p) => p === 'libc6'),
        `${relative} links more than libc (${[...libs.keys()].join(', ')}): workload images may lack it`);
      continue;
    }
    const installed = aptPackages(chain(byName.get(stage)));
    for (const [lib, owner] of libs) {
      check(owner && (inEveryImage.has(owner) || installed.has(owner)),
        `docker/Dockerfile: ${relative} links ${lib} (package ${owner}), which image ${stage} does not install`);
    }
  }

  for (const f of failures) console.log(`FAIL ${f}`);
  console.log(`${passed} passed, ${failures.length} failed`);
  process.exit(failures.length ? 1 : 0);
}

if (require.main === module) main();
module.exports = { kustomize };
