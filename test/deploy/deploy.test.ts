/**
 * The deployment files: the Kubernetes manifests (kustomize base and its CPU and GPU overlays,
 * rendered here as kustomize renders them: resources, labels, JSON 6902 patches) validated
 * against the Kubernetes schemas with kubernetes-models and checked for what must hold between
 * them (probes, grace period vs --shutdown-timeout, selectors, the shared slice cache, the HPA's
 * metric from prometheus-adapter's rule); the Prometheus configs (`promtool check config` where
 * promtool is installed); the Grafana dashboard (every series it queries is one the server
 * exports, PromQL checked by `promtool check rules`); docker-compose.yml.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import jsonpatch, { type Operation } from 'fast-json-patch';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Service } from 'kubernetes-models/v1/Service';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import YAML from 'yaml';
import { buildProgram } from '../../cli/main.js';
import { ServerMetrics } from '../../server/metrics.js';
import { ROOT } from '../server/helpers.js';

type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: any; data?: Record<string, string> };

const KUBE = path.join(ROOT, 'deploy', 'kubernetes');

/** The kubernetes-models class of each kind the manifests use. */
const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'apps/v1/Deployment': Deployment,
  'v1/Service': Service,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'v1/ConfigMap': ConfigMap,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
};

/**
 * Renders a kustomization directory the way `kustomize build` does for the features used here:
 * `resources` (files, or directories with their own kustomization), `labels` (metadata labels,
 * not selectors), `patches` with a target and a JSON 6902 patch file.
 */
function kustomize(dir: string): K8sObject[] {
  const k = YAML.parse(fs.readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8'));
  assert.equal(k.kind, 'Kustomization');
  let objects: K8sObject[] = [];
  for (const r of k.resources ?? []) {
    const p = path.join(dir, r);
    if (fs.statSync(p).isDirectory()) objects.push(...kustomize(p));
    else objects.push(...YAML.parseAllDocuments(fs.readFileSync(p, 'utf8')).map((d) => d.toJSON() as K8sObject));
  }
  for (const { pairs } of k.labels ?? []) {
    for (const o of objects) o.metadata.labels = { ...(o.metadata.labels ?? {}), ...pairs };
  }
  for (const patch of k.patches ?? []) {
    const ops = YAML.parse(fs.readFileSync(path.join(dir, patch.path), 'utf8')) as Operation[];
    const t = patch.target;
    const matches = objects.filter((o) => o.kind === t.kind && o.metadata.name === t.name && o.apiVersion === (t.group ? `${t.group}/${t.version}` : t.version));
    assert.equal(matches.length, 1, `patch ${patch.path} targets one object`);
    // validateOperation: a failing `test` op or a path that does not exist throws, as kustomize fails.
    objects = objects.map((o) => (o === matches[0] ? (jsonpatch.applyPatch(structuredClone(o), ops, true, false).newDocument as K8sObject) : o));
  }
  return objects;
}

function one<T = K8sObject>(objects: K8sObject[], kind: string): T {
  const found = objects.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `one ${kind}`);
  return found[0] as T;
}

/** The long flags the `serve` command accepts. */
function serveFlags(): Set<string> {
  const serve = buildProgram().commands.find((c) => c.name() === 'serve')!;
  return new Set(serve.options.map((o) => o.long!));
}

/** Flags (`--x`) of an argument list, each checked against `serve`'s options. */
function assertServeArgs(args: string[]): void {
  assert.equal(args[0], 'serve');
  const flags = serveFlags();
  for (const a of args.filter((x) => x.startsWith('--'))) assert.ok(flags.has(a), `serve has no ${a}`);
}

const base = kustomize(path.join(KUBE, 'base'));
const cpu = kustomize(path.join(KUBE, 'overlays', 'cpu'));
const gpu = kustomize(path.join(KUBE, 'overlays', 'gpu'));

