/**
 * Execution-provider selection (runtime/device.ts): request parsing, the cheap pre-checks
 * (provider files, ELF dependencies, Vulkan loader), auto fallback with its log lines, explicit
 * devices failing with one-line errors, and a real CPU session computing the right values.
 *
 * Tests that look at the real host assume a CPU-only machine (CI); where the host has a CUDA
 * provider or a Vulkan loader installed, they skip with a note instead of failing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { OnnxGraph } from '../../models/onnx/builder.js';
import {
  createSessionOnDevice,
  defaultDeviceEnvironment,
  describeDevice,
  DeviceUnavailableError,
  explainProviderFailure,
  onnxruntimeBinDir,
  parseDeviceRequest,
  parseLdconfigCache,
  probeDevice,
  readElfDependencies,
  resolveDeviceRequest,
  type Device,
  type DeviceEnvironment,
} from '../../runtime/device.js';

// y = x W + b with x [n, 3], W [3, 2], b [2]: a MatMul and an Add, weights as initializers.
const W_VALUES = [0.5, -1, 2, 0.25, -1.5, 3];
const B_VALUES = [0.125, -2];

function affineModel(): Uint8Array {
  const g = new OnnxGraph('affine');
  const x = g.input('x', 'float32', ['n', 3]);
  const w = g.initializer('W', 'float32', [3, 2], Float32Array.from(W_VALUES));
  const b = g.initializer('b', 'float32', [2], Float32Array.from(B_VALUES));
  g.op('Add', [g.op('MatMul', [x, w]), b], {}, { output: 'y' });
  g.output('y', 'float32', ['n', 2]);
  return g.build().model;
}

/** Reference in float64: y[i][j] = sum_k x[i][k] W[k][j] + b[j]. */
function affineReference(x: number[], n: number): number[] {
  const y: number[] = [];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < 2; j++) {
      let s = B_VALUES[j];
      for (let k = 0; k < 3; k++) s += x[i * 3 + k] * W_VALUES[k * 2 + j];
      y.push(s);
    }
  }
  return y;
}

async function checkAffine(session: ort.InferenceSession): Promise<void> {
  const x = [1, 2, 3, -4, 0.5, 6];
  const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from(x), [2, 3]) });
  assert.deepEqual(out.y.dims, [2, 2]);
  const want = affineReference(x, 2);
  const got = Array.from(out.y.data as Float32Array);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-5, `y[${i}] = ${got[i]}, want ${want[i]}`);
}

function captureLogger() {
  const lines: { level: 'info' | 'warn'; msg: string }[] = [];
  return {
    lines,
    logger: {
      info: (msg: string) => lines.push({ level: 'info', msg }),
      warn: (msg: string) => lines.push({ level: 'warn', msg }),
    },
  };
}

/** A host with no CUDA provider files and no Vulkan loader, whatever the real machine has. */
function cpuOnlyEnvironment(overrides: Partial<DeviceEnvironment> = {}): DeviceEnvironment {
  return {
    platform: 'linux',
    arch: 'x64',
    ortBinDir: '/opt/ort/bin',
    backends: [
      { name: 'cpu', bundled: true },
      { name: 'webgpu', bundled: true },
      { name: 'cuda', bundled: false },
    ],
    fileExists: () => false,
    findLibrary: () => undefined,
    readElfDependencies: () => undefined,
    vulkanIcdFiles: () => [],
    ...overrides,
  };
}

/** A host whose CUDA provider is installed and depends on `needed`; `present` are findable. */
function cudaEnvironment(needed: string[], present: string[]): DeviceEnvironment {
  return cpuOnlyEnvironment({
    fileExists: (f) => /libonnxruntime_providers_(cuda|shared)\.so$/.test(f),
    readElfDependencies: () => ({ needed, runpath: [] }),
    findLibrary: (s) => (present.includes(s) ? `/usr/lib/${s}` : undefined),
  });
}

const CUDA13_NEEDED = ['libcublasLt.so.13', 'libcublas.so.13', 'libcurand.so.10', 'libcudart.so.13', 'libcuda.so.1', 'libc.so.6'];

const host = defaultDeviceEnvironment();
const hostHasCuda = probeDevice('cuda', host).available;
const hostHasWebgpu = probeDevice('webgpu', host).available;

