/**
 * Soak test (issue 15): `npm run soak -- --minutes N --concurrency C` starts `sliceserve serve`
 * on 127.0.0.1 (stories260K dense + sliced at 0.25, unless --url names a running loopback
 * server), runs C clients for N minutes, each looping over a mix of JSON completions, SSE
 * streams and WebSocket streams (about 10 % cancelled midway, every 10th a greedy golden
 * check), samples the server's RSS every few seconds, and writes
 * `loadtests/reports/soak-<time>.json` and `.md`: RSS over time, outcomes per kind, golden
 * checks, the gauges after the run, and a verdict. PASS: no failed request, every golden check
 * equal, the running / waiting gauges back to 0, and every RSS sample after the warm-up
 * (minute 5, or the first third of a shorter run) within 10 % of the final RSS.
 */
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { assertLoopback } from './fuzz.js';
import { ServerProcess, freePort, waitForServer } from './server-process.js';
import { sseEvents } from './sse.js';

/** Options of {@link runSoak}. */
export interface SoakOptions {
  url: string;
  models: string[];
  minutes: number;
  concurrency: number;
  /** RSS of the server process in bytes, or null when it cannot be read. */
  rss: () => number | null;
  /** Seconds between RSS samples (default 5). */
  sampleS?: number;
  /** Deterministic mix (default seed 15). */
  seed?: number;
  onSample?: (s: { t: number; rssMB: number | null; done: number; failed: number }) => void;
}

type Kind = 'json' | 'sse' | 'ws';
/** Per kind: completed, cancelled on purpose, failed. */
type Counts = Record<Kind, { ok: number; cancelled: number; failed: number }>;

/** What a soak measured. */
export interface SoakResult {
  minutes: number;
  concurrency: number;
  requests: number;
  counts: Counts;
  failures: string[];
  golden: { checks: number; mismatches: number };
  /** RSS samples: seconds since start, MB. */
  rss: { t: number; mb: number }[];
  warmupS: number;
  /** Largest |sample / final - 1| after the warm-up. */
  rssDriftAfterWarmup: number | null;
  gaugesAfter: Record<string, number>;
  verdict: 'PASS' | 'FAIL';
  reasons: string[];
}

const PROMPTS = ['Once upon a time', 'The little dog', 'One day, Lily went to the park', 'Tom had a red ball.', 'The sun was hot and', 'Mia and her mom'];

/** A small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** RSS in bytes of process `pid` from /proc (Linux), or null. */
export function procRss(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

async function goldenText(url: string, model: string, transport: Kind): Promise<string> {
  const body = { model, prompt: 'Once upon a time', max_tokens: 32, temperature: 0 };
  if (transport === 'json') {
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(60_000) });
    if (res.status !== 200) throw new Error(`golden: status ${res.status}`);
    return ((await res.json()) as { choices: { text: string }[] }).choices[0].text;
  }
  const r = transport === 'sse' ? await sseRequest(url, body, false) : await wsRequest(url, body, false);
  if (r.error) throw new Error(`golden over ${transport}: ${r.error}`);
  return r.text;
}

async function sseRequest(url: string, body: object, cancel: boolean): Promise<{ text: string; error: string | null; cancelled: boolean }> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 120_000);
  let text = '';
  try {
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }), signal: controller.signal });
    if (res.status !== 200 || !res.body) return { text, error: `status ${res.status}: ${(await res.text()).slice(0, 200)}`, cancelled: false };
    let chunks = 0;
    for await (const ev of sseEvents(res.body)) {
      if (ev.data === '[DONE]') return { text, error: null, cancelled: false };
      const parsed = JSON.parse(ev.data) as { choices?: { text: string }[]; error?: unknown };
      if (parsed.error) return { text, error: `error event ${JSON.stringify(parsed.error)}`, cancelled: false };
      text += parsed.choices?.[0]?.text ?? '';
      if (cancel && ++chunks === 3) {
        controller.abort();
        return { text, error: null, cancelled: true };
      }
    }
    return { text, error: 'the stream ended without [DONE]', cancelled: false };
  } catch (err) {
    if (cancel && controller.signal.aborted) return { text, error: null, cancelled: true };
    return { text, error: (err as Error).message, cancelled: false };
  } finally {
    clearTimeout(timer);
  }
}

