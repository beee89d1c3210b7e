// BullMQ, the Node.js peer of eventbus-bench: one scenario per run, one JSON
// object on stdout (the same shape as bench/peers/rust).
//
//   node bench.mjs <publish-batch|publish-single|publish-consume-ack>
//       --redis-url URL --prefix KEYPREFIX --events N --payload BYTES --batch N
//       --concurrency N --publishers N
//
// CPU is process.cpuUsage() over the timed part; RSS is the process's peak
// (resourceUsage().maxRSS). Jobs carry the same JSON as eventbus's `data`,
// plus the send time so the worker can measure add → handler latency.
// Completed jobs are removed (removeOnComplete), BullMQ's fastest setting.

import { Queue, Worker } from 'bullmq';

function parse(argv) {
  const [scenario, ...rest] = argv;
  const o = {
    scenario, redisUrl: 'redis://127.0.0.1:6379', prefix: 'peers', events: 100000,
    payload: 200, batch: 1000, concurrency: 512, publishers: 50,
  };
  for (let i = 0; i < rest.length; i += 2) {
    const [flag, v] = [rest[i], rest[i + 1]];
    const key = { '--redis-url': 'redisUrl', '--prefix': 'prefix', '--events': 'events',
      '--payload': 'payload', '--batch': 'batch', '--concurrency': 'concurrency',
      '--publishers': 'publishers' }[flag];
    if (!key || v === undefined) throw new Error(`bad flag ${flag}`);
    o[key] = key === 'redisUrl' || key === 'prefix' ? v : Number(v);
  }
  return o;
}

function connection(url) {
  const u = new URL(url);
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    password: u.password ? decodeURIComponent(u.password) : undefined,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    maxRetriesPerRequest: null,
  };
}

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

function job(seq, payload) {
  return {
    work_item_id: `wi-${seq % 10000}`, seq, sent_us: nowUs(),
    pad: 'x'.repeat(Math.max(0, payload - 75)),
  };
}

function summary(lat) {
  if (lat.length === 0) return null;
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))];
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: lat[lat.length - 1] };
}

function clock() {
  const started = performance.now();
  const cpu = process.cpuUsage();
  return (events, lat, note) => {
    const used = process.cpuUsage(cpu);
    return {
      events, seconds: (performance.now() - started) / 1000, latency_us: summary(lat),
      cpu_seconds: (used.user + used.system) / 1e6,
      peak_rss_kib: process.resourceUsage().maxRSS, note,
    };
  };
}

async function addSingle(queue, o, lat) {
  let next = 0;
  const worker = async () => {
    for (;;) {
      const seq = next++;
      if (seq >= o.events) return;
      const t = performance.now();
      await queue.add('event', job(seq, o.payload), { removeOnComplete: true });
      if (lat) lat.push(Math.round((performance.now() - t) * 1000));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.publishers) }, worker));
}

async function addBulk(queue, o, lat) {
  for (let seq = 0; seq < o.events; seq += o.batch) {
    const end = Math.min(o.events, seq + o.batch);
    const jobs = [];
    for (let i = seq; i < end; i++) {
      jobs.push({ name: 'event', data: job(i, o.payload), opts: { removeOnComplete: true } });
    }
    const t = performance.now();
    await queue.addBulk(jobs);
    const us = Math.round((performance.now() - t) * 1000);
    if (lat) for (let i = seq; i < end; i++) lat.push(us);
  }
}

async function main() {
  const o = parse(process.argv.slice(2));
  const conn = connection(o.redisUrl);
  const name = 'jobs';
  const queue = new Queue(name, { connection: conn, prefix: o.prefix });
  await queue.waitUntilReady();
  let result;
  if (o.scenario === 'publish-batch') {
    const lat = [];
    const done = clock();
    await addBulk(queue, o, lat);
    result = done(o.events, lat, `addBulk of ${o.batch} (one batch at a time)`);
  } else if (o.scenario === 'publish-single') {
    const lat = [];
    const done = clock();
    await addSingle(queue, o, lat);
    result = done(o.events, lat, `add, ${o.publishers} at once`);
  } else if (o.scenario === 'publish-consume-ack') {
    const lat = [];
    let handled = 0;
    let finish;
    const finished = new Promise((resolve) => { finish = resolve; });
    const worker = new Worker(name, async (j) => {
      lat.push(nowUs() - j.data.sent_us);
      handled += 1;
      if (handled >= o.events) finish();
    }, { connection: conn, prefix: o.prefix, concurrency: o.concurrency, removeOnComplete: { count: 0 } });
    await worker.waitUntilReady();
    const done = clock();
    await addBulk(queue, o, null);
    await finished;
    result = done(handled, lat,
      `Worker concurrency ${o.concurrency}; added with addBulk of ${o.batch}`);
    await worker.close(true);
  } else {
    throw new Error(`unknown scenario ${o.scenario}`);
  }
  await queue.obliterate({ force: true }).catch(() => {});
  await queue.close();
  console.log(JSON.stringify(result));
  process.exit(0);
}

main().catch((e) => {
  console.error(`bullmq peer: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