test('parseDeviceRequest accepts the four devices and rejects anything else with one line', () => {
  assert.equal(parseDeviceRequest('cpu'), 'cpu');
  assert.equal(parseDeviceRequest(' CUDA '), 'cuda');
  assert.equal(parseDeviceRequest('WebGPU'), 'webgpu');
  assert.equal(parseDeviceRequest('auto'), 'auto');
  for (const bad of ['gpu', 'cuda:0', '', 'tensorrt']) {
    assert.throws(
      () => parseDeviceRequest(bad),
      (e: Error) =>
        e.message === `invalid --device ${JSON.stringify(bad)}: expected one of auto, cpu, cuda, webgpu` && !e.message.includes('\n'),
    );
  }
});

test('createSessionOnDevice rejects an unknown device request from untyped callers', async () => {
  await assert.rejects(
    createSessionOnDevice(affineModel(), { device: 'gpu' as unknown as 'cpu' }),
    /^Error: invalid device "gpu": expected one of auto, cpu, cuda, webgpu$/,
  );
});

test('resolveDeviceRequest: the flag wins over SLICESERVE_DEVICE, which wins over the default cpu', () => {
  assert.equal(resolveDeviceRequest('webgpu', { SLICESERVE_DEVICE: 'cuda' }), 'webgpu');
  assert.equal(resolveDeviceRequest(undefined, { SLICESERVE_DEVICE: 'Auto' }), 'auto');
  assert.equal(resolveDeviceRequest(undefined, {}), 'cpu');
  assert.equal(resolveDeviceRequest('', { SLICESERVE_DEVICE: '  ' }), 'cpu');
  assert.throws(() => resolveDeviceRequest(undefined, { SLICESERVE_DEVICE: 'metal' }), /invalid SLICESERVE_DEVICE "metal"/);
});

test('explicit cpu opens a session that computes x W + b', async () => {
  const { session, device, attempts } = await createSessionOnDevice(affineModel(), { device: 'cpu', logger: captureLogger().logger });
  try {
    assert.equal(device, 'cpu');
    assert.deepEqual(attempts, [{ device: 'cpu', ok: true }]);
    await checkAffine(session);
  } finally {
    await session.release();
  }
});

test(
  'auto on this CPU-only host falls back to cpu, logging why cuda and webgpu failed',
  { skip: hostHasCuda || hostHasWebgpu ? 'this host has a CUDA provider or a Vulkan loader installed' : false },
  async () => {
    const { lines, logger } = captureLogger();
    const { session, device, attempts } = await createSessionOnDevice(affineModel(), { device: 'auto', logger });
    try {
      assert.equal(device, 'cpu');
      assert.deepEqual(
        attempts.map((a) => [a.device, a.ok]),
        [
          ['cuda', false],
          ['webgpu', false],
          ['cpu', true],
        ],
      );
      assert.equal(lines.length, 3);
      assert.equal(lines[0].level, 'warn');
      assert.match(lines[0].msg, /^device auto: cuda unavailable: .*libonnxruntime_providers_(cuda|shared)\.so is not installed/);
      assert.equal(lines[1].level, 'warn');
      assert.match(lines[1].msg, /^device auto: webgpu unavailable: no Vulkan loader: libvulkan\.so\.1/);
      assert.equal(lines[2].level, 'info');
      assert.equal(lines[2].msg, `device auto: using cpu (CPUExecutionProvider, onnxruntime ${ort.env.versions.node})`);
      for (const l of lines) assert.ok(!l.msg.includes('\n'));
      await checkAffine(session);
    } finally {
      await session.release();
    }
  },
);

test(
  'explicit cuda on this CPU-only host rejects from the pre-check, before onnxruntime is called',
  { skip: hostHasCuda ? 'this host has the CUDA provider installed' : false },
  async () => {
    let sessionsCreated = 0;
    await assert.rejects(
      createSessionOnDevice(affineModel(), {
        device: 'cuda',
        createSession: async () => {
          sessionsCreated++;
          throw new Error('must not be called');
        },
      }),
      (e: unknown) => {
        assert.ok(e instanceof DeviceUnavailableError);
        assert.equal(e.device, 'cuda');
        assert.ok(!e.message.includes('\n'), 'one line');
        assert.match(e.message, /^--device cuda cannot start: the CUDA provider library libonnxruntime_providers_(cuda|shared)\.so is not installed in /);
        assert.ok(e.message.includes(onnxruntimeBinDir()));
        assert.match(e.message, /fix: .*ONNXRUNTIME_NODE_INSTALL=cuda12.*Docker image/);
        return true;
      },
    );
    assert.equal(sessionsCreated, 0);
  },
);