let wsCounter = 0;
function wsRequest(url: string, body: object, cancel: boolean): Promise<{ text: string; error: string | null; cancelled: boolean }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/stream`);
    const id = `soak-${++wsCounter}`;
    let text = '';
    let tokens = 0;
    let settled = false;
    const finish = (r: { error: string | null; cancelled: boolean }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.close();
      resolve({ text, ...r });
    };
    const timer = setTimeout(() => finish({ error: 'timeout', cancelled: false }), 120_000);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'completion', id, ...body })));
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString()) as { type: string; text?: string; finish_reason?: string; error?: unknown };
      if (msg.type === 'token') {
        text += msg.text ?? '';
        if (cancel && ++tokens === 3) ws.send(JSON.stringify({ type: 'cancel', id }));
      } else if (msg.type === 'done') finish({ error: null, cancelled: msg.finish_reason === 'cancelled' });
      else if (msg.type === 'error') finish({ error: JSON.stringify(msg.error), cancelled: false });
    });
    ws.on('error', (err) => finish({ error: err.message, cancelled: false }));
    ws.on('close', (code) => finish({ error: `closed ${code}`, cancelled: false }));
  });
}

async function jsonRequest(url: string, body: object, cancel: boolean): Promise<{ text: string; error: string | null; cancelled: boolean }> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), cancel ? 30 : 120_000);
  try {
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: controller.signal });
    const text = await res.text();
    if (res.status !== 200) return { text: '', error: `status ${res.status}: ${text.slice(0, 200)}`, cancelled: false };
    return { text: (JSON.parse(text) as { choices: { text: string }[] }).choices[0].text, error: null, cancelled: false };
  } catch (err) {
    if (cancel && controller.signal.aborted) return { text: '', error: null, cancelled: true };
    return { text: '', error: (err as Error).message, cancelled: false };
  } finally {
    clearTimeout(timer);
  }
}

/** The sliceserve_ gauges that must be back to 0 after the run, from /metrics. */
async function gauges(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(sliceserve_\w*(?:running|waiting|kv_cache_usage)\w*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m) out[`${m[1]}${m[2] ?? ''}`] = Number(m[3]);
  }
  return out;
}

/**
 * Runs the soak against a started server.
 * @throws Error for a non-loopback URL or when the golden texts cannot be taken
 */
export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  assertLoopback(opts.url);
  const url = opts.url.replace(/\/$/, '');
  const expected = new Map<string, string>();
  for (const m of opts.models) expected.set(m, await goldenText(url, m, 'json'));
  const counts: Counts = { json: { ok: 0, cancelled: 0, failed: 0 }, sse: { ok: 0, cancelled: 0, failed: 0 }, ws: { ok: 0, cancelled: 0, failed: 0 } };
  const failures: string[] = [];
  const golden = { checks: 0, mismatches: 0 };
  const rss: { t: number; mb: number }[] = [];
  const t0 = performance.now();
  const deadline = t0 + opts.minutes * 60_000;
  const elapsed = () => (performance.now() - t0) / 1000;
  let requests = 0;
  const sample = () => {
    const bytes = opts.rss();
    if (bytes !== null) rss.push({ t: Math.round(elapsed()), mb: Math.round(bytes / 1e5) / 10 });
    const failed = counts.json.failed + counts.sse.failed + counts.ws.failed;
    opts.onSample?.({ t: Math.round(elapsed()), rssMB: bytes === null ? null : Math.round(bytes / 1e5) / 10, done: requests, failed });
  };
  sample();
  const sampler = setInterval(sample, (opts.sampleS ?? 5) * 1000);

  const client = async (c: number) => {
    const rand = prng((opts.seed ?? 15) * 1000 + c);
    for (let i = 0; performance.now() < deadline; i++) {
      const kind: Kind = (['json', 'sse', 'ws'] as const)[Math.floor(rand() * 3)];
      const model = opts.models[Math.floor(rand() * opts.models.length)];
      const isGolden = i % 10 === 9;
      const cancel = !isGolden && rand() < 0.1;
      const body = isGolden
        ? { model, prompt: 'Once upon a time', max_tokens: 32, temperature: 0 }
        : { model, prompt: PROMPTS[Math.floor(rand() * PROMPTS.length)], max_tokens: 16 + Math.floor(rand() * 112), temperature: 0.8, top_p: 0.95, seed: Math.floor(rand() * 1e6) };
      const r = kind === 'json' ? await jsonRequest(url, body, cancel) : kind === 'sse' ? await sseRequest(url, body, cancel) : await wsRequest(url, body, cancel);
      requests++;
      if (r.error) {
        counts[kind].failed++;
        if (failures.length < 50) failures.push(`${kind} ${model}: ${r.error}`);
      } else if (r.cancelled) counts[kind].cancelled++;
      else {
        counts[kind].ok++;
        if (isGolden) {
          golden.checks++;
          if (r.text !== expected.get(model)) {
            golden.mismatches++;
            if (failures.length < 50) failures.push(`golden mismatch (${kind} ${model}): ${JSON.stringify(r.text)}`);
          }
        }
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, (_, c) => client(c)));
  clearInterval(sampler);
  await new Promise((r) => setTimeout(r, 2000)); // let cancelled requests leave the gauges
  sample();
  const gaugesAfter = await gauges(url);

  const warmupS = Math.min(300, (opts.minutes * 60) / 3);
  const final = rss.at(-1)?.mb;
  const after = rss.filter((s) => s.t >= warmupS);
  const rssDriftAfterWarmup = final && after.length ? Math.max(...after.map((s) => Math.abs(s.mb / final - 1))) : null;
  const failedTotal = counts.json.failed + counts.sse.failed + counts.ws.failed;
  const reasons: string[] = [];
  if (failedTotal > 0) reasons.push(`${failedTotal} failed requests`);
  if (golden.mismatches > 0) reasons.push(`${golden.mismatches} golden mismatches`);
  if (golden.checks === 0) reasons.push('no golden check ran');
  const stuck = Object.entries(gaugesAfter).filter(([, v]) => v !== 0);
  if (stuck.length) reasons.push(`gauges not back to 0: ${stuck.map(([k, v]) => `${k}=${v}`).join(', ')}`);
  if (rssDriftAfterWarmup === null) reasons.push('no RSS samples');
  else if (rssDriftAfterWarmup > 0.1) reasons.push(`RSS after the warm-up moved up to ${(100 * rssDriftAfterWarmup).toFixed(1)} % from its final value (limit 10 %)`);
  return { minutes: opts.minutes, concurrency: opts.concurrency, requests, counts, failures, golden, rss, warmupS, rssDriftAfterWarmup, gaugesAfter, verdict: reasons.length ? 'FAIL' : 'PASS', reasons };
}

/** The report as markdown: verdict, outcomes, RSS over time. */
export function soakMarkdown(r: SoakResult, context: string): string {
  const rows = (['json', 'sse', 'ws'] as const).map((k) => `| ${k} | ${r.counts[k].ok} | ${r.counts[k].cancelled} | ${r.counts[k].failed} |`);
  const step = Math.max(1, Math.ceil(r.rss.length / 40));
  const rssRows = r.rss.filter((_, i) => i % step === 0 || i === r.rss.length - 1).map((s) => `| ${s.t} | ${s.mb} |`);
  return [
    `# Soak: ${r.minutes} min at concurrency ${r.concurrency}: ${r.verdict}`,
    '',
    context,
    '',
    `${r.requests} requests; golden checks ${r.golden.checks}, mismatches ${r.golden.mismatches}; RSS drift after the warm-up (${r.warmupS} s): ${r.rssDriftAfterWarmup === null ? 'n/a' : `${(100 * r.rssDriftAfterWarmup).toFixed(1)} %`}.`,
    r.reasons.length ? `\nWhy it failed: ${r.reasons.join('; ')}.` : '',
    '',
    '| kind | completed | cancelled (on purpose) | failed |',
    '|---|---|---|---|',
    ...rows,
    '',
    '| seconds | server RSS (MB) |',
    '|---|---|',
    ...rssRows,
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const arg = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const minutes = Number(arg('minutes') ?? 30);
  const concurrency = Number(arg('concurrency') ?? 32);
  if (!(minutes > 0 && minutes <= 24 * 60) || !(Number.isInteger(concurrency) && concurrency >= 1 && concurrency <= 1024)) {
    console.error('soak: --minutes must be in (0, 1440], --concurrency an integer 1..1024');
    return 2;
  }
  const root = path.resolve(__dirname, '..', '..');
  const outDir = path.join(root, 'loadtests', 'reports');
  fs.mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  let url = arg('url');
  let server: ServerProcess | null = null;
  let pid: number | undefined = arg('pid') ? Number(arg('pid')) : undefined;
  const models = (arg('models') ?? 'stories260K,stories260K-sliced-0.25').split(',');
  if (!url) {
    const port = await freePort();
    const logFile = path.join(outDir, `soak-${stamp}-server.log`);
    const cacheDir = path.join(root, '.cache', 'sliceserve');
    server = ServerProcess.start(process.execPath, [path.join(root, 'bin', 'sliceserve.js'), 'serve', '--host', '127.0.0.1', '--port', String(port), '--cache-dir', cacheDir, '--log-level', 'warn'], { cwd: root, logFile });
    pid = server.pid;
    url = `http://127.0.0.1:${port}`;
    console.log(`soak: starting the server (log ${path.relative(root, logFile)})`);
    await waitForServer(url, (m) => models.every((id) => m.some((c) => c.id === id)), 600, { alive: () => server!.failure() });
  }
  assertLoopback(url);
  console.log(`soak: ${minutes} min, ${concurrency} clients against ${url} (${models.join(', ')})`);
  const result = await runSoak({
    url,
    models,
    minutes,
    concurrency,
    rss: () => procRss(pid),
    onSample: (s) => {
      if (s.t % 60 < 5) console.log(`  t=${s.t}s rss=${s.rssMB ?? '?'} MB requests=${s.done} failed=${s.failed}`);
    },
  });
  const crashed = server?.failure() ?? null;
  if (crashed) {
    result.verdict = 'FAIL';
    result.reasons.push('the server exited during the soak');
  }
  await server?.stop();
  const json = path.join(outDir, `soak-${stamp}.json`);
  fs.writeFileSync(json, JSON.stringify(result, null, 2) + '\n');
  const md = json.replace(/\.json$/, '.md');
  fs.writeFileSync(md, soakMarkdown(result, `Server: \`sliceserve serve\` on ${url}, models ${models.join(', ')}; node ${process.version}; measured on this machine while it was shared.`));
  console.log(`soak: ${result.verdict}: ${result.requests} requests, failed ${result.counts.json.failed + result.counts.sse.failed + result.counts.ws.failed}, golden ${result.golden.checks - result.golden.mismatches}/${result.golden.checks}, RSS ${result.rss[0]?.mb} -> ${result.rss.at(-1)?.mb} MB, drift after warm-up ${result.rssDriftAfterWarmup === null ? 'n/a' : `${(100 * result.rssDriftAfterWarmup).toFixed(1)} %`}${result.reasons.length ? ` (${result.reasons.join('; ')})` : ''}`);
  console.log(`soak: wrote ${path.relative(root, json)} and ${path.relative(root, md)}`);
  return result.verdict === 'PASS' ? 0 : 1;
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
    console.error(`soak: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
