/**
 * report.md and BENCHMARKS.md, rendered from a report (never typed in by hand).
 */
import { forLabels, modelLabel, precisionLabel, rowLabel } from './chart.js';
import { machineWasBusy } from './machine.js';
import { REFERENCE_READ_BYTES_PER_S, type Report, type RunStats } from './report.js';

/** Options of {@link renderMarkdown}. */
export interface MarkdownOptions {
  /** Top heading. */
  title: string;
  /** Relative path of the chart SVG from the Markdown file. */
  chartPath: string;
  /** Where the report.json this was rendered from lives (shown as the source). */
  source?: string;
}

const ms = (v: number | undefined | null): string => (v === undefined || v === null ? '–' : (v * 1000).toFixed(1));
const num = (v: number | null | undefined, digits = 1): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits));
const pct = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : `${(v * 100).toFixed(0)} %`);
/** One decimal, for verdicts against a threshold (89.6 % must not read as 90 %). */
const pct1 = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : `${(v * 100).toFixed(1)} %`);

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((h, i) => (i === 0 ? '---' : '---:'))), ...rows.map(line)].join('\n');
}

type Precision = 'none' | 'int8' | 'int4';

/** "dense (`id`)", "sliced 25 % int4 (`id`)", or "NAME (peer)" for a peer's row. */
function label(r: { sparsity: number; model: string; peer?: boolean; precision?: Precision }): string {
  return r.peer ? rowLabel(r) : `${modelLabel(r.sparsity, r.precision)} (\`${r.model}\`)`;
}

type Peer = Report['peers'][number];

/** The peers measured in this run (`--peer`); empty when the report shows issue 5's figures. */
function measuredPeers(report: Report): Peer[] {
  return report.peers.filter((p) => p.measured === true);
}

/** How a peer is named in tables: its name, "(peer)", and where its figures come from when not measured here. */
function peerName(p: Peer): string {
  return p.measured === true ? `${p.name} (peer)` : `${p.name} (peer, issue 5, not this run)`;
}