test(
  'explicit webgpu on a host without libvulkan.so.1 names the missing loader',
  { skip: hostHasWebgpu ? 'this host has a Vulkan loader' : false },
  async () => {
    await assert.rejects(createSessionOnDevice(affineModel(), { device: 'webgpu' }), (e: unknown) => {
      assert.ok(e instanceof DeviceUnavailableError);
      assert.equal(
        e.message,
        "--device webgpu cannot start: no Vulkan loader: libvulkan.so.1 is not on the library path; fix: install it (Debian/Ubuntu: `apt-get install libvulkan1`) together with the GPU driver's Vulkan ICD",
      );
      return true;
    });
  },
);

test('cuda pre-check names the missing CUDA libraries, read from the provider ELF dependencies', () => {
  const probe = probeDevice('cuda', cudaEnvironment(CUDA13_NEEDED, ['libcudart.so.13', 'libcuda.so.1', 'libc.so.6']));
  assert.equal(probe.available, false);
  assert.equal(
    probe.reason,
    'the CUDA 13 libraries libcublasLt.so.13, libcublas.so.13, libcurand.so.10 needed by libonnxruntime_providers_cuda.so are not on the library path',
  );
  assert.match(probe.fix ?? '', /CUDA 13 runtime with cuBLAS and cuDNN 9.*LD_LIBRARY_PATH/);
});

test('cuda pre-check reports a missing driver (libcuda.so.1) before missing CUDA libraries', () => {
  const probe = probeDevice('cuda', cudaEnvironment(CUDA13_NEEDED, []));
  assert.equal(probe.available, false);
  assert.equal(probe.reason, 'no NVIDIA driver: libcuda.so.1 is not on the library path');
  assert.match(probe.fix ?? '', /--gpus all/);
});

test('cuda pre-check: a provider that is not ELF is reported as a broken install', () => {
  const env = cpuOnlyEnvironment({ fileExists: () => true, readElfDependencies: () => undefined });
  const probe = probeDevice('cuda', env);
  assert.equal(probe.available, false);
  assert.match(probe.reason ?? '', /libonnxruntime_providers_cuda\.so is not a readable ELF shared library/);
});

test('with every CUDA dependency found, explicit cuda asks onnxruntime for the CUDA provider alone', async () => {
  const env = cudaEnvironment(CUDA13_NEEDED, CUDA13_NEEDED);
  const { lines, logger } = captureLogger();
  const seen: ort.InferenceSession.SessionOptions[] = [];
  const { session, device } = await createSessionOnDevice(affineModel(), {
    device: 'cuda',
    environment: env,
    logger,
    cudaDeviceId: 1,
    sessionOptions: { graphOptimizationLevel: 'all', executionProviders: ['cpu'] } as ort.InferenceSession.SessionOptions,
    // Stands in for onnxruntime with a CUDA provider: records the options, returns a CPU session.
    createSession: async (m, o) => {
      seen.push(o);
      return ort.InferenceSession.create(m as Uint8Array, { graphOptimizationLevel: o.graphOptimizationLevel });
    },
  });
  try {
    assert.equal(device, 'cuda');
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0].executionProviders, [{ name: 'cuda', deviceId: 1 }]);
    assert.equal(seen[0].graphOptimizationLevel, 'all');
    // cuDNN is not a DT_NEEDED entry; its absence is a warning, not a failure.
    assert.deepEqual(lines, [{ level: 'warn', msg: 'device cuda: cuDNN 9 (libcudnn.so.9) not found: CUDA kernels that use cuDNN will fail' }]);
    await checkAffine(session);
  } finally {
    await session.release();
  }
});