describe('Kubernetes manifests', () => {
  test('every object of base and overlays validates against the Kubernetes schemas', () => {
    for (const objects of [base, cpu, gpu]) {
      assert.deepEqual(objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PersistentVolumeClaim', 'PodDisruptionBudget', 'Service']);
      for (const o of objects) {
        const Model = MODELS[`${o.apiVersion}/${o.kind}`];
        assert.ok(Model, `no schema for ${o.apiVersion} ${o.kind}`);
        new Model(o).validate();
        assert.equal(o.metadata.labels?.['app.kubernetes.io/part-of'], 'sliceserve');
      }
    }
  });

  test('the validation does fail on a bad object', () => {
    const bad = structuredClone(one<any>(base, 'Deployment'));
    bad.spec.replicas = 'two';
    assert.throws(() => new Deployment(bad).validate(), /replicas/);
    const noPort = structuredClone(one<any>(base, 'Service'));
    noPort.spec.ports[0].port = 'http';
    assert.throws(() => new Service(noPort).validate());
  });

  test('Deployment: probes, grace period above --shutdown-timeout, the shared cache volume, the serve flags', () => {
    const d = one<any>(cpu, 'Deployment');
    const pod = d.spec.template.spec;
    const c = pod.containers[0];
    assertServeArgs(c.args);
    const port = c.ports.find((p: any) => p.name === 'http');
    assert.equal(port.containerPort, 8080);
    assert.equal(c.env.find((e: any) => e.name === 'PORT').value, String(port.containerPort));
    assert.equal(c.readinessProbe.httpGet.path, '/health/ready');
    assert.equal(c.livenessProbe.httpGet.path, '/health');
    assert.equal(c.startupProbe.httpGet.path, '/health');
    for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) assert.equal(probe.httpGet.port, 'http');
    const shutdown = Number(c.args[c.args.indexOf('--shutdown-timeout') + 1]);
    const preStop = Number(c.lifecycle.preStop.exec.command[1]);
    assert.ok(pod.terminationGracePeriodSeconds > shutdown + preStop, `grace ${pod.terminationGracePeriodSeconds} s > ${shutdown} s + preStop ${preStop} s`);
    const cacheDir = c.env.find((e: any) => e.name === 'SLICESERVE_CACHE_DIR').value;
    const mount = c.volumeMounts.find((m: any) => m.mountPath === cacheDir);
    const volume = pod.volumes.find((v: any) => v.name === mount.name);
    const pvc = one<any>(cpu, 'PersistentVolumeClaim');
    assert.equal(volume.persistentVolumeClaim.claimName, pvc.metadata.name);
    assert.deepEqual(pvc.spec.accessModes, ['ReadWriteMany'], 'every replica mounts the slice cache');
    assert.equal(c.env.find((e: any) => e.name === 'SLICESERVE_DEVICE').value, 'cpu');
    assert.equal(c.image, 'sliceserve:cpu');
    assert.equal(c.resources.limits['nvidia.com/gpu'], undefined);
    // The image's user (Dockerfile.cpu and Dockerfile: uid 10001) can write the volume.
    assert.equal(pod.securityContext.fsGroup, 10001);
    for (const file of ['Dockerfile', 'Dockerfile.cpu']) assert.match(fs.readFileSync(path.join(ROOT, file), 'utf8'), /useradd --system --uid 10001/);
  });

  test('Service and PodDisruptionBudget select the pods', () => {
    const podLabels = one<any>(cpu, 'Deployment').spec.template.metadata.labels;
    const selects = (selector: Record<string, string>) => Object.entries(selector).every(([k, v]) => podLabels[k] === v);
    const svc = one<any>(cpu, 'Service');
    assert.ok(selects(svc.spec.selector));
    assert.equal(svc.spec.ports[0].targetPort, 'http');
    const pdb = one<any>(cpu, 'PodDisruptionBudget');
    assert.ok(selects(pdb.spec.selector.matchLabels));
    assert.ok(pdb.spec.maxUnavailable < one<any>(cpu, 'Deployment').spec.replicas);
  });

  test("HPA: scales the Deployment on waiting requests per pod, a metric prometheus-adapter's rule makes from a series the server exports", () => {
    const hpa = one<any>(cpu, 'HorizontalPodAutoscaler');
    const d = one<any>(cpu, 'Deployment');
    assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: d.apiVersion, kind: d.kind, name: d.metadata.name });
    assert.ok(hpa.spec.minReplicas >= 2 && hpa.spec.maxReplicas > hpa.spec.minReplicas);
    const metric = hpa.spec.metrics[0];
    assert.equal(metric.type, 'Pods');
    assert.equal(metric.pods.target.type, 'AverageValue');
    const rules = YAML.parse(one<any>(cpu, 'ConfigMap').data['config.yaml']).rules as any[];
    const rule = rules.find((r) => r.name.as === metric.pods.metric.name);
    assert.ok(rule, `an adapter rule names ${metric.pods.metric.name}`);
    const series = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{/.exec(rule.seriesQuery)![1];
    assert.equal(series, 'vllm:num_requests_waiting');
    assert.match(series, new RegExp(rule.name.matches));
    assert.deepEqual(Object.keys(rule.resources.overrides).sort(), ['namespace', 'pod']);
    const exported = new ServerMetrics(() => [], false).vllmRegistry.getMetricsAsArray().map((m) => m.name);
    for (const r of rules) assert.ok(exported.includes(/^([a-zA-Z_:][a-zA-Z0-9_:]*)\{/.exec(r.seriesQuery)![1]), r.seriesQuery);
  });

  test('the GPU overlay: CUDA image and device, one nvidia.com/gpu, the GPU taint tolerated; the rest as the base', () => {
    const d = one<any>(gpu, 'Deployment');
    const c = d.spec.template.spec.containers[0];
    assert.equal(c.image, 'sliceserve:gpu');
    assert.equal(c.env.find((e: any) => e.name === 'SLICESERVE_DEVICE').value, 'cuda');
    assert.equal(c.env.filter((e: any) => e.name === 'SLICESERVE_DEVICE').length, 1);
    assert.equal(c.resources.limits['nvidia.com/gpu'], '1');
    assert.equal(c.resources.requests['nvidia.com/gpu'], '1');
    assert.deepEqual(d.spec.template.spec.tolerations, [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    const strip = (o: any) => {
      const x = structuredClone(o);
      delete x.spec.template.spec.tolerations;
      const cc = x.spec.template.spec.containers[0];
      cc.image = '';
      cc.env = cc.env.filter((e: any) => e.name !== 'SLICESERVE_DEVICE');
      delete cc.resources.limits['nvidia.com/gpu'];
      delete cc.resources.requests['nvidia.com/gpu'];
      return x;
    };
    assert.deepEqual(strip(d), strip(one<any>(cpu, 'Deployment')));
    assert.deepEqual(gpu.filter((o) => o.kind !== 'Deployment'), cpu.filter((o) => o.kind !== 'Deployment'));
  });

  test('a patch whose test op fails is an error, as in kustomize', () => {
    const d = structuredClone(one<any>(base, 'Deployment'));
    d.spec.template.spec.containers[0].env.reverse();
    const ops = YAML.parse(fs.readFileSync(path.join(KUBE, 'overlays', 'gpu', 'gpu.patch.yaml'), 'utf8'));
    assert.throws(() => jsonpatch.applyPatch(d, ops, true, false), /Test operation failed/);
  });
});

/** Why promtool cannot run, or false. */
function noPromtool(): string | false {
  const r = spawnSync('promtool', ['--version']);
  return r.error ? 'promtool is not installed (apt-get install prometheus; .ci/run installs it as root)' : false;
}

function promtool(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('Prometheus configs', () => {
  const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-prom-'));

  test('the compose scrape config: promtool check config; both metric paths of the sliceserve service', { skip: noPromtool() }, () => {
    const file = path.join(ROOT, 'deploy', 'prometheus', 'prometheus.yml');
    const r = promtool(['check', 'config', file]);
    assert.equal(r.status, 0, r.out);
    const config = YAML.parse(fs.readFileSync(file, 'utf8'));
    assert.deepEqual(config.scrape_configs.map((j: any) => j.metrics_path).sort(), ['/metrics', '/metrics/vllm']);
    for (const j of config.scrape_configs) assert.deepEqual(j.static_configs[0].targets, ['sliceserve:8080']);
  });

  test("the Kubernetes scrape config reads the Deployment's annotations; its relabel rules pass promtool", { skip: noPromtool() }, () => {
    const file = path.join(ROOT, 'deploy', 'prometheus', 'kubernetes.yml');
    const config = YAML.parse(fs.readFileSync(file, 'utf8'));
    const annotations = one<any>(cpu, 'Deployment').spec.template.metadata.annotations as Record<string, string>;
    // Prometheus' pod SD label of an annotation: non-alphanumerics become '_'.
    const metaLabels = new Set(Object.keys(annotations).map((a) => `__meta_kubernetes_pod_annotation_${a.replace(/[^a-zA-Z0-9_]/g, '_')}`));
    const used = config.scrape_configs.flatMap((j: any) => j.relabel_configs.flatMap((r: any) => r.source_labels ?? [])).filter((l: string) => l.startsWith('__meta_kubernetes_pod_annotation_'));
    assert.ok(used.length >= 4);
    for (const l of used) assert.ok(metaLabels.has(l), `${l} reads an annotation the pods do not carry`);
    assert.equal(annotations['prometheus.io/path'], '/metrics');
    assert.equal(annotations['sliceserve.io/vllm-metrics-path'], '/metrics/vllm');
    for (const j of config.scrape_configs) {
      const targets = j.relabel_configs.map((r: any) => r.target_label);
      assert.ok(targets.includes('namespace') && targets.includes('pod'), 'the labels prometheus-adapter maps to objects');
    }
    // Debian's promtool is built without Kubernetes service discovery: check the same jobs on a static target.
    for (const j of config.scrape_configs) {
      delete j.kubernetes_sd_configs;
      j.static_configs = [{ targets: ['pod:8080'] }];
    }
    const copy = path.join(tmp(), 'kubernetes-static.yml');
    fs.writeFileSync(copy, YAML.stringify(config));
    const r = promtool(['check', 'config', copy]);
    assert.equal(r.status, 0, r.out);
  });
});

describe('Grafana dashboard', () => {
  const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy', 'grafana', 'sliceserve-dashboard.json'), 'utf8'));
  const panels = (dashboard.panels as any[]).filter((p) => p.type !== 'row');
  const exprs = panels.flatMap((p) => p.targets.map((t: any) => t.expr as string));

  test('panels for throughput, TTFT/TPOT percentiles, queue, KV usage and slicing jobs, per model side by side', () => {
    const titles = panels.map((p) => p.title as string).join('\n');
    for (const want of [/tokens \/ s/, /TTFT/, /TPOT/, /waiting/, /KV cache/, /Slicing job/]) assert.match(titles, want);
    assert.equal(new Set(dashboard.panels.map((p: any) => p.id)).size, dashboard.panels.length, 'unique panel ids');
    const variable = dashboard.templating.list.find((v: any) => v.name === 'model_name');
    assert.ok(variable.multi && variable.includeAll);
    for (const p of panels) {
      for (const t of p.targets) assert.match(t.expr, /by \((?:le, )?model(?:_name)?\b|by \(le, model\b|by \(model, /, `${p.title}: one series per model`);
    }
    for (const q of [0.5, 0.9, 0.99]) assert.ok(exprs.some((e) => e.startsWith(`histogram_quantile(${q}, `) && e.includes('vllm:time_to_first_token_seconds_bucket')), `TTFT p${q * 100}`);
  });

  test('every series the dashboard queries is one the server exports', () => {
    const m = new ServerMetrics(() => [], false);
    const exported = new Map([...m.registry.getMetricsAsArray(), ...m.vllmRegistry.getMetricsAsArray()].map((x) => [x.name, String(x.type)]));
    for (const e of exprs) {
      for (const [name] of e.matchAll(/\b(?:vllm:[a-z0-9_:]+|sliceserve_[a-z0-9_]+)/g)) {
        const base = name.replace(/_(bucket|sum|count)$/, '');
        assert.ok(exported.has(name) || exported.get(base) === 'histogram', `${name} (in ${e})`);
        if (name !== base) assert.equal(exported.get(base), 'histogram', `${name} reads a histogram`);
      }
    }
  });

  test('every query is valid PromQL (promtool check rules)', { skip: noPromtool() }, () => {
    const rules = { groups: [{ name: 'dashboard', rules: exprs.map((e, i) => ({ record: `dashboard:query_${i}`, expr: e.replaceAll('$__rate_interval', '1m').replaceAll('$model_name', '.*') })) }] };
    const file = path.join(tmp(), 'dashboard-rules.yml');
    fs.writeFileSync(file, YAML.stringify(rules));
    const r = promtool(['check', 'rules', file]);
    assert.equal(r.status, 0, r.out);
  });

  function tmp(): string {
    return fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-dash-'));
  }
});

describe('docker-compose.yml', () => {
  const compose = YAML.parse(fs.readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'));

  test('SliceServe from the CPU image, Prometheus with our scrape config, Grafana with the dashboard', () => {
    assert.deepEqual(Object.keys(compose.services).sort(), ['grafana', 'prometheus', 'sliceserve']);
    const s = compose.services.sliceserve;
    assert.equal(s.build.dockerfile, 'Dockerfile.cpu');
    assert.ok(fs.existsSync(path.join(ROOT, s.build.dockerfile)));
    assert.deepEqual(s.command.slice(0, 2), ['node', 'bin/sliceserve.js']);
    assertServeArgs(s.command.slice(2));
    assert.ok(s.command.includes('--metrics-public'), 'Prometheus scrapes without the API key');
    assert.ok(s.ports.includes('8080:8080'));
    assert.match(fs.readFileSync(path.join(ROOT, 'Dockerfile.cpu'), 'utf8'), /PORT=8080/);
    const mounts = [...compose.services.prometheus.volumes, ...compose.services.grafana.volumes].filter((v: string) => v.startsWith('./'));
    for (const v of mounts) assert.ok(fs.existsSync(path.join(ROOT, v.split(':')[0])), `${v}: the mounted file exists`);
    const dashboardsDir = YAML.parse(fs.readFileSync(path.join(ROOT, 'deploy', 'grafana', 'provisioning', 'dashboards', 'sliceserve.yml'), 'utf8')).providers[0].options.path;
    assert.ok(compose.services.grafana.volumes.some((v: string) => v.split(':')[1].startsWith(`${dashboardsDir}/`)), 'the dashboard lands where the provider reads');
    const datasource = YAML.parse(fs.readFileSync(path.join(ROOT, 'deploy', 'grafana', 'provisioning', 'datasources', 'prometheus.yml'), 'utf8')).datasources[0];
    assert.equal(datasource.url, 'http://prometheus:9090');
    assert.equal(datasource.uid, 'prometheus');
  });
});
