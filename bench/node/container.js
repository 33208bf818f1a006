// One Lambda-like container for bench/anchors.py: the npm anchor serverless-mysql or
// serverless-postgres, set up as their READMEs show (client created once at module level, the
// clean-up call at the end of every invocation), doing the users service's POST /users work:
// BEGIN; INSERT INTO users (name, email, created_at); COMMIT.
//
// Protocol (same shape as peewee_serverless.local.containers): prints {"ready": pid} once the
// module-level set-up is done; then, for each line "<seq>" on stdin, runs one invocation and
// prints one JSON result line; an empty line or end of input ends the process.
'use strict';

const readline = require('readline');

const system = process.env.ANCHOR_SYSTEM;
const index = Number(process.env.ANCHOR_INDEX || 0);
const config = {
  host: process.env.DB_HOST,
  port: Number(process.env.DB_PORT),
  database: process.env.DB_NAME,
  user: process.env.DB_USER,
  password: process.env.DB_PASSWORD || '',
};
const monotonic = () => Number(process.hrtime.bigint()) / 1e9; // CLOCK_MONOTONIC, as Python's

function row(seq) {
  const tag = `c${index}s${seq}-${Math.random().toString(16).slice(2, 10)}`;
  const now = new Date().toISOString().slice(0, 19).replace('T', ' ');
  return [`User ${tag}`, `${tag}@example.com`, now];
}

let invoke;
if (system === 'serverless-mysql') {
  // README: "Require and initialize outside of your main handler"; defaults otherwise.
  const mysql = require('serverless-mysql')({ config });
  invoke = async (seq) => {
    await mysql
      .transaction()
      .query('INSERT INTO users (name, email, created_at) VALUES (?, ?, ?)', row(seq))
      .commit();
    await mysql.end(); // "call the end() method to perform connection management"
  };
} else if (system === 'serverless-postgres') {
  const ServerlessClient = require('serverless-postgres');
  // README usage: delayMs 3000; maxConnections "should be set equal to max_connections ...
  // I highly suggest to set this yourself": here the role's CONNECTION LIMIT.
  const client = new ServerlessClient({
    ...config,
    delayMs: 3000,
    maxConnections: Number(process.env.ANCHOR_LIMIT || 100),
  });
  invoke = async (seq) => {
    await client.connect();
    try {
      await client.query('BEGIN');
      await client.query(
        'INSERT INTO users (name, email, created_at) VALUES ($1, $2, $3)',
        row(seq),
      );
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    }
    await client.clean(); // "calling the method .clean() at the end of your functions"
  };
} else {
  throw new Error(`unknown ANCHOR_SYSTEM ${system}`);
}

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
// Library logs must not end up in the protocol.
console.log = console.info = console.warn = console.error = () => {};

const lines = readline.createInterface({ input: process.stdin });
const queue = [];
let busy = false;

async function drain() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const line = queue.shift();
    if (line === '') {
      process.exit(0);
    }
    const seq = Number(line);
    const started = monotonic();
    let error = null;
    try {
      await invoke(seq);
    } catch (err) {
      error = `${(err && (err.code || err.name)) || 'Error'}: ${String(err && err.message).slice(0, 200)}`;
    }
    const latency = (monotonic() - started) * 1000;
    out({ seq, started, latency_ms: latency, error });
  }
  busy = false;
}

lines.on('line', (line) => {
  queue.push(line.trim());
  drain();
});
lines.on('close', () => {
  queue.push('');
  drain();
});
out({ ready: process.pid });