test('auto skips a provider that passes the pre-check but fails in onnxruntime, and logs why', async () => {
  const env = cudaEnvironment(CUDA13_NEEDED, [...CUDA13_NEEDED, 'libcudnn.so.9']);
  const { lines, logger } = captureLogger();
  const tried: string[] = [];
  const { session, device, attempts } = await createSessionOnDevice(affineModel(), {
    device: 'auto',
    environment: env,
    logger,
    createSession: async (m, o) => {
      const ep = o.executionProviders?.[0];
      const name = typeof ep === 'string' ? ep : (ep?.name ?? '?');
      tried.push(name);
      if (name === 'cuda') throw new Error('OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library');
      return ort.InferenceSession.create(m as Uint8Array, o);
    },
  });
  try {
    assert.equal(device, 'cpu');
    assert.deepEqual(tried, ['cuda', 'cpu']);
    assert.equal(attempts[0].reason, 'onnxruntime could not load the CUDA provider (OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library)');
    assert.deepEqual(
      lines.map((l) => l.level),
      ['warn', 'warn', 'info'],
    );
    assert.match(lines[0].msg, /^device auto: cuda unavailable: onnxruntime could not load the CUDA provider/);
    assert.match(lines[1].msg, /^device auto: webgpu unavailable: no Vulkan loader/);
    await checkAffine(session);
  } finally {
    await session.release();
  }
});

test('explicit cuda: an onnxruntime provider failure becomes a one-line DeviceUnavailableError', async () => {
  const env = cudaEnvironment(CUDA13_NEEDED, [...CUDA13_NEEDED, 'libcudnn.so.9']);
  await assert.rejects(
    createSessionOnDevice(affineModel(), {
      device: 'cuda',
      environment: env,
      createSession: async () => {
        throw new Error('CUDA failure 100: no CUDA-capable device is detected ; GPU=0 ; hostname=x\nstack line');
      },
    }),
    (e: unknown) =>
      e instanceof DeviceUnavailableError &&
      e.message.startsWith('--device cuda cannot start: the CUDA provider failed to start (CUDA failure 100: no CUDA-capable device is detected') &&
      !e.message.includes('\n'),
  );
});

test('errors that are not about the device are rethrown unchanged', async () => {
  const env = cudaEnvironment(CUDA13_NEEDED, [...CUDA13_NEEDED, 'libcudnn.so.9']);
  const modelError = new Error('Load model from memory failed:Protobuf parsing failed.');
  await assert.rejects(
    createSessionOnDevice(affineModel(), { device: 'cuda', environment: env, createSession: async () => Promise.reject(modelError) }),
    (e: unknown) => e === modelError,
  );
  // auto: the model is broken on every device, so the cpu error surfaces (not a device error).
  await assert.rejects(
    createSessionOnDevice(Uint8Array.from([1, 2, 3]), { device: 'auto', environment: cpuOnlyEnvironment(), logger: captureLogger().logger }),
    (e: unknown) => e instanceof Error && !(e instanceof DeviceUnavailableError) && /protobuf|model/i.test(e.message),
  );
});

test('session options may depend on the device being tried', async () => {
  const asked: Device[] = [];
  const { session } = await createSessionOnDevice(affineModel(), {
    device: 'auto',
    environment: cpuOnlyEnvironment(),
    logger: captureLogger().logger,
    sessionOptions: (d) => {
      asked.push(d);
      return { intraOpNumThreads: 1 };
    },
  });
  await session.release();
  assert.deepEqual(asked, ['cpu']);
});

