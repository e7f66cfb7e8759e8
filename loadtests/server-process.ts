/**
 * The SliceServe server as a child process of the load generator: started on a free
 * loopback port, waited for (`/health`, then every expected model in `/v1/models`), and
 * always stopped at the end: SIGTERM to its process group, SIGKILL after a grace period,
 * and a synchronous SIGKILL on process exit if anything else failed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';

/** One entry of `GET /v1/models` (SliceServe's fields; see issue 4 and SERVING.md). */
export interface ModelCard {
  id: string;
  object?: string;
  root?: string;
  /** The dense model's id; absent on a dense entry. */
  parent?: string | null;
  max_model_len?: number;
  slicing?: {
    sparsity: number;
    /** Residual width after slicing, d'. */
    hidden_size: number;
    original_hidden_size: number;
    parameters?: number;
  } | null;
  /** Weight precision: float32 / float16, int8 / int4 (absent on servers before issue 13: float). */
  precision?: string;
  /** How the weights are quantized (absent for float weights). */
  quantization?: {
    method: string;
    linear: { bits: number; block_size: number; symmetric: boolean };
    head: { bits: number; block_size: number; symmetric: boolean } | null;
    shortcuts: { bits: number; block_size: number; symmetric: boolean } | null;
    rotation?: string | null;
    quantized_bytes?: number;
  } | null;
}

/** A free TCP port on 127.0.0.1 (bound and released; another process could take it in between). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** GET `url` as JSON with a short timeout; null on any failure. */
async function getJson(url: string, apiKey?: string): Promise<{ status: number; body: unknown } | null> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000), headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: res.status, body };
  } catch {
    return null;
  }
}

/** The `data` list of `GET <baseUrl>/v1/models`, or null while the server does not answer 200. */
export async function listModels(baseUrl: string, apiKey?: string): Promise<ModelCard[] | null> {
  const r = await getJson(`${baseUrl}/v1/models`, apiKey);
  if (!r || r.status !== 200) return null;
  const data = (r.body as { data?: unknown }).data;
  return Array.isArray(data) ? (data as ModelCard[]) : null;
}

/**
 * Polls `baseUrl` until `/health` answers 200 and `ready(models)` holds for `/v1/models`.
 *
 * @param alive called before each poll; when it returns a string, waiting stops with that error.
 * @throws Error on timeout (naming the models seen) or when `alive` reports a failure.
 */
export async function waitForServer(
  baseUrl: string,
  ready: (models: ModelCard[]) => boolean,
  timeoutS: number,
  opts: { apiKey?: string; alive?: () => string | null; signal?: AbortSignal; intervalMs?: number } = {},
): Promise<ModelCard[]> {
  const deadline = Date.now() + timeoutS * 1000;
  let seen: ModelCard[] = [];
  for (;;) {
    const dead = opts.alive?.();
    if (dead) throw new Error(dead);
    if (opts.signal?.aborted) throw new Error('interrupted while waiting for the server');
    const health = await getJson(`${baseUrl}/health`, opts.apiKey);
    if (health?.status === 200) {
      const models = await listModels(baseUrl, opts.apiKey);
      if (models) {
        seen = models;
        if (ready(models)) return models;
      }
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `the server at ${baseUrl} was not ready after ${timeoutS} s (models seen: ${seen.map((m) => m.id).join(', ') || 'none'}); raise --server-timeout or check the server log`,
      );
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 500));
  }
}

/** A spawned server; {@link stop} is idempotent. */
export class ServerProcess {
  private exited = false;
  private exitInfo = '';
  private readonly onExit = (): void => this.killNow();

  private constructor(
    private readonly child: ChildProcess,
    /** Where the server's stdout and stderr go. */
    readonly logFile: string,
  ) {
    child.once('exit', (code, signal) => {
      this.exited = true;
      this.exitInfo = signal ? `signal ${signal}` : `exit code ${code}`;
      process.removeListener('exit', this.onExit);
    });
    process.once('exit', this.onExit);
  }

  /**
   * Spawns `command args...` in its own process group, stdout and stderr appended to `logFile`.
   *
   * @throws Error when the command cannot be spawned.
   */
  static start(command: string, args: string[], opts: { cwd: string; logFile: string; env?: NodeJS.ProcessEnv }): ServerProcess {
    const log = fs.openSync(opts.logFile, 'a');
    try {
      const child = spawn(command, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', log, log], detached: true });
      return new ServerProcess(child, opts.logFile);
    } finally {
      fs.closeSync(log);
    }
  }

  /** The child's pid. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Null while running; otherwise a one-line error naming the exit and the log's tail. */
  failure(): string | null {
    if (!this.exited) return null;
    return `the server exited early (${this.exitInfo}); last lines of ${this.logFile}:\n${this.logTail(15)}`;
  }

  /** The last `lines` lines of the server log. */
  logTail(lines: number): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  private signal(sig: NodeJS.Signals): void {
    if (this.exited || this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, sig); // the whole process group we created
    } catch {
      try {
        this.child.kill(sig);
      } catch {
        /* already gone */
      }
    }
  }

  /** SIGKILL now, synchronously (used on process exit). */
  killNow(): void {
    this.signal('SIGKILL');
  }

  /** SIGTERM, then SIGKILL after `graceS` seconds if it has not exited; resolves once it has. */
  async stop(graceS = 10): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceS * 1000);
    await exited;
    clearTimeout(timer);
  }
}