/** The cover line: what ran where. */
function overview(report: Report): string {
  const m = report.machine;
  const shape = report.request_shape;
  const models = report.models.map((x) => `${x.sparsity === 0 ? `dense (d = ${x.hidden_size})` : `sliced ${x.sparsity} (d' = ${x.hidden_size})`}${x.precision ? ` ${precisionLabel(x.precision)}` : ''}`).join(', ');
  return [
    `- **Model**: ${report.model.preset ? `synthetic \`${report.model.preset}\`` : (report.model.dir ?? 'served at --url')}; measured: ${models}.`,
    `- **Requests**: ${shape.prompt_tokens}-token prompts, ${shape.output_tokens} output tokens, \`ignore_eos\`, streaming (SSE), temperature ${shape.temperature}; prefix caching ${shape.prefix_caching}. ${measuredPeers(report).length > 0 ? `Peers measured in this run, interleaved with our models and sent the same requests: ${measuredPeers(report).map((p) => `\`${p.name}\` (${p.url})`).join(', ')}.` : 'Same shape as the llama.cpp peer measurement of issue 5 (no peer measured in this run).'}`,
    `- **Machine**: ${m.cpu_model}, ${m.cores} cores, ${(m.memory_bytes / 2 ** 30).toFixed(0)} GiB, ${m.os}, Node ${m.node}, onnxruntime-node ${m.onnxruntime_node ?? '?'}, execution provider \`${m.execution_provider}\`${hugePagesText(m.huge_pages)}.`,
    ...(machineWasBusy(m)
      ? [
          `- **Warning: the machine was busy** (1-minute load average ${num(m.load_average_start?.[0], 1)} at the start, ${num(m.load_average_end?.[0], 1)} at the end, on ${m.cores} cores): other processes competed for the CPU, so these figures are lower and noisier than on an idle machine.`,
        ]
      : []),
    `- **Run**: ${report.created}, commit ${report.git_commit ? '`' + report.git_commit.slice(0, 10) + '`' : 'unknown'}, ${num(report.wall_s, 0)} s of load${report.load_generator_cpu_s != null ? ` (the load generator itself used ${num(report.load_generator_cpu_s, 1)} CPU s, ${pct(report.load_generator_cpu_s / report.wall_s)} of one core)` : ''}; models interleaved at every concurrency level (round-robin, rotated each round).${report.options.interrupted === true ? ' **Interrupted (Ctrl-C): a partial run.**' : report.truncated ? ' **Truncated: the time limit stopped the run before every block ran.**' : ''}`,
  ].join('\n');
}

function headline(report: Report): string {
  const levels = [...new Set(report.runs.map((r) => r.concurrency))];
  const top = Math.max(...levels);
  const rows = report.runs
    .filter((r) => r.concurrency === top && !r.peer) // peers follow, from report.peers
    .map((r) => {
      const sp = report.speedup.find((s) => s.model === r.model && s.concurrency === top);
      return [
        label(r),
        num(r.output_tokens_per_s),
        sp ? `${num(sp.measured, 2)}x` : '1.00x',
        sp ? pairedCell(sp) : '–',
        sp ? `${num(sp.theoretical, 2)}x` : '–',
        sp ? pct(sp.fraction_of_theoretical) : '–',
        sp ? pct(pairedFraction(sp)) : '–',
        `${r.errors} / ${r.requests}`,
      ];
    });
  for (const p of report.peers) {
    const tps = p.output_tokens_per_s[String(top)];
    if (tps === undefined) continue;
    const run = p.measured === true ? report.runs.find((r) => r.peer === true && r.model === p.name && r.concurrency === top) : undefined;
    rows.push([peerName(p), num(tps), '', '', '', '', '', run ? `${run.errors} / ${run.requests}` : '']);
  }
  return (
    `At concurrency ${top} ("vs dense": pooled over all rounds; "paired": median of the per-round ratios, see below):\n\n` +
    table(['model', 'output tok/s', 'vs dense', 'paired', 'expected (FLOPs)', 'of expected', 'paired of expected', 'errors'], rows)
  );
}

type Speedup = Report['speedup'][number];

/** "1.31x (1.25-1.40, 4 rounds)": the paired median with the range of the round ratios. */
function pairedCell(sp: Speedup): string {
  const r = sp.round_ratios ?? [];
  if (sp.measured_paired_median == null || r.length === 0) return '–';
  return `${num(sp.measured_paired_median, 2)}x (${num(Math.min(...r), 2)}-${num(Math.max(...r), 2)}, ${r.length} round${r.length === 1 ? '' : 's'})`;
}

function pairedFraction(sp: Speedup): number | null {
  return sp.measured_paired_median == null ? null : sp.measured_paired_median / sp.theoretical;
}

/** The acceptance targets of issue 5, each with the measured figure and met / not met. */
function targets(report: Report): string {
  const lines: string[] = [];
  const top = Math.max(...report.runs.map((r) => r.concurrency));
  const verdict = (ok: boolean): string => (ok ? '**met**' : '**not met**');
  for (const sp of report.speedup.filter((x) => x.concurrency === top)) {
    const f = sp.fraction_of_theoretical;
    const pf = pairedFraction(sp);
    const paired = pf === null ? '' : `; paired median of the rounds ${num(sp.measured_paired_median, 3)}x = ${pct1(pf)}, ${verdict(pf >= 0.9)}`;
    lines.push(`- ${modelLabel(sp.sparsity, sp.precision)} at concurrency ${top} reaches >= 90 % of its expected speedup${sp.precision ? ` over dense ${precisionLabel(sp.precision)}` : ''} (${num(sp.theoretical, 3)}x): pooled ${num(sp.measured, 3)}x = ${pct1(f)}, ${verdict(f !== null && f >= 0.9)}${paired}.`);
  }
  // Issue 13: quantized dense models decode at batch 1 near the bound of their own weight bytes.
  for (const d of report.decode_batch1.filter((x) => x.sparsity === 0 && x.precision !== undefined && x.precision !== 'none')) {
    const f = d.fraction_of_bound;
    lines.push(`- ${modelLabel(0, d.precision)} decodes at batch 1 at >= 85 % of the bandwidth bound of its own weight bytes (${num(d.weight_bytes_per_token / 1e6, 1)} MB / token, bound ${num(d.bandwidth_bound_tokens_per_s)} tok/s): ${num(d.tokens_per_s)} tok/s = ${pct1(f)}, ${verdict(f !== null && f >= 0.85)}.`);
  }
  const ours = report.runs.filter((r) => !r.peer); // a peer's failures are its own (see Errors)
  const errors = ours.reduce((n, r) => n + r.errors, 0);
  lines.push(`- No failed request: ${errors} of ${ours.reduce((n, r) => n + r.requests, 0)} failed, ${verdict(errors === 0)}.`);
  for (const peer of report.peers) {
    const who = peer.measured === true ? `peer \`${peer.name}\` (measured in this run)` : 'llama.cpp (issue 5\'s figures, not this run)';
    // A peer whose name says its precision (q8_0, q4_0, f32) is compared with our models of that precision.
    const theirs = peerPrecision(peer.name);
    for (const m of report.models.filter((x) => theirs === null || x.precision === undefined || x.precision === theirs)) {
      const cmp = report.runs
        .filter((r) => !r.peer && r.model === m.id && (peer.output_tokens_per_s[String(r.concurrency)] ?? 0) > 0) // a peer level where nothing succeeded compares nothing
        .map((r) => ({ c: r.concurrency, ours: r.output_tokens_per_s, theirs: peer.output_tokens_per_s[String(r.concurrency)] }));
      if (cmp.length === 0) continue;
      const what = m.sparsity === 0 ? 'does not trail' : 'beats';
      const ok = cmp.every((x) => (m.sparsity === 0 ? x.ours >= x.theirs : x.ours > x.theirs));
      lines.push(`- ${modelLabel(m.sparsity, m.precision)} ${what} ${who} (${cmp.map((x) => `c=${x.c}: ${num(x.ours)} vs ${num(x.theirs)}`).join('; ')} tok/s): ${verdict(ok)}.`);
    }
  }
  return lines.join('\n');
}

/** The precision a peer's name says (llama.cpp file types: q8_0 -> int8, q4_0 / q4_k -> int4, f32), or null. */
export function peerPrecision(name: string): Precision | null {
  const n = name.toLowerCase();
  if (/q8_0|q8\b|int8/.test(n)) return 'int8';
  if (/q4_[0-9k]|q4\b|int4/.test(n)) return 'int4';
  if (/f32|fp32|float32/.test(n)) return 'none';
  return null;
}

/**
 * The sparsity x precision matrix: output tokens/s of every model at every concurrency level,
 * a row per sparsity and a column group per precision, and batch-1 decode against its bound.
 */
function matrixSection(report: Report): string {
  const precisions = [...new Set(report.models.map((m) => m.precision ?? 'none'))];
  if (precisions.length < 2) return '';
  const levels = [...new Set(report.runs.filter((r) => !r.peer).map((r) => r.concurrency))].sort((a, b) => a - b);
  const sparsities = [...new Set(report.models.map((m) => m.sparsity))].sort((a, b) => a - b);
  const model = (s: number, p: Precision) => report.models.find((m) => m.sparsity === s && (m.precision ?? 'none') === p);
  const header = ['model', ...precisions.flatMap((p) => levels.map((c) => `${precisionLabel(p)} c=${c}`))];
  const rows = sparsities.map((s) => [
    modelLabel(s),
    ...precisions.flatMap((p) =>
      levels.map((c) => {
        const m = model(s, p);
        const r = m ? report.runs.find((x) => !x.peer && x.model === m.id && x.concurrency === c) : undefined;
        const f32 = report.runs.find((x) => !x.peer && x.model === model(s, 'none')?.id && x.concurrency === c);
        if (!r) return '–';
        return p === 'none' || !f32 || f32.output_tokens_per_s === 0 ? num(r.output_tokens_per_s) : `${num(r.output_tokens_per_s)} (${num(r.output_tokens_per_s / f32.output_tokens_per_s, 2)}x)`;
      }),
    ),
  ]);
  const b1Header = ['model', ...precisions.map((p) => `${precisionLabel(p)}: MB / token`), ...precisions.map((p) => `${precisionLabel(p)}: tok/s (of bound)`)];
  const b1Rows = sparsities.map((s) => [
    modelLabel(s),
    ...precisions.map((p) => {
      const d = report.decode_batch1.find((x) => x.model === model(s, p)?.id);
      return d ? num(d.weight_bytes_per_token / 1e6, 1) : '–';
    }),
    ...precisions.map((p) => {
      const d = report.decode_batch1.find((x) => x.model === model(s, p)?.id);
      return d ? `${num(d.tokens_per_s)} (${pct(d.fraction_of_bound)})` : '–';
    }),
  ]);
  return [
    'Output tokens/s of every sparsity at every weight precision and concurrency level, all measured in this run, interleaved (in brackets: ratio to the float32 model of the same sparsity):',
    '',
    table(header, rows),
    '',
    'Batch-1 decode (1 / p50 TPOT at concurrency 1) against the bandwidth bound of each model\'s own weight bytes per token (float32, or quantized in the MatMulNBits layout: codes, float32 scales, zero points):',
    '',
    table(b1Header, b1Rows),
  ].join('\n');
}

function throughputTable(report: Report): string {
  return table(
    ['model', 'concurrency', 'requests', 'errors', 'req/s', 'output tok/s', 'blocks (slowest–fastest)', 'mean output tokens'],
    report.runs.map((r) => [
      label(r),
      String(r.concurrency),
      String(r.requests),
      `${r.errors} (${pct(r.error_rate)})`,
      num(r.requests_per_s, 2),
      num(r.output_tokens_per_s),
      r.block_output_tokens_per_s.length > 1 ? `${num(Math.min(...r.block_output_tokens_per_s))}–${num(Math.max(...r.block_output_tokens_per_s))}` : '–',
      num(r.requests - r.errors > 0 ? r.output_tokens / (r.requests - r.errors) : null),
    ]),
  );
}

function latencyTable(report: Report, keys: Array<keyof Pick<RunStats, 'ttft_s' | 'tpot_s' | 'itl_s' | 'e2e_s'>>): string {
  const names: Record<string, string> = { ttft_s: 'TTFT', tpot_s: 'TPOT', itl_s: 'ITL', e2e_s: 'e2e' };
  const header = ['model', 'conc.'];
  for (const k of keys) header.push(`${names[k]} mean`, 'p50', 'p90', 'p99');
  return table(
    header,
    report.runs.map((r) => {
      const row = [label(r), String(r.concurrency)];
      for (const k of keys) row.push(ms(r[k]?.mean), ms(r[k]?.p50), ms(r[k]?.p90), ms(r[k]?.p99));
      return row;
    }),
  );
}

function speedupTable(report: Report): string {
  if (report.speedup.length === 0) return '_No sliced model was measured._';
  return table(
    ['model', "d'", 'concurrency', 'expected (FLOPs)', 'measured (tok/s ratio)', 'of expected', 'paired (per-round median, range)', 'of expected'],
    report.speedup.map((s) => {
      const m = report.models.find((x) => x.id === s.model);
      return [label(s), String(m?.hidden_size ?? '?'), String(s.concurrency), `${num(s.theoretical, 3)}x`, `${num(s.measured, 3)}x`, pct(s.fraction_of_theoretical), pairedCell(s), pct(pairedFraction(s))];
    }),
  );
}

function peerTable(report: Report): string {
  const peers = report.peers;
  const ref = peers[0];
  if (!ref) return '';
  const levels = [...new Set(report.runs.map((r) => r.concurrency))].sort((a, b) => a - b);
  const header = ['concurrency', ...peers.map((p) => (p.measured === true ? `${p.name} (peer)` : p.name)), ...report.models.map((m) => modelLabel(m.sparsity, m.precision))];
  const rows = levels.map((c) => [
    String(c),
    ...peers.map((p) => num(p.output_tokens_per_s[String(c)])),
    ...report.models.map((m) => {
      const r = report.runs.find((x) => !x.peer && x.model === m.id && x.concurrency === c);
      const p = ref.output_tokens_per_s[String(c)];
      return r ? `${num(r.output_tokens_per_s)}${p ? ` (${num(r.output_tokens_per_s / p, 2)}x)` : ''}` : '–';
    }),
  ]);
  const b1 = report.decode_batch1;
  const refB1 = ref.decode_batch1_tokens_per_s;
  rows.push([
    'batch-1 decode (1 / p50 TPOT)',
    ...peers.map((p) => num(p.decode_batch1_tokens_per_s)),
    ...report.models.map((m) => {
      const t = b1.find((x) => x.model === m.id)?.tokens_per_s;
      return `${num(t)}${t != null && refB1 ? ` (${num(t / refB1, 2)}x)` : ''}`;
    }),
  ]);
  const measured = measuredPeers(report);
  const intro =
    measured.length > 0
      ? `Output tokens/s, every column measured in this run, interleaved block by block (in brackets: ratio to \`${ref.name}\`). ${measured.map((p) => `\`${p.name}\`: ${p.source}${p.model_info?.size_bytes != null ? `, weights ${num(p.model_info.size_bytes / 2 ** 20, 1)} MiB` : ''}${p.start_error ? `; at start: ${p.start_error}` : ''}.`).join(' ')} The peers' latencies and errors are in the tables below.`
      : `Output tokens/s (in brackets: ratio to the peer). Peer figures: ${ref.source}.`;
  return intro + '\n\n' + table(header, rows);
}

