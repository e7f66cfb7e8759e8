/**
 * Execution-provider selection for onnxruntime-node sessions: `--device cpu|cuda|webgpu|auto`
 * (env `SLICESERVE_DEVICE`).
 *
 * onnxruntime-node 1.29 bundles the CPU and WebGPU providers; the CUDA provider
 * (`libonnxruntime_providers_cuda.so` + `libonnxruntime_providers_shared.so`) is downloaded at
 * install time only when asked (`ONNXRUNTIME_NODE_INSTALL=cuda12`) and is loaded by onnxruntime
 * from the directory of `libonnxruntime.so.1`. WebGPU (Dawn) needs a Vulkan loader
 * (`libvulkan.so.1`) and a GPU driver's Vulkan ICD on Linux.
 *
 * Asking onnxruntime for `['cuda', 'cpu']` does not fall back: it throws when the CUDA provider
 * cannot load (measured, RUNTIME-NOTES.md). So every device is tried as its own single-provider
 * session, after cheap pre-checks (provider files, shared-library dependencies found through
 * the dynamic loader's search path) that make a missing device fail in milliseconds.
 * onnxruntime itself still places any node its chosen provider lacks a kernel for on the CPU.
 *
 * CUDA provider options: only `device_id` (the Node binding accepts nothing else). CUDA graphs
 * (`enable_cuda_graph`) stay off, which is also onnxruntime's default: the LLM graphs here have
 * dynamic batch/sequence/cache shapes, and a captured graph replays fixed shapes only.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';

/** What a user asks for. `auto` tries cuda, then webgpu, then cpu. */
export type DeviceRequest = 'cpu' | 'cuda' | 'webgpu' | 'auto';
/** A device a session actually runs on. */
export type Device = 'cpu' | 'cuda' | 'webgpu';

/** Accepted values of `--device` / `SLICESERVE_DEVICE`, in help order. */
export const DEVICE_REQUESTS: readonly DeviceRequest[] = ['auto', 'cpu', 'cuda', 'webgpu'];
/** The order `auto` tries devices in: fastest first, cpu last (always available). */
export const AUTO_DEVICE_ORDER: readonly Device[] = ['cuda', 'webgpu', 'cpu'];
/** Default when neither `--device` nor `SLICESERVE_DEVICE` is given (the Docker image sets auto). */
export const DEFAULT_DEVICE_REQUEST: DeviceRequest = 'cpu';
/** Environment variable read by {@link resolveDeviceRequest}. */
export const DEVICE_ENV_VAR = 'SLICESERVE_DEVICE';

/** onnxruntime's name of the execution provider behind each device (as in its logs and docs). */
export const EXECUTION_PROVIDER_NAMES: Readonly<Record<Device, string>> = {
  cpu: 'CPUExecutionProvider',
  cuda: 'CUDAExecutionProvider',
  webgpu: 'WebGpuExecutionProvider',
};

/** Session options without `executionProviders`, which this module sets itself. */
export type DeviceSessionOptions = Omit<ort.InferenceSession.SessionOptions, 'executionProviders'>;

/** One line per event; pino and console loggers fit. */
export interface DeviceLogger {
  info(msg: string): void;
  warn(msg: string): void;
}

/** The outcome of trying one device. `reason` (one line) says why it failed. */
export interface DeviceAttempt {
  device: Device;
  ok: boolean;
  reason?: string;
}

/** Thrown when an explicitly requested device cannot start. The message is one line. */
export class DeviceUnavailableError extends Error {
  override readonly name = 'DeviceUnavailableError';
  constructor(
    readonly device: Device,
    /** What is missing, one clause. */
    readonly reason: string,
    /** How to fix it, one clause. */
    readonly fix: string,
  ) {
    super(`--device ${device} cannot start: ${reason}; fix: ${fix}`);
  }
}

/**
 * Parses a device request (case-insensitive, surrounding spaces ignored).
 * @param value e.g. the `--device` option or `SLICESERVE_DEVICE`.
 * @param source names the origin in the error message (default `--device`).
 * @throws Error (one line) for anything but auto, cpu, cuda, webgpu.
 */
export function parseDeviceRequest(value: string, source = '--device'): DeviceRequest {
  const v = String(value).trim().toLowerCase();
  if ((DEVICE_REQUESTS as readonly string[]).includes(v)) return v as DeviceRequest;
  throw new Error(`invalid ${source} ${JSON.stringify(value)}: expected one of ${DEVICE_REQUESTS.join(', ')}`);
}

