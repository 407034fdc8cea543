#!/usr/bin/env node
// Drives reptrace-controller through gRPC server reflection alone, with a third-party
// reflection client (grpc-js-reflection-client): no .proto file of reptrace's is read.
//
//   node reflection_client.js HOST:PORT
//
// Lists the services, resolves ConfigService's descriptors through reflection, calls
// GetConfig, SetConfig (a changed document against the version read) and GetConfig
// again, and prints a JSON summary on stdout:
//   {"services":[...], "health":"SERVING" or "health_error":"...",
//    "before":{version,config}, "set":{version,author}, "after":{version,author,config}}
// Exits non-zero (with the reason on stderr) on any failure.
'use strict';

const grpc = require('@grpc/grpc-js');
const { GrpcReflection } = require('grpc-js-reflection-client');

const kDeadlineMs = 20000;
// The controller is C++ gRPC of Debian bookworm: it serves grpc.reflection.v1alpha.
const kReflectionVersion = 'v1alpha';
const kLoaderOptions = { keepCase: true, longs: String, enums: String, defaults: true };

function Deadline() {
  return { deadline: Date.now() + kDeadlineMs };
}

// The client class of fully qualified service `name` in a grpc-js package object.
function ServiceClient(packageObject, name) {
  let node = packageObject;
  for (const part of name.split('.')) {
    node = node && node[part];
  }
  if (typeof node !== 'function' || !node.service) {
    throw new Error(`reflection gave no service ${name}`);
  }
  return node;
}

function Unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, new grpc.Metadata(), Deadline(), (err, response) => {
      if (err) {
        reject(new Error(`${method}: ${err.code} ${err.details || err.message}`));
      } else {
        resolve(response);
      }
    });
  });
}

// A client for `service`, from descriptors fetched through reflection only.
async function ResolvedClient(reflection, address, service) {
  const descriptor = await reflection.getDescriptorBySymbol(service, new grpc.Metadata(),
                                                            Deadline());
  const Client = ServiceClient(descriptor.getPackageObject(kLoaderOptions), service);
  return new Client(address, grpc.credentials.createInsecure());
}

async function Main(address) {
  const reflection = new GrpcReflection(address, grpc.credentials.createInsecure(), {},
                                        kReflectionVersion);
  const summary = {};

  summary.services = (await reflection.listServices('*', new grpc.Metadata(), Deadline()))
                         .sort();
  for (const wanted of ['reptrace.v1.ConfigService', 'reptrace.v1.QueryService',
                        'grpc.health.v1.Health']) {
    if (!summary.services.includes(wanted)) {
      throw new Error(`${wanted} is not listed: ${summary.services.join(', ')}`);
    }
  }

  // Health/Check through reflection: its descriptors are in the controller's pool because
  // the controller links proto/grpc/health/v1/health.proto in (without it C++ gRPC's
  // built-in health service is listed but "Symbol not found", grpc/grpc#36665). A failure
  // is reported in the summary, which the test then checks.
  try {
    const health = await ResolvedClient(reflection, address, 'grpc.health.v1.Health');
    summary.health = (await Unary(health, 'Check', { service: '' })).status;
    health.close();
  } catch (err) {
    summary.health_error = String(err && err.message ? err.message : err);
  }

  const config = await ResolvedClient(reflection, address, 'reptrace.v1.ConfigService');
  const before = await Unary(config, 'GetConfig', {});
  summary.before = { version: before.version, config: before.config };

  // SetConfig replaces the whole document: start from the one read, change three fields.
  const changed = Object.assign({}, before.config, {
    enabled: true,
    capture_bytes: 64,
    sampling: Object.assign({}, before.config.sampling, { probability: 1 }),
  });
  const set = await Unary(config, 'SetConfig', {
    config: changed,
    expected_version: before.version,
    author: 'reflection-client',
  });
  summary.set = { version: set.version, author: set.author };

  const after = await Unary(config, 'GetConfig', {});
  summary.after = { version: after.version, author: after.author, config: after.config };
  config.close();

  process.stdout.write(JSON.stringify(summary) + '\n');
}

if (process.argv.length !== 3) {
  process.stderr.write('usage: node reflection_client.js HOST:PORT\n');
  process.exit(2);
}
Main(process.argv[2]).then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`reflection_client: ${err && err.stack ? err.stack : err}\n`);
      process.exit(1);
    });