function bandwidthTable(report: Report): string {
  const bw = report.machine.read_bandwidth_bytes_per_s;
  const intro = bw
    ? `Measured memory READ bandwidth: **${num(bw / 1e9, 1)} GB/s** (${report.machine.read_bandwidth_method}). Decoding one token at batch 1 reads every weight once (float32, or a quantized model's codes, scales and zero points), so tokens/s <= bandwidth / weight bytes per token (attention over a ~130-token KV cache adds < 1 %, not counted). Issue 5 measured ~27-28 GB/s on this machine kind with a native 2-thread read probe (a 2-thread memcpy: ~19 GB/s; llama.cpp decodes this shape at ~65 tok/s, ~92 % of the read bound); our WebAssembly probe usually reports less, so both bounds are shown.`
    : 'The bandwidth probe was skipped (--no-bandwidth).';
  const peerRows = measuredPeers(report)
    .filter((p) => p.weight_bytes_per_token_estimate != null)
    .map((p) => {
      const bytes = p.weight_bytes_per_token_estimate as number;
      const bound = bw ? bw / bytes : null;
      const ref = REFERENCE_READ_BYTES_PER_S / bytes;
      const t = p.decode_batch1_tokens_per_s;
      return [peerName(p), `~${num(bytes / 1e6, 1)} MB (model less embeddings)`, num(bound), num(t), pct(t !== null && bound ? t / bound : null), num(ref), pct(t === null ? null : t / ref)];
    });
  return (
    intro +
    (peerRows.length > 0 ? ' A peer\'s bytes per token are estimated from its model size (the `size` its `/v1/models` reports) less the token-embedding table, at the model\'s mean bytes per weight.' : '') +
    '\n\n' +
    table(
      ['model', 'weights read / token', 'bound tok/s (our probe)', 'measured tok/s', 'of bound', 'bound at 27.5 GB/s (issue 5)', 'of that bound'],
      [...report.decode_batch1.map((d) => {
        const ref = d.reference_bound_tokens_per_s ?? REFERENCE_READ_BYTES_PER_S / d.weight_bytes_per_token; // reports from before the field
        return [
          label(d),
          `${num(d.weight_bytes_per_token / 1e6, 1)} MB`,
          num(d.bandwidth_bound_tokens_per_s),
          num(d.tokens_per_s),
          pct(d.fraction_of_bound),
          num(ref),
          pct(d.tokens_per_s === null ? null : d.tokens_per_s / ref),
        ];
      }), ...peerRows],
    )
  );
}