/**
 * The device request in force: the `--device` flag if given, else `SLICESERVE_DEVICE`, else
 * {@link DEFAULT_DEVICE_REQUEST}.
 * @throws Error (one line) naming the flag or the variable when its value is invalid.
 */
export function resolveDeviceRequest(flag?: string, env: NodeJS.ProcessEnv = process.env): DeviceRequest {
  if (flag !== undefined && flag !== '') return parseDeviceRequest(flag, '--device');
  const fromEnv = env[DEVICE_ENV_VAR];
  if (fromEnv !== undefined && fromEnv.trim() !== '') return parseDeviceRequest(fromEnv, DEVICE_ENV_VAR);
  return DEFAULT_DEVICE_REQUEST;
}

// ---------------------------------------------------------------------------------------------
// The host: where onnxruntime's libraries are, and what the dynamic loader can find.

/**
 * What the pre-checks look at. {@link defaultDeviceEnvironment} reads the real machine; tests
 * substitute parts of it.
 */
export interface DeviceEnvironment {
  platform: NodeJS.Platform;
  arch: string;
  /** Directory of `libonnxruntime.so.1` / `onnxruntime_binding.node`; providers load from here. */
  ortBinDir: string;
  /** Backends this onnxruntime-node build knows (`listSupportedBackends()`). */
  backends: readonly { name: string; bundled: boolean }[];
  fileExists(file: string): boolean;
  /** Full path of a shared library the dynamic loader would find by this soname, or undefined. */
  findLibrary(soname: string, extraDirs?: readonly string[]): string | undefined;
  /** DT_NEEDED and DT_RUNPATH/DT_RPATH of an ELF file; undefined when it cannot be read as ELF. */
  readElfDependencies(file: string): ElfDependencies | undefined;
  /** Vulkan ICD manifest files (`*.json`) the loader would consider. */
  vulkanIcdFiles(): string[];
}

/** Dynamic-section facts of an ELF shared object. */
export interface ElfDependencies {
  /** DT_NEEDED sonames, in file order. */
  needed: string[];
  /** DT_RUNPATH (or DT_RPATH) directories, `$ORIGIN` expanded. */
  runpath: string[];
}

/** Directory holding onnxruntime-node's native binding for this platform and arch. */
export function onnxruntimeBinDir(platform: string = process.platform, arch: string = process.arch): string {
  const pkg = path.dirname(require.resolve('onnxruntime-node/package.json'));
  return path.join(pkg, 'bin', 'napi-v6', platform, arch);
}

/** Directories glibc's loader searches when its cache (ldconfig) is unavailable. */
const FALLBACK_LIBRARY_DIRS = [
  '/lib/x86_64-linux-gnu',
  '/usr/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/lib64',
  '/usr/lib64',
  '/lib',
  '/usr/lib',
  '/usr/local/lib',
];

let ldconfigCacheMemo: Map<string, string[]> | undefined;

/**
 * Parses `ldconfig -p` output into soname -> paths (first entry is the loader's first choice).
 * Lines look like `\tlibvulkan.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libvulkan.so.1`.
 * On x64 and arm64 only entries tagged with that ABI ("x86-64", "AArch64") are kept: untagged
 * `(libc6)` entries there are 32-bit libraries the 64-bit loader would skip.
 */
export function parseLdconfigCache(text: string, arch: string = process.arch): Map<string, string[]> {
  const abiTag = arch === 'x64' ? 'x86-64' : arch === 'arm64' ? 'AArch64' : undefined;
  const cache = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S.*)$/.exec(line);
    if (!m) continue;
    const [, soname, flags, file] = m;
    if (abiTag && !flags.includes(abiTag)) continue;
    const list = cache.get(soname) ?? [];
    list.push(file.trim());
    cache.set(soname, list);
  }
  return cache;
}

