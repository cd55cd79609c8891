#!/usr/bin/env node
// Starts the Node reference Durable Streams server (@durable-streams/server).
//
// Usage: node scripts/node-server.mjs [--port N] [--host 127.0.0.1] [--long-poll-timeout-ms N] [--webhooks]
//
// The package is loaded from $DS_NODE_SERVER_DIR/node_modules (default
// ${DS_TOOLS_DIR:-$HOME/.cache/durable-streams-client}/node); run
// scripts/install-servers.sh first. Prints exactly one line to stdout,
// `LISTENING <url>`, then keeps serving. Exits on SIGTERM/SIGINT and, when
// stdin is a pipe, when it closes, so a parent that dies never leaves an
// orphan server.
import { fstatSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

function usage(msg) {
  if (msg) console.error(`node-server.mjs: ${msg}`);
  console.error('usage: node scripts/node-server.mjs [--port N] [--host 127.0.0.1] [--long-poll-timeout-ms N] [--webhooks]');
  process.exit(2);
}

const opts = { port: 4437, host: '127.0.0.1', longPollTimeout: 500 };
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  const [flag, inline] = arg.includes('=') ? arg.split(/=(.*)/s, 2) : [arg, undefined];
  const value = () => {
    const v = inline ?? args[++i];
    if (v === undefined) usage(`missing value for ${flag}`);
    return v;
  };
  const int = () => {
    const v = value();
    if (!/^\d+$/.test(v)) usage(`${flag} must be a non-negative integer, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  switch (flag) {
    case '--port': opts.port = int(); break;
    case '--host': opts.host = value(); break;
    case '--long-poll-timeout-ms': opts.longPollTimeout = int(); break;
    // Webhook subscriptions (pull-wake subscriptions are always on).
    case '--webhooks': opts.webhooks = true; break;
    case '-h':
    case '--help': usage();
    default: usage(`unknown argument ${JSON.stringify(arg)}`);
  }
}

const toolsDir = process.env.DS_TOOLS_DIR || join(homedir(), '.cache', 'durable-streams-client');
const serverDir = process.env.DS_NODE_SERVER_DIR || join(toolsDir, 'node');
const entry = join(serverDir, 'node_modules', '@durable-streams', 'server', 'dist', 'index.js');

let DurableStreamTestServer;
try {
  ({ DurableStreamTestServer } = await import(pathToFileURL(entry).href));
} catch (err) {
  console.error(`node-server.mjs: cannot load ${entry}: ${err?.message ?? err}`);
  console.error('node-server.mjs: the Node server is not installed; run scripts/install-servers.sh');
  process.exit(1);
}

const server = new DurableStreamTestServer(opts);

let stopping = false;
async function shutdown(code = 0) {
  if (stopping) return;
  stopping = true;
  // Do not wait forever for open keep-alive / long-poll connections.
  const timer = setTimeout(() => process.exit(code), 2000);
  timer.unref();
  try {
    await server.stop();
  } catch {
    // ignore: we are exiting anyway
  }
  process.exit(code);
}

process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
// Parent went away (its end of our stdin pipe closed): exit too. Only when
// stdin is a pipe/socket: a script started in the background from a shell
// gets /dev/null as stdin, which would otherwise end immediately.
let stdinIsPipe = false;
try {
  const st = fstatSync(0);
  stdinIsPipe = st.isFIFO() || st.isSocket();
} catch {
  // no stdin at all
}
if (stdinIsPipe) {
  process.stdin.on('end', () => shutdown(0));
  process.stdin.on('close', () => shutdown(0));
  process.stdin.on('error', () => shutdown(0));
  process.stdin.resume();
}

let url;
try {
  url = await server.start();
} catch (err) {
  console.error(`node-server.mjs: failed to start on ${opts.host}:${opts.port}: ${err?.message ?? err}`);
  process.exit(1);
}
process.stdout.write(`LISTENING ${url}\n`);
