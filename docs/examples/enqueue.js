#!/usr/bin/env node
// Enqueue one complaint for tiqu and print its envelope: Node.js, no npm packages.
//
//   node enqueue.js --id crm-4711 --text "张三 北京市朝阳区… 宽带断网三天了。"
//   REDIS_URL=redis://:password@127.0.0.1:6379/0 node enqueue.js --id 1 --text "..."
//
// What it does (docs/clients.md explains each part):
//   1. LPUSH a Celery protocol-2 message for the task "tiqu.extract" onto the Redis
//      list "extract" (NOT "celery": no tiqu worker consumes that queue), with the
//      keyword arguments {text, id};
//   2. poll GET "celery-task-meta-<task id>" until the worker stored the result,
//      and print its "result" (the envelope) as one JSON line.
// Exit status: 0 when an envelope came back, 1 on a Redis error or timeout.
// Speaks RESP over a plain TCP socket (redis://); for rediss:// use tls.connect.
'use strict';

const net = require('net');
const crypto = require('crypto');
const os = require('os');

const QUEUE = 'extract';
const TASK = 'tiqu.extract';
const RESULT_PREFIX = 'celery-task-meta-';

function parseArgs(argv) {
  const out = { timeoutS: 60, url: process.env.REDIS_URL || 'redis://127.0.0.1:6379/0' };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${key} needs a value`);
    if (key === '--id') out.id = value;
    else if (key === '--text') out.text = value;
    else if (key === '--redis') out.url = value;
    else if (key === '--timeout-s') out.timeoutS = Number(value);
    else throw new Error(`unknown option ${key}`);
  }
  if (out.text === undefined) throw new Error('--text is required');
  return out;
}

// --- a minimal RESP client -------------------------------------------------------

class Redis {
  constructor(url) {
    const u = new URL(url);
    if (u.protocol !== 'redis:') throw new Error('only redis:// URLs (use tls.connect for rediss://)');
    this.host = u.hostname || '127.0.0.1';
    this.port = Number(u.port || 6379);
    this.username = decodeURIComponent(u.username || '');
    this.password = decodeURIComponent(u.password || '');
    this.db = Number((u.pathname || '/0').slice(1) || 0);
    this.buffer = Buffer.alloc(0);
    this.waiting = [];
  }

  async connect() {
    await new Promise((resolve, reject) => {
      this.socket = net.createConnection({ host: this.host, port: this.port }, resolve);
      this.socket.once('error', reject);
    });
    this.socket.on('data', (chunk) => this.onData(chunk));
    this.socket.on('error', (err) => this.waiting.splice(0).forEach((w) => w.reject(err)));
    if (this.password) {
      await this.call(...(this.username ? ['AUTH', this.username, this.password]
                                        : ['AUTH', this.password]));
    }
    if (this.db) await this.call('SELECT', String(this.db));
  }

  // Commands are arrays of bulk strings; lengths are in bytes, not characters.
  call(...args) {
    const parts = [`*${args.length}\r\n`];
    for (const arg of args) parts.push(`$${Buffer.byteLength(arg, 'utf8')}\r\n${arg}\r\n`);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(parts.join(''), 'utf8');
    });
  }

  onData(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const parsed = parseReply(this.buffer, 0);
      if (!parsed) return;
      this.buffer = this.buffer.subarray(parsed.end);
      const waiter = this.waiting.shift();
      if (parsed.value instanceof Error) waiter.reject(parsed.value);
      else waiter.resolve(parsed.value);
    }
  }

  close() { if (this.socket) this.socket.destroy(); }
}

// One reply starting at `pos`: {value, end}, or null when more bytes are needed.
function parseReply(buf, pos) {
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return null;
  const kind = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  if (kind === '+') return { value: line, end: next };
  if (kind === '-') return { value: new Error(`Redis: ${line}`), end: next };
  if (kind === ':') return { value: Number(line), end: next };
  if (kind === '$') {
    const len = Number(line);
    if (len < 0) return { value: null, end: next };
    if (buf.length < next + len + 2) return null;
    return { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
  }
  if (kind === '*') {
    const n = Number(line);
    const items = [];
    let at = next;
    for (let i = 0; i < n; i++) {
      const item = parseReply(buf, at);
      if (!item) return null;
      items.push(item.value);
      at = item.end;
    }
    return { value: n < 0 ? null : items, end: at };
  }
  return { value: new Error(`unexpected reply type ${kind}`), end: next };
}

// --- the Celery message ----------------------------------------------------------

// The message as producer/protocol.py builds it: the body is base64 of the JSON
// [args, kwargs, embed]; kwargsrepr shows the text's length, never the text.
function taskMessage(kwargs, taskId) {
  const body = JSON.stringify([[], kwargs,
    { callbacks: null, errbacks: null, chain: null, chord: null }]);
  const shown = { ...kwargs, text: `<${[...kwargs.text].length} chars>` };
  return JSON.stringify({
    body: Buffer.from(body, 'utf8').toString('base64'),
    'content-encoding': 'utf-8',
    'content-type': 'application/json',
    headers: {
      lang: 'py', task: TASK, id: taskId, shadow: null, eta: null, expires: null,
      group: null, group_index: null, retries: 0, timelimit: [null, null],
      root_id: taskId, parent_id: null, argsrepr: '()',
      kwargsrepr: JSON.stringify(shown),
      origin: `tiqu-node@${os.hostname()}:${process.pid}`, ignore_result: false,
    },
    properties: {
      correlation_id: taskId, reply_to: null, delivery_mode: 2,
      delivery_info: { exchange: '', routing_key: QUEUE },
      priority: 0, body_encoding: 'base64', delivery_tag: crypto.randomUUID(),
    },
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const redis = new Redis(args.url);
  try {
    await redis.connect();
    const taskId = crypto.randomUUID();
    await redis.call('LPUSH', QUEUE, taskMessage({ text: args.text, id: args.id ?? null }, taskId));
    const deadline = Date.now() + args.timeoutS * 1000;
    for (;;) {
      const raw = await redis.call('GET', RESULT_PREFIX + taskId);
      if (raw !== null) {
        const meta = JSON.parse(raw);  // {status: "SUCCESS", result: <envelope>, ...}
        process.stdout.write(JSON.stringify(meta.result) + '\n');
        return 0;
      }
      if (Date.now() > deadline) {
        process.stderr.write(`no result for task ${taskId} after ${args.timeoutS} s\n`);
        return 1;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    redis.close();
  }
}

main().then((code) => { process.exitCode = code; }, (err) => {
  // The error's text only: never the complaint, never the URL (it holds the password).
  process.stderr.write(`enqueue.js: ${err.message}\n`);
  process.exitCode = 1;
});