function ldconfigCache(): Map<string, string[]> {
  if (ldconfigCacheMemo) return ldconfigCacheMemo;
  for (const exe of ['/sbin/ldconfig', '/usr/sbin/ldconfig', 'ldconfig']) {
    try {
      const out = execFileSync(exe, ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
      ldconfigCacheMemo = parseLdconfigCache(out);
      return ldconfigCacheMemo;
    } catch {
      // try the next location
    }
  }
  ldconfigCacheMemo = new Map();
  return ldconfigCacheMemo;
}

/**
 * Finds a shared library the way glibc's loader does, minus the loader's own quirks:
 * `extraDirs` (the object's RUNPATH), `LD_LIBRARY_PATH`, the ldconfig cache, then the
 * default directories.
 */
function findLibraryOnHost(soname: string, extraDirs: readonly string[] = []): string | undefined {
  const ldPath = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d !== '');
  for (const dir of [...extraDirs, ...ldPath]) {
    const file = path.join(dir, soname);
    if (fs.existsSync(file)) return file;
  }
  const cached = ldconfigCache().get(soname);
  if (cached && cached.length > 0) return cached[0];
  for (const dir of FALLBACK_LIBRARY_DIRS) {
    const file = path.join(dir, soname);
    if (fs.existsSync(file)) return file;
  }
  return undefined;
}

/**
 * Reads DT_NEEDED and DT_RUNPATH/DT_RPATH from a 64-bit little-endian ELF file through its
 * section headers (the `.dynamic` section and its linked string table). Reads only the headers
 * and those two sections, so a 230 MB provider library costs a few kilobytes of I/O.
 * Source: System V ABI, ELF-64 object file format (e_shoff, Elf64_Shdr, Elf64_Dyn).
 * @returns undefined when the file is missing, not ELF64 LE, or has no dynamic section.
 */
export function readElfDependencies(file: string): ElfDependencies | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const read = (offset: number, length: number): Buffer => {
      const buf = Buffer.alloc(length);
      const n = fs.readSync(fd, buf, 0, length, offset);
      if (n !== length) throw new Error('short read');
      return buf;
    };
    const ident = read(0, 64);
    // 0x7f 'E' 'L' 'F', EI_CLASS = 2 (64-bit), EI_DATA = 1 (little-endian)
    if (ident.readUInt32BE(0) !== 0x7f454c46 || ident[4] !== 2 || ident[5] !== 1) return undefined;
    const shoff = Number(ident.readBigUInt64LE(0x28));
    const shentsize = ident.readUInt16LE(0x3a);
    const shnum = ident.readUInt16LE(0x3c);
    if (shoff === 0 || shnum === 0 || shentsize < 64) return undefined;
    const sections = read(shoff, shentsize * shnum);
    const section = (i: number) => ({
      type: sections.readUInt32LE(i * shentsize + 4),
      offset: Number(sections.readBigUInt64LE(i * shentsize + 0x18)),
      size: Number(sections.readBigUInt64LE(i * shentsize + 0x20)),
      link: sections.readUInt32LE(i * shentsize + 0x28),
    });
    const SHT_DYNAMIC = 6;
    let dynamic: ReturnType<typeof section> | undefined;
    for (let i = 0; i < shnum; i++) {
      const s = section(i);
      if (s.type === SHT_DYNAMIC) {
        dynamic = s;
        break;
      }
    }
    if (!dynamic || dynamic.link >= shnum) return undefined;
    const strtab = section(dynamic.link);
    const strings = read(strtab.offset, strtab.size);
    const str = (at: number) => {
      const end = strings.indexOf(0, at);
      return strings.toString('utf8', at, end < 0 ? strings.length : end);
    };
    const entries = read(dynamic.offset, dynamic.size);
    const DT_NULL = 0n;
    const DT_NEEDED = 1n;
    const DT_RPATH = 15n;
    const DT_RUNPATH = 29n;
    const needed: string[] = [];
    let rpath: string[] = [];
    let runpath: string[] | undefined;
    for (let at = 0; at + 16 <= entries.length; at += 16) {
      const tag = entries.readBigInt64LE(at);
      const val = Number(entries.readBigUInt64LE(at + 8));
      if (tag === DT_NULL) break;
      if (tag === DT_NEEDED) needed.push(str(val));
      else if (tag === DT_RUNPATH) runpath = str(val).split(':');
      else if (tag === DT_RPATH) rpath = str(val).split(':');
    }
    const origin = path.dirname(path.resolve(file));
    const dirs = (runpath ?? rpath)
      .filter((d) => d !== '')
      .map((d) => d.replace(/\$(ORIGIN|\{ORIGIN\})/g, origin));
    return { needed, runpath: dirs };
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Vulkan ICD manifests the Vulkan loader would read: `VK_DRIVER_FILES`/`VK_ICD_FILENAMES` (files
 * or folders) if set, else the XDG config and data folders' `vulkan/icd.d`; plus
 * `VK_ADD_DRIVER_FILES`. Source: the Khronos Vulkan loader's driver-discovery documentation.
 */
