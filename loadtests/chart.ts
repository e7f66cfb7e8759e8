/**
 * The report's chart, rendered headless to SVG with Vega-Lite (compiled to a Vega spec) and
 * Vega's scenegraph renderer: no browser, no canvas, no network. Three panels, dense and
 * every sliced variant side by side: output tokens/s vs concurrency (with the peers, dashed:
 * measured ones in every panel, issue 5's static llama.cpp figures in the throughput panel
 * only), TTFT and TPOT percentiles per concurrency (bar = p50, tick = p90, whisker to p99).
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { Report } from './report.js';

/** Legend label of a model: "dense" or "sliced 25 %". */
export function modelLabel(sparsity: number): string {
  return sparsity === 0 ? 'dense' : `sliced ${Math.round(sparsity * 1000) / 10} %`;
}

/** Legend label of a report row: {@link modelLabel} for ours, "NAME (peer)" for a peer's. */
export function rowLabel(r: { sparsity: number; model: string; peer?: boolean }): string {
  return r.peer ? `${r.model} (peer)` : modelLabel(r.sparsity);
}

const PALETTE = ['#4c78a8', '#f58518', '#54a24b', '#b279a2', '#e45756', '#72b7b2'];
/** Peers are drawn in greys, dashed. */
const PEER_COLORS = ['#7f7f7f', '#3b3b3b', '#b0b0b0', '#5e5e5e'];

/**
 * The Vega-Lite spec of the chart for `report` (exported for inspection and tests).
 */
export function chartSpec(report: Report): TopLevelSpec {
  // measured peers have rows in report.runs; figures from elsewhere only a throughput line
  const measuredPeers = report.peers.filter((p) => p.measured === true);
  const staticPeer = measuredPeers.length === 0 ? report.peers[0] : undefined;
  const labels = [...report.models.map((m) => modelLabel(m.sparsity)), ...measuredPeers.map((p) => rowLabel({ sparsity: 0, model: p.name, peer: true }))];
  const ours = report.models.length;
  const peerLabel = staticPeer ? staticPeer.name.replace(/ \(.*\)$/, '') + ' (peer)' : null;
  const levels = [...new Set(report.runs.map((r) => r.concurrency))].sort((a, b) => a - b);
  const throughput: Array<{ model: string; concurrency: number; tps: number; lo?: number; hi?: number }> = report.runs.map((r) => ({
    model: rowLabel(r),
    concurrency: r.concurrency,
    tps: r.output_tokens_per_s,
    ...(r.block_output_tokens_per_s.length > 1 ? { lo: Math.min(...r.block_output_tokens_per_s), hi: Math.max(...r.block_output_tokens_per_s) } : {}),
  }));
  if (staticPeer && peerLabel) {
    for (const [c, tps] of Object.entries(staticPeer.output_tokens_per_s)) {
      if (levels.includes(Number(c))) throughput.push({ model: peerLabel, concurrency: Number(c), tps });
    }
  }
  const latency = (key: 'ttft_s' | 'tpot_s') =>
    report.runs
      .filter((r) => r[key] !== null)
      .map((r) => {
        const s = r[key]!;
        const ms = (v: number): number => Math.round(v * 1e5) / 100;
        return { model: rowLabel(r), concurrency: r.concurrency, p50: ms(s.p50), p90: ms(s.p90), p99: ms(s.p99) };
      });
  const colorDomain = peerLabel ? [...labels, peerLabel] : labels;
  const colorRange = [...labels.map((_, i) => (i < ours ? PALETTE[i % PALETTE.length] : PEER_COLORS[(i - ours) % PEER_COLORS.length])), ...(peerLabel ? [PEER_COLORS[0]] : [])];
  const dashed = new Set([...labels.slice(ours), ...(peerLabel ? [peerLabel] : [])]);
  const color = { field: 'model', type: 'nominal', title: null, scale: { domain: colorDomain, range: colorRange }, legend: { orient: 'bottom', direction: 'horizontal', labelLimit: 400, symbolStrokeWidth: 3 } } as const;
  const yTitle = 'milliseconds'; // short: a rotated title longer than the plot pushes the panel title up
  const latencyPanel = (key: 'ttft_s' | 'tpot_s', title: string) => ({
    title: { text: title, subtitle: 'bar p50, tick p90, whisker to p99' },
    width: 260,
    height: 230,
    data: { values: latency(key) },
    encoding: {
      x: { field: 'concurrency', type: 'ordinal', title: 'concurrent requests', axis: { labelAngle: 0 } },
      xOffset: { field: 'model', type: 'nominal', scale: { domain: labels } },
      color: { ...color, scale: { domain: colorDomain, range: colorRange } },
    },
    layer: [
      // the same axis title in every layer, so that the layers share one y axis
      { mark: { type: 'bar', opacity: 0.85 }, encoding: { y: { field: 'p50', type: 'quantitative', title: yTitle } } },
      { mark: { type: 'rule', color: '#333' }, encoding: { y: { field: 'p50', type: 'quantitative', title: yTitle }, y2: { field: 'p99' } } },
      { mark: { type: 'tick', color: '#333', thickness: 2, size: 8 }, encoding: { y: { field: 'p90', type: 'quantitative', title: yTitle } } },
    ],
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: `SliceServe: dense vs sliced, ${report.request_shape.prompt_tokens}-token prompts, ${report.request_shape.output_tokens} output tokens, streaming`, subtitle: `${report.model.preset ?? report.model.dir ?? ''} on ${report.machine.cpu_model}, ${report.machine.cores} cores, ${report.machine.execution_provider}`, anchor: 'start' },
    config: { font: 'sans-serif', view: { stroke: null }, axis: { grid: true, gridOpacity: 0.5 }, title: { frame: 'group', offset: 12 }, axisY: { labelFlush: true } },
    resolve: { scale: { color: 'shared' } },
    hconcat: [
      {
        title: { text: 'Output throughput (higher is better)', subtitle: 'whiskers: slowest to fastest block' },
        width: 260,
        height: 230,
        data: { values: throughput },
        layer: [
          { mark: { type: 'line', point: { size: 50 } } },
          { transform: [{ filter: 'isValid(datum.lo)' }], mark: { type: 'rule', strokeWidth: 1.5, opacity: 0.7 }, encoding: { y: { field: 'lo', type: 'quantitative', title: 'output tokens / s' }, y2: { field: 'hi' }, strokeDash: { value: [1, 0] } } },
        ],
        encoding: {
          x: { field: 'concurrency', type: 'quantitative', title: 'concurrent requests', scale: { type: 'log', base: 2, nice: false, domain: [Math.min(...levels), Math.max(...levels)] }, axis: { values: levels, format: 'd' } },
          y: { field: 'tps', type: 'quantitative', title: 'output tokens / s' },
          color,
          strokeDash: { field: 'model', type: 'nominal', title: null, scale: { domain: colorDomain, range: colorDomain.map((l) => (dashed.has(l) ? [4, 3] : [1, 0])) } },
        },
      },
      latencyPanel('ttft_s', 'Time to first token (lower is better)'),
      latencyPanel('tpot_s', 'Time per output token (lower is better)'),
    ],
  } as TopLevelSpec;
}

/**
 * Renders the chart of `report` to an SVG document (a string), headless.
 *
 * @throws Error when Vega-Lite or Vega rejects the spec (a bug).
 */
export async function renderChartSvg(report: Report): Promise<string> {
  const { spec } = compile(chartSpec(report));
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
