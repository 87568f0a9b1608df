/**
 * Shared set-up for the live-kernel tests: probe once whether liburing opens
 * and io_uring_setup works (printing why not), and make temp files on /tmp.
 *
 * @module
 */

import { LiveRing, liveRingUnavailable } from "../../ffi/liburing.ts";
import { Libc, O } from "../../ffi/libc.ts";

/** Why the live tests are skipped, or null. Printed once per test file. */
export const SKIP: string | null = liveRingUnavailable();
if (SKIP !== null) console.log(`SKIP live io_uring tests: ${SKIP}`);

/** Deno.test `ignore` value. */
export const ignore: boolean = SKIP !== null;

/** A fresh ring or a thrown error (tests only run when the probe passed). */
export function newRing(entries: number, opts: { cqEntries?: number; flags?: number } = {}) {
  const r = LiveRing.create(entries, opts);
  if (!("ring" in r)) throw new Error(`io_uring_queue_init_params: ${r.res} (${r.errno})`);
  return r.ring;
}

/** A temp dir on /tmp (ext4 here) with files opened through libc, removed on dispose. */
export class TempFiles implements Disposable {
  readonly dir: string;
  readonly libc: Libc = Libc.open();
  readonly #fds: number[] = [];

  constructor() {
    this.dir = Deno.makeTempDirSync({ dir: "/tmp", prefix: "premap-ffi-" });
  }

  /** open() a file in the dir; throws on failure (set-up, not the behaviour under test). */
  open(name: string, flags = O.RDWR | O.CREAT, size = 0): number {
    const fd = this.libc.open(`${this.dir}/${name}`, flags, 0o600);
    if (fd < 0) throw new Error(`open ${name}: ${fd}`);
    this.#fds.push(fd);
    if (size > 0 && this.libc.ftruncate(fd, size) !== 0) throw new Error(`ftruncate ${name}`);
    return fd;
  }

  [Symbol.dispose](): void {
    for (const fd of this.#fds) this.libc.close(fd);
    Deno.removeSync(this.dir, { recursive: true });
  }
}

/** Deterministic test pattern: byte i of block `seed`. */
export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}