function vulkanIcdFilesOnHost(): string[] {
  const list = (v: string | undefined) => (v ?? '').split(':').filter((f) => f !== '');
  const explicit = list(process.env.VK_DRIVER_FILES ?? process.env.VK_ICD_FILENAMES);
  const home = process.env.HOME;
  const dirs =
    explicit.length > 0
      ? []
      : [
          ...list(process.env.XDG_CONFIG_HOME ?? (home ? path.join(home, '.config') : undefined)),
          ...list(process.env.XDG_CONFIG_DIRS ?? '/etc/xdg'),
          '/etc',
          ...list(process.env.XDG_DATA_HOME ?? (home ? path.join(home, '.local', 'share') : undefined)),
          ...list(process.env.XDG_DATA_DIRS ?? '/usr/local/share:/usr/share'),
        ].map((d) => path.join(d, 'vulkan', 'icd.d'));
  const files: string[] = [];
  for (const entry of [...explicit, ...list(process.env.VK_ADD_DRIVER_FILES)]) {
    try {
      if (fs.statSync(entry).isDirectory()) dirs.push(entry);
      else files.push(entry);
    } catch {
      // missing: the loader skips it too
    }
  }
  for (const dir of dirs) {
    try {
      for (const f of fs.readdirSync(dir)) if (f.endsWith('.json')) files.push(path.join(dir, f));
    } catch {
      // directory absent
    }
  }
  return files;
}

/** The real machine: onnxruntime-node's install, the loader's search path, Vulkan ICDs. */
export function defaultDeviceEnvironment(): DeviceEnvironment {
  return {
    platform: process.platform,
    arch: process.arch,
    ortBinDir: onnxruntimeBinDir(),
    backends: ort.listSupportedBackends(),
    fileExists: (f) => fs.existsSync(f),
    findLibrary: findLibraryOnHost,
    readElfDependencies,
    vulkanIcdFiles: vulkanIcdFilesOnHost,
  };
}

// ---------------------------------------------------------------------------------------------
// Pre-checks: cheap, no onnxruntime session.

/** The verdict of a pre-check. When not available, `reason` and `fix` are one clause each. */
export interface DeviceProbe {
  device: Device;
  available: boolean;
  reason?: string;
  fix?: string;
  /** Non-fatal findings worth a warning (e.g. cuDNN not found). */
  notes: string[];
}

const CUDA_PROVIDER_FIX =
  'reinstall onnxruntime-node with its CUDA provider (`ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node`, ' +
  'which downloads it from NuGet) or run the Docker image (docs/gpu.md)';

function unavailable(device: Device, reason: string, fix: string, notes: string[] = []): DeviceProbe {
  return { device, available: false, reason, fix, notes };
}

/** Major version N of `libcudart.so.N` / `libcublas.so.N` among sonames, if any. */
function cudaMajor(sonames: readonly string[]): string | undefined {
  for (const s of sonames) {
    const m = /^lib(?:cudart|cublas)\.so\.(\d+)$/.exec(s);
    if (m) return m[1];
  }
  return undefined;
}