function errorsSection(report: Report): string {
  const bad = report.runs.filter((r) => r.errors > 0);
  if (bad.length === 0) return 'No request failed.';
  return bad.map((r) => `- ${label(r)} at concurrency ${r.concurrency}: ${r.errors} of ${r.requests} failed: ${r.error_samples.map((e) => '`' + e.replace(/`/g, "'") + '`').join(', ')}`).join('\n');
}

/**
 * The Markdown document for `report`: overview, headline, speedup, peer comparison,
 * batch-1 decode vs bandwidth, the chart, full throughput and latency tables (ms), errors,
 * notes and how to reproduce.
 */
export function renderMarkdown(full: Report, opts: MarkdownOptions): string {
  const report = forLabels(full);
  const reproduce = String(report.options.command ?? 'npm run bench');
  return [
    `# ${opts.title}`,
    '',
    '_Generated from `report.json` by `npm run bench:md` / `npm run bench`; do not edit by hand._' + (opts.source ? ` Source: \`${opts.source}\`.` : ''),
    '',
    overview(report),
    '',
    '## Headline',
    '',
    headline(report),
    '',
    'Targets (issue 5):',
    '',
    targets(report),
    '',
    `![Throughput, TTFT and TPOT, dense vs sliced](${opts.chartPath})`,
    '',
    ...(matrixSection(report) ? ['## Sparsity x precision', '', matrixSection(report), ''] : []),
    '## Expected vs measured speedup of the sliced models',
    '',
    'Expected = dense matmul FLOPs per token / sliced matmul FLOPs per token, counting every linear layer (q/k/v/o and the MLP projections), the shortcut matrices (two per sequential layer, one per parallel layer) and the head (`loadtests/flops.ts`); each slice is compared with the dense model of its own weight precision. Measured = sliced output tokens/s / dense output tokens/s at the same concurrency, same run, pooled over all rounds. Paired = the median over rounds of the same ratio within one round (the models of a round run back to back, so a disturbance of one round, e.g. another process on the cores, cancels out of its ratio); the range of the round ratios shows how noisy the machine was.',
    '',
    speedupTable(report),
    '',
    measuredPeers(report).length > 0 ? '## Against the peers (measured in this run)' : '## Against the peer (llama.cpp server)',
    '',
    peerTable(report),
    '',
    '## Batch-1 decode vs the memory-bandwidth bound',
    '',
    bandwidthTable(report),
    '',
    '## Throughput',
    '',
    throughputTable(report),
    '',
    '## Latency (milliseconds)',
    '',
    'TTFT: request sent -> first token. TPOT: (e2e - TTFT) / (output tokens - 1), per request. ITL: every gap between two tokens, pooled. e2e: request sent -> `[DONE]`. Percentiles interpolate linearly between closest ranks (numpy\'s default).',
    '',
    latencyTable(report, ['ttft_s', 'tpot_s']),
    '',
    latencyTable(report, ['itl_s', 'e2e_s']),
    '',
    '## Errors',
    '',
    errorsSection(report),
    '',
    '## Notes',
    '',
    ...report.notes.map((n) => `- ${n}`),
    '',
    '## Reproduce',
    '',
    '```sh',
    'npm ci',
    reproduce,
    'npm run bench:md   # BENCHMARKS.md from loadtests/reports/latest/report.json (or: -- loadtests/benchmarks-report.json)',
    '```',
    '',
  ].join('\n');
}

/** ", weights on ..." for the Machine line; '' when the report does not know. */
function hugePagesText(h: Report['machine']['huge_pages']): string {
  if (!h) return '';
  if (h.active) return ', server weights on transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`)';
  return `, server weights on 4 KiB pages (transparent huge pages: ${h.transparent_hugepage ?? 'unavailable'}, glibc.malloc.hugetlb: ${h.malloc_hugetlb ?? 'unset'})`;
}
