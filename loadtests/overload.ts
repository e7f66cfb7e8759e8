/**
 * Overload (issue 15): `npm run overload -- --burst 10000 --max-queue 16` starts `sliceserve
 * serve --dense-only` on 127.0.0.1 with a queue limit, measures the idle latency of a greedy
 * completion (sequential requests), then sends a burst of WebSocket completions as fast as the
 * sockets take them and records, per message, how fast a 429 came back, and for the admitted
 * ones the end-to-end latency and the time per output token. Writes
 * `loadtests/reports/overload-<time>.json` and prints the ratios to idle.
 */
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { assertLoopback } from './fuzz.js';
import { ServerProcess, freePort, waitForServer } from './server-process.js';

/** Percentile of sorted values (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const summary = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: round(percentile(s, 50)), p90: round(percentile(s, 90)), p99: round(percentile(s, 99)), max: round(s.at(-1) ?? NaN) };
};
const round = (x: number) => Math.round(x * 10) / 10;

/** One WebSocket completion's timings (ms from send). */
interface Outcome {
  kind: 'done' | '429' | 'error';
  ms: number;
  tokens: number;
  firstTokenMs: number | null;
}

function socket(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/stream`);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** Sends `count` completions over `sockets` sockets at once; resolves when every one ended. */
async function burst(url: string, count: number, sockets: number, body: object): Promise<Outcome[]> {
  const wss = await Promise.all(Array.from({ length: sockets }, () => socket(url)));
  const outcomes: Outcome[] = [];
  await Promise.all(
    wss.map(
      (ws, s) =>
        new Promise<void>((resolve) => {
          const sent = new Map<string, { t: number; tokens: number; first: number | null }>();
          let left = 0;
          ws.on('message', (data) => {
            const msg = JSON.parse(data.toString()) as { type: string; id: string; error?: { status?: number } };
            const r = sent.get(msg.id);
            if (!r) return;
            const now = performance.now();
            if (msg.type === 'token') {
              r.tokens++;
              r.first ??= now - r.t;
              return;
            }
            if (msg.type !== 'done' && msg.type !== 'error') return;
            outcomes.push({ kind: msg.type === 'done' ? 'done' : msg.error?.status === 429 ? '429' : 'error', ms: now - r.t, tokens: r.tokens, firstTokenMs: r.first });
            sent.delete(msg.id);
            if (--left === 0) resolve();
          });
          const mine = Math.floor(count / sockets) + (s < count % sockets ? 1 : 0);
          left = mine;
          if (mine === 0) resolve();
          for (let i = 0; i < mine; i++) {
            const id = `b${s}-${i}`;
            sent.set(id, { t: performance.now(), tokens: 0, first: null });
            ws.send(JSON.stringify({ type: 'completion', id, ...body }));
          }
        }),
    ),
  );
  for (const ws of wss) ws.close();
  return outcomes;
}

/** One completed request as the server logged it (server/completion-run.ts RunSummary), ms. */
interface ServerTiming {
  queue_ms: number;
  ttft_ms: number;
  tpot_ms: number;
  e2e_ms: number;
}

/** The completed requests ('completion' lines, outcome ok) of the server log, in log order. */
function serverTimings(logFile: string): ServerTiming[] {
  const text = fs.readFileSync(logFile, 'utf8');
  const out: ServerTiming[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const r = JSON.parse(line) as { msg?: string; outcome?: string } & Partial<ServerTiming>;
      if (r.msg === 'completion' && r.outcome === 'ok' && typeof r.e2e_ms === 'number') out.push({ queue_ms: r.queue_ms ?? 0, ttft_ms: r.ttft_ms ?? NaN, tpot_ms: r.tpot_ms ?? NaN, e2e_ms: r.e2e_ms });
    } catch {
      /* a partial last line */
    }
  }
  return out;
}

/**
 * Percentiles of the server's timings; service = e2e - time waiting in the queue, first token
 * after admission = TTFT - queue wait.
 */
function serverSummary(ts: ServerTiming[]) {
  return {
    queue_ms: summary(ts.map((t) => t.queue_ms)),
    ttft_ms: summary(ts.map((t) => t.ttft_ms)),
    admitted_ttft_ms: summary(ts.map((t) => t.ttft_ms - t.queue_ms)),
    tpot_ms: summary(ts.map((t) => t.tpot_ms)),
    service_ms: summary(ts.map((t) => t.e2e_ms - t.queue_ms)),
    e2e_ms: summary(ts.map((t) => t.e2e_ms)),
  };
}

async function main(argv: string[]): Promise<number> {
  const arg = (name: string, dflt: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : dflt;
  };
  const count = Number(arg('burst', '10000'));
  const maxQueue = Number(arg('max-queue', '16'));
  const maxBatch = Number(arg('max-batch-size', '16'));
  const sockets = Number(arg('sockets', '10'));
  const maxTokens = Number(arg('max-tokens', '32'));
  const root = path.resolve(__dirname, '..', '..');
  const outDir = path.join(root, 'loadtests', 'reports');
  fs.mkdirSync(outDir, { recursive: true });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  assertLoopback(url);
  const logFile = path.join(outDir, 'overload-server.log');
  fs.writeFileSync(logFile, '');
  const server = ServerProcess.start(process.execPath, [path.join(root, 'bin', 'sliceserve.js'), 'serve', '--dense-only', '--host', '127.0.0.1', '--port', String(port), '--max-queue', String(maxQueue), '--max-batch-size', String(maxBatch), '--log-level', 'info'], { cwd: root, logFile });
  try {
    await waitForServer(url, (m) => m.length > 0, 120, { alive: () => server.failure() });
    const body = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: maxTokens, temperature: 0, ignore_eos: true };
    // Idle: one request at a time, over the same transport.
    await burst(url, 3, 1, body); // warm-up (3 requests: `warmUp` below)
    const idle: Outcome[] = [];
    for (let i = 0; i < 20; i++) idle.push(...(await burst(url, 1, 1, body)));
    // At capacity without overload: waves of max-batch-size requests at once (one full batch, no
    // 429), the same batch width the admitted requests of the burst decode at.
    const capacity: Outcome[] = [];
    for (let i = 0; i < 5; i++) capacity.push(...(await burst(url, maxBatch, Math.min(maxBatch, sockets), body)));
    const t0 = performance.now();
    const outcomes = await burst(url, count, sockets, body);
    const burstS = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 500)); // the last log lines
    // Each phase ends before the next starts, so the log's completions are in phase order; split
    // them by count (the log is written asynchronously: a byte offset taken at a phase's end can
    // miss its last lines).
    const logged = serverTimings(logFile);
    const warmUp = 3;
    const serverIdle = logged.slice(warmUp, warmUp + idle.length);
    const serverCapacity = logged.slice(warmUp + idle.length, warmUp + idle.length + capacity.length);
    const serverBurst = logged.slice(warmUp + idle.length + capacity.length);
    const admitted = outcomes.filter((o) => o.kind === 'done');
    const refused = outcomes.filter((o) => o.kind === '429');
    const tpot = (o: Outcome) => (o.firstTokenMs !== null && o.tokens > 1 ? (o.ms - o.firstTokenMs) / (o.tokens - 1) : NaN);
    const report = {
      burst: count,
      sockets,
      max_queue: maxQueue,
      max_batch_size: maxBatch,
      max_tokens: maxTokens,
      burst_seconds: round(burstS),
      outcomes: { admitted: admitted.length, refused_429: refused.length, other_errors: outcomes.filter((o) => o.kind === 'error').length },
      idle_e2e_ms: summary(idle.map((o) => o.ms)),
      idle_tpot_ms: summary(idle.map(tpot)),
      time_to_429_ms: summary(refused.map((o) => o.ms)),
      admitted_e2e_ms: summary(admitted.map((o) => o.ms)),
      admitted_ttft_ms: summary(admitted.map((o) => o.firstTokenMs ?? NaN)),
      admitted_tpot_ms: summary(admitted.map(tpot).filter((x) => !Number.isNaN(x))),
      // The server's own timings (its request log, from when it read the message): the client's
      // figures above also hold the time the server took to read the 10,000 messages before each.
      server_idle: serverSummary(serverIdle),
      server_capacity: serverSummary(serverCapacity),
      server_admitted: serverSummary(serverBurst),
      capacity_outcomes: { completed: capacity.filter((o) => o.kind === 'done').length, other: capacity.filter((o) => o.kind !== 'done').length },
      crashed: server.failure() !== null,
    };
    const over = (a: number, b: number) => Math.round((a / b) * 100) / 100;
    const ratio = {
      // The target: admitted requests within 2x of the server without the flood.
      server_service_p50_over_capacity: over(report.server_admitted.service_ms.p50, report.server_capacity.service_ms.p50),
      server_tpot_p50_over_capacity: over(report.server_admitted.tpot_ms.p50, report.server_capacity.tpot_ms.p50),
      server_admitted_ttft_p50_over_capacity: over(report.server_admitted.admitted_ttft_ms.p50, report.server_capacity.admitted_ttft_ms.p50),
      admitted_tpot_p50_over_idle: round((report.admitted_tpot_ms.p50 / report.idle_tpot_ms.p50) * 100) / 100,
      admitted_e2e_p50_over_idle: round((report.admitted_e2e_ms.p50 / report.idle_e2e_ms.p50) * 100) / 100,
      server_tpot_p50_over_idle: round((report.server_admitted.tpot_ms.p50 / report.server_idle.tpot_ms.p50) * 100) / 100,
      server_service_p50_over_idle: round((report.server_admitted.service_ms.p50 / report.server_idle.service_ms.p50) * 100) / 100,
    };
    const file = path.join(outDir, `overload-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, JSON.stringify({ ...report, ratio }, null, 2) + '\n');
    console.log(JSON.stringify({ ...report, ratio }, null, 2));
    console.log(`overload: wrote ${path.relative(root, file)}`);
    return report.crashed || report.outcomes.other_errors > 0 ? 1 : 0;
  } finally {
    await server.stop();
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
    console.error(`overload: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