function probeCuda(env: DeviceEnvironment): DeviceProbe {
  if (!env.backends.some((b) => b.name === 'cuda')) {
    return unavailable(
      'cuda',
      `onnxruntime-node on ${env.platform}/${env.arch} has no CUDA backend`,
      'use Linux x64 or Windows x64 with an NVIDIA GPU',
    );
  }
  const win = env.platform === 'win32';
  const providerName = win ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
  const sharedName = win ? 'onnxruntime_providers_shared.dll' : 'libonnxruntime_providers_shared.so';
  const provider = path.join(env.ortBinDir, providerName);
  for (const name of [providerName, sharedName]) {
    if (!env.fileExists(path.join(env.ortBinDir, name))) {
      return unavailable('cuda', `the CUDA provider library ${name} is not installed in ${env.ortBinDir}`, CUDA_PROVIDER_FIX);
    }
  }
  if (env.platform !== 'linux') return { device: 'cuda', available: true, notes: [] };

  const deps = env.readElfDependencies(provider);
  if (!deps) {
    return unavailable('cuda', `${provider} is not a readable ELF shared library (truncated download?)`, CUDA_PROVIDER_FIX);
  }
  const searchDirs = [...deps.runpath, env.ortBinDir];
  const missing = deps.needed.filter((soname) => env.findLibrary(soname, searchDirs) === undefined);
  const major = cudaMajor(deps.needed) ?? '12';
  if (missing.includes('libcuda.so.1')) {
    return unavailable(
      'cuda',
      'no NVIDIA driver: libcuda.so.1 is not on the library path',
      'run on a machine with an NVIDIA GPU and driver (in Docker: `docker run --gpus all`)',
    );
  }
  if (missing.length > 0) {
    return unavailable(
      'cuda',
      `the CUDA ${major} libraries ${missing.join(', ')} needed by ${providerName} are not on the library path`,
      `install the CUDA ${major} runtime with cuBLAS and cuDNN 9 (e.g. the nvidia/cuda:${major}.x-cudnn-runtime image) ` +
        'or add their directories to LD_LIBRARY_PATH',
    );
  }
  const notes: string[] = [];
  // cuDNN is loaded lazily by the CUDA provider, so it is not a DT_NEEDED entry.
  if (env.findLibrary('libcudnn.so.9', searchDirs) === undefined) {
    notes.push('cuDNN 9 (libcudnn.so.9) not found: CUDA kernels that use cuDNN will fail');
  }
  return { device: 'cuda', available: true, notes };
}

/** ICD manifests of CPU (software) Vulkan drivers: lavapipe, SwiftShader. */
const SOFTWARE_ICD = /lvp|lavapipe|swiftshader|llvmpipe/i;

function probeWebgpu(env: DeviceEnvironment, forAuto: boolean): DeviceProbe {
  if (!env.backends.some((b) => b.name === 'webgpu')) {
    return unavailable(
      'webgpu',
      `onnxruntime-node on ${env.platform}/${env.arch} has no WebGPU backend`,
      'use --device cpu (or cuda)',
    );
  }
  if (env.platform !== 'linux') return { device: 'webgpu', available: true, notes: [] };
  if (env.findLibrary('libvulkan.so.1') === undefined) {
    return unavailable(
      'webgpu',
      'no Vulkan loader: libvulkan.so.1 is not on the library path',
      "install it (Debian/Ubuntu: `apt-get install libvulkan1`) together with the GPU driver's Vulkan ICD",
    );
  }
  const icds = env.vulkanIcdFiles();
  if (forAuto && icds.length === 0) {
    return unavailable(
      'webgpu',
      'the Vulkan loader is there but no Vulkan driver (ICD manifest in /etc/vulkan/icd.d or /usr/share/vulkan/icd.d)',
      "install the GPU driver's Vulkan ICD or point VK_DRIVER_FILES at its manifest (NVIDIA: nvidia_icd.json)",
    );
  }
  if (forAuto && icds.every((f) => SOFTWARE_ICD.test(path.basename(f)))) {
    return unavailable(
      'webgpu',
      `only software Vulkan drivers are installed (${icds.map((f) => path.basename(f)).join(', ')}), slower than the CPU provider`,
      "install the GPU driver's Vulkan ICD, or ask for --device webgpu explicitly",
    );
  }
  return { device: 'webgpu', available: true, notes: [] };
}

/**
 * Cheap pre-check of one device, without creating a session: provider libraries present,
 * their shared-library dependencies found, a Vulkan loader for WebGPU. A device that passes may
 * still fail in onnxruntime (e.g. a driver without a GPU); one that fails cannot start.
 * @param forAuto when true, WebGPU without a GPU Vulkan driver (no ICD manifest, or only software
 *   ones such as lavapipe) counts as unavailable; an explicit request lets onnxruntime try.
 */
export function probeDevice(
  device: Device,
  env: DeviceEnvironment = defaultDeviceEnvironment(),
  forAuto = false,
): DeviceProbe {
  switch (device) {
    case 'cpu':
      return { device, available: true, notes: [] };
    case 'cuda':
      return probeCuda(env);
    case 'webgpu':
      return probeWebgpu(env, forAuto);
  }
}

/**
 * Turns onnxruntime's error for a failed provider into a reason and a fix, or returns
 * undefined when the error does not look device-related (e.g. an invalid model).
 */
