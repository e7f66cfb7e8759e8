/**
 * Cache of the onnxruntime sessions that run the graphs of onnx-graphs.ts: one session per
 * graph, created on first use, CPU provider, intra-op threads = os.availableParallelism().
 */
import os from 'node:os';
import * as ort from 'onnxruntime-node';

const sessions = new Map<string, Promise<ort.InferenceSession>>();

/**
 * The cached session for `key`, created from `build()` the first time.
 * Memory arena and memory patterns are off (shapes change from call to call, and a
 * 200 MB float64 intermediate should not stay allocated), spinning is off (the machine's
 * cores are shared with JS work between calls).
 */
export function linalgSession(key: string, build: () => Uint8Array): Promise<ort.InferenceSession> {
  let session = sessions.get(key);
  if (!session) {
    session = ort.InferenceSession.create(build(), {
      executionProviders: ['cpu'],
      intraOpNumThreads: os.availableParallelism(),
      interOpNumThreads: 1,
      enableCpuMemArena: false,
      enableMemPattern: false,
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    sessions.set(key, session);
    // A failed creation is not cached, so a later call retries.
    session.catch(() => sessions.delete(key));
  }
  return session;
}

/** Releases every cached session (they are recreated on the next use). */
export async function releaseLinalgSessions(): Promise<void> {
  const all = [...sessions.values()];
  sessions.clear();
  await Promise.allSettled(all.map(async (s) => (await s).release()));
}