test('webgpu: auto skips hosts without a GPU Vulkan driver, an explicit request still tries them', async () => {
  const env = cpuOnlyEnvironment({
    findLibrary: (s) => (s === 'libvulkan.so.1' ? '/usr/lib/x86_64-linux-gnu/libvulkan.so.1' : undefined),
    vulkanIcdFiles: () => ['/usr/share/vulkan/icd.d/lvp_icd.x86_64.json'],
  });
  const auto = probeDevice('webgpu', env, true);
  assert.equal(auto.available, false);
  assert.match(auto.reason ?? '', /only software Vulkan drivers are installed \(lvp_icd\.x86_64\.json\)/);
  assert.equal(probeDevice('webgpu', env, false).available, true);
  const withGpu = { ...env, vulkanIcdFiles: () => ['/usr/share/vulkan/icd.d/lvp_icd.x86_64.json', '/etc/vulkan/icd.d/nvidia_icd.json'] };
  assert.equal(probeDevice('webgpu', withGpu, true).available, true);
  const noIcd = { ...env, vulkanIcdFiles: () => [] };
  assert.match(probeDevice('webgpu', noIcd, true).reason ?? '', /^the Vulkan loader is there but no Vulkan driver \(ICD manifest/);
  assert.equal(probeDevice('webgpu', noIcd, false).available, true);

  // A loader without a GPU adapter: onnxruntime's Dawn error becomes the ICD hint.
  await assert.rejects(
    createSessionOnDevice(affineModel(), {
      device: 'webgpu',
      environment: env,
      createSession: async () => {
        throw new Error('webgpu_context.cc:100 ... Failed to get a WebGPU adapter: No supported adapters\n');
      },
    }),
    (e: unknown) => e instanceof DeviceUnavailableError && /no GPU adapter.*fix: .*nvidia_icd\.json/.test(e.message),
  );
});

test('explainProviderFailure leaves unrelated errors alone', () => {
  assert.equal(explainProviderFailure('cuda', 'Invalid model: unknown opset'), undefined);
  assert.equal(explainProviderFailure('webgpu', 'Protobuf parsing failed'), undefined);
});

test(
  'readElfDependencies reads DT_NEEDED and $ORIGIN RUNPATH of the onnxruntime binding',
  { skip: process.platform !== 'linux' ? 'ELF shared objects are Linux only' : false },
  () => {
    const binding = path.join(onnxruntimeBinDir(), 'onnxruntime_binding.node');
    const deps = readElfDependencies(binding);
    assert.ok(deps, 'the binding is an ELF shared object');
    assert.ok(deps.needed.includes('libonnxruntime.so.1'), deps.needed.join(','));
    assert.ok(deps.needed.includes('libc.so.6'));
    assert.ok(
      deps.runpath.some((d) => path.resolve(d) === path.resolve(onnxruntimeBinDir())),
      `RUNPATH ${deps.runpath.join(':')} expands $ORIGIN to the binding's directory`,
    );
    const notElf = path.join(os.tmpdir(), `sliceserve-not-elf-${process.pid}.so`);
    fs.writeFileSync(notElf, 'not an ELF file at all, but long enough to read a header from.......');
    try {
      assert.equal(readElfDependencies(notElf), undefined);
    } finally {
      fs.unlinkSync(notElf);
    }
    assert.equal(readElfDependencies('/nonexistent/libnothing.so'), undefined);
  },
);

test('parseLdconfigCache keeps the entries of this ABI, in the loader order', () => {
  const text = [
    '812 libs found in cache `/etc/ld.so.cache\'',
    '\tlibvulkan.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libvulkan.so.1',
    '\tlibvulkan.so.1 (libc6) => /lib/i386-linux-gnu/libvulkan.so.1',
    '\tlibcudart.so.13 (libc6,x86-64) => /usr/local/cuda-13.0/lib/libcudart.so.13',
    '\tlibcudart.so.13 (libc6,x86-64) => /opt/other/libcudart.so.13',
    '\tlibfoo.so.2 (libc6,AArch64) => /lib/aarch64-linux-gnu/libfoo.so.2',
  ].join('\n');
  const x64 = parseLdconfigCache(text, 'x64');
  assert.deepEqual(x64.get('libcudart.so.13'), ['/usr/local/cuda-13.0/lib/libcudart.so.13', '/opt/other/libcudart.so.13']);
  assert.equal(x64.get('libfoo.so.2'), undefined);
  // "(libc6)" without an ABI tag is the 32-bit library: a 64-bit process cannot load it.
  assert.deepEqual(x64.get('libvulkan.so.1'), ['/lib/x86_64-linux-gnu/libvulkan.so.1']);
  assert.deepEqual(parseLdconfigCache(text, 'arm64').get('libfoo.so.2'), ['/lib/aarch64-linux-gnu/libfoo.so.2']);
});

test('describeDevice reports the provider, the onnxruntime version and what the host offers', () => {
  const d = describeDevice({ device: 'cuda', attempts: [{ device: 'cuda', ok: true }] }, cpuOnlyEnvironment());
  assert.equal(d.device, 'cuda');
  assert.equal(d.executionProvider, 'CUDAExecutionProvider');
  assert.equal(d.onnxruntimeVersion, ort.env.versions.node);
  assert.match(d.onnxruntimeVersion, /^\d+\.\d+\.\d+/);
  assert.equal(d.platform, 'linux/x64');
  assert.deepEqual(d.available, { cuda: false, webgpu: false, cpu: true });
  const hostOnly = describeDevice(undefined, cpuOnlyEnvironment());
  assert.equal(hostOnly.device, null);
  assert.equal(hostOnly.executionProvider, null);
  assert.deepEqual(hostOnly.attempts, []);
});