export function explainProviderFailure(device: Device, message: string): { reason: string; fix: string } | undefined {
  const first = message.split('\n').find((l) => l.trim() !== '')?.trim() ?? message;
  const short = first.length > 240 ? `${first.slice(0, 237)}...` : first;
  if (device === 'cuda') {
    if (/Failed to load (shared )?library/i.test(message)) {
      return {
        reason: `onnxruntime could not load the CUDA provider (${short})`,
        fix: `check its dependencies with \`ldd libonnxruntime_providers_cuda.so\` (CUDA runtime, cuBLAS, cuRAND, cuDNN 9) or ${CUDA_PROVIDER_FIX}`,
      };
    }
    if (/CUDA|cuda|cudnn|CUDNN|cublas|CUBLAS|no CUDA-capable device|driver/.test(message)) {
      return {
        reason: `the CUDA provider failed to start (${short})`,
        fix: 'check `nvidia-smi`, that the driver supports the provider\'s CUDA version, and CUDA_VISIBLE_DEVICES',
      };
    }
    return undefined;
  }
  if (device === 'webgpu') {
    if (/adapter/i.test(message)) {
      return {
        reason: 'WebGPU found no GPU adapter (the Vulkan loader is there, but no Vulkan driver for a GPU)',
        fix:
          "install the GPU driver's Vulkan ICD (NVIDIA: nvidia_icd.json, or point VK_DRIVER_FILES at it); " +
          'in Docker add NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics',
      };
    }
    if (/webgpu|dawn|vulkan|device/i.test(message)) {
      return { reason: `the WebGPU provider failed to start (${short})`, fix: 'check the Vulkan driver (`vulkaninfo --summary`)' };
    }
    return undefined;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Session creation.

/** Options of {@link createSessionOnDevice}. */
export interface CreateSessionOnDeviceOptions {
  device: DeviceRequest;
  /**
   * onnxruntime session options, or a function of the device being tried (e.g. to set
   * `preferredOutputLocation: 'gpu-buffer'` only for webgpu). `executionProviders` is ignored.
   */
  sessionOptions?: DeviceSessionOptions | ((device: Device) => DeviceSessionOptions);
  /** Where `auto` reports its choice and each failed device; default: stderr. */
  logger?: DeviceLogger;
  /** CUDA device ordinal (after CUDA_VISIBLE_DEVICES); default 0. */
  cudaDeviceId?: number;
  /** Substitute host facts (tests). */
  environment?: DeviceEnvironment;
  /** Substitute session factory (tests); default `ort.InferenceSession.create`. */
  createSession?: (
    model: string | Uint8Array,
    options: ort.InferenceSession.SessionOptions,
  ) => Promise<ort.InferenceSession>;
}

/** The session and the device it runs on, with every device tried on the way. */
export interface SessionOnDevice {
  session: ort.InferenceSession;
  device: Device;
  attempts: DeviceAttempt[];
}

const stderrLogger: DeviceLogger = {
  info: (msg) => process.stderr.write(`sliceserve: ${msg}\n`),
  warn: (msg) => process.stderr.write(`sliceserve: ${msg}\n`),
};

function providerConfig(device: Device, cudaDeviceId: number): ort.InferenceSession.ExecutionProviderConfig {
  switch (device) {
    case 'cpu':
      return 'cpu';
    case 'cuda':
      return { name: 'cuda', deviceId: cudaDeviceId };
    case 'webgpu':
      return 'webgpu';
  }
}

/**
 * Opens an onnxruntime session on the requested device.
 *
 * - `cpu`, `cuda`, `webgpu`: that provider alone; a GPU device that cannot start throws
 *   {@link DeviceUnavailableError} (one line: what is missing and the fix), usually from the
 *   pre-check, before onnxruntime is called.
 * - `auto`: tries cuda, webgpu, cpu in turn, each as its own single-provider session (onnxruntime
 *   does not fall back from a provider list), logs one warning line per device that failed and
 *   one info line naming the device it got.
 *
 * Errors that are not about the device (an invalid model, a missing external-data file) are
 * rethrown unchanged, from cpu or from an explicit device.
 *
 * @param model an ONNX model: a file path or its bytes (the same bytes may be tried several times).
 * @throws DeviceUnavailableError for an explicit device that cannot start; Error for a device
 *   request that is not one of auto, cpu, cuda, webgpu.
 */
export async function createSessionOnDevice(
  model: string | Uint8Array,
  opts: CreateSessionOnDeviceOptions,
): Promise<SessionOnDevice> {
  const request = parseDeviceRequest(opts.device, 'device'); // guards untyped callers
  const env = opts.environment ?? defaultDeviceEnvironment();
  const logger = opts.logger ?? stderrLogger;
  // Narrowing picks one of InferenceSession.create's overloads (path or bytes).
  const create =
    opts.createSession ??
    ((m, o) => (typeof m === 'string' ? ort.InferenceSession.create(m, o) : ort.InferenceSession.create(m, o)));
  const auto = request === 'auto';
  const candidates: readonly Device[] = auto ? AUTO_DEVICE_ORDER : [request as Device];
  const attempts: DeviceAttempt[] = [];

  for (const device of candidates) {
    const probe = probeDevice(device, env, auto);
    if (!probe.available) {
      const reason = probe.reason ?? 'unavailable';
      attempts.push({ device, ok: false, reason });
      if (!auto) throw new DeviceUnavailableError(device, reason, probe.fix ?? '');
      logger.warn(`device auto: ${device} unavailable: ${reason}`);
      continue;
    }
    const base = typeof opts.sessionOptions === 'function' ? opts.sessionOptions(device) : (opts.sessionOptions ?? {});
    const { executionProviders: _ignored, ...rest } = base as ort.InferenceSession.SessionOptions;
    void _ignored;
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      ...rest,
      executionProviders: [providerConfig(device, opts.cudaDeviceId ?? 0)],
    };
    try {
      const session = await create(model, sessionOptions);
      attempts.push({ device, ok: true });
      for (const note of probe.notes) logger.warn(`device ${device}: ${note}`);
      if (auto) {
        logger.info(`device auto: using ${device} (${EXECUTION_PROVIDER_NAMES[device]}, onnxruntime ${onnxruntimeVersion()})`);
      }
      return { session, device, attempts };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const explained = device === 'cpu' ? undefined : explainProviderFailure(device, message);
      if (!auto) {
        if (explained) throw new DeviceUnavailableError(device, explained.reason, explained.fix);
        throw err;
      }
      if (device === 'cpu') throw err;
      const reason = explained?.reason ?? `onnxruntime failed: ${message.split('\n')[0]}`;
      attempts.push({ device, ok: false, reason });
      logger.warn(`device auto: ${device} unavailable: ${reason}`);
    }
  }
  // Unreachable: cpu is last in AUTO_DEVICE_ORDER and either returns or throws.
  throw new Error('device auto: no device could start');
}

// ---------------------------------------------------------------------------------------------
// Reporting.

/** onnxruntime-node's version string (e.g. "1.29.0"). */
export function onnxruntimeVersion(): string {
  const v = ort.env.versions as { node?: string; common?: string };
  return v.node ?? v.common ?? 'unknown';
}

/** Device facts for `/metrics` labels and the bench report's `machine` block. */
export interface DeviceDescription {
  /** The device in use, or null when describing the host only. */
  device: Device | null;
  /** onnxruntime's provider name, e.g. "CUDAExecutionProvider". */
  executionProvider: string | null;
  onnxruntimeVersion: string;
  /** `${process.platform}/${process.arch}` */
  platform: string;
  /** Pre-check verdict of each GPU device on this host (no session is created). */
  available: Record<Device, boolean>;
  /** Attempts of the selection that produced `device`, when given. */
  attempts: DeviceAttempt[];
}

/**
 * Describes the device a session runs on (when `selection` is given) and what this host
 * offers, for `/metrics` and bench reports. Runs only the cheap pre-checks.
 */
export function describeDevice(
  selection?: { device: Device; attempts?: DeviceAttempt[] },
  env: DeviceEnvironment = defaultDeviceEnvironment(),
): DeviceDescription {
  const available = {} as Record<Device, boolean>;
  for (const d of AUTO_DEVICE_ORDER) available[d] = probeDevice(d, env).available;
  return {
    device: selection?.device ?? null,
    executionProvider: selection ? EXECUTION_PROVIDER_NAMES[selection.device] : null,
    onnxruntimeVersion: onnxruntimeVersion(),
    platform: `${env.platform}/${env.arch}`,
    available,
    attempts: selection?.attempts ?? [],
  };
}
