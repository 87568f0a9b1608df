/**
 * Helpers for the io_uring mirror tests: a kernel, a ring, user memory and
 * SQE submission in one call.
 *
 * @module
 */

import { Kernel } from "../../sim/kernel.ts";
import { SimRing, type SimRingOptions } from "../../sim/io_uring/io_uring.ts";
import { type Cqe, encodeIovecs } from "../../sim/uapi/ring_api.ts";
import { encodeSqe, PARAMS, type SqeFields } from "../../sim/uapi/io_uring.ts";
import type { Vma } from "../../sim/memory/mm.ts";

/** Build io_uring_params bytes with `flags` and `cqEntries`. */
export function params(flags = 0, cqEntries = 0): Uint8Array {
  const p = new Uint8Array(PARAMS.SIZE);
  const v = new DataView(p.buffer);
  v.setUint32(PARAMS.flags, flags, true);
  v.setUint32(PARAMS.cqEntries, cqEntries, true);
  return p;
}

/** A fresh kernel and a ring of `entries`; throws if setup fails. */
export function newRing(
  entries = 8,
  flags = 0,
  opts: SimRingOptions = {},
  kernel = new Kernel({ seed: 7 }),
): { k: Kernel; ring: SimRing } {
  const ring = SimRing.setup(kernel, entries, params(flags), opts);
  if (typeof ring === "number") throw new Error(`setup failed: ${ring}`);
  return { k: kernel, ring };
}

/** Push SQEs, submit waiting for `wait` (default: all), return the CQEs reaped. */
export function run(ring: SimRing, sqes: SqeFields[], wait = sqes.length): Cqe[] {
  for (const s of sqes) if (!ring.pushSqe(encodeSqe(s))) throw new Error("SQ full");
  const r = ring.submit(wait);
  if (r < 0) throw new Error(`submit: ${r}`);
  return ring.reap();
}

/** `[userData, res]` pairs, for compact exact assertions. */
export function pairs(cqes: Cqe[]): [number, number][] {
  return cqes.map((c) => [Number(c.userData), c.res]);
}

/** An iovec array in user memory. */
export function iovecsInUser(k: Kernel, bufs: { addr: bigint; len: number }[]): Vma {
  const v = k.mm.mmap(Math.max(16 * bufs.length, 16));
  v.bytes.set(encodeIovecs(bufs));
  return v;
}

/** An s32 array in user memory. */
export function fdsInUser(k: Kernel, fds: number[]): Vma {
  const v = k.mm.mmap(Math.max(4 * fds.length, 4));
  const dv = new DataView(v.bytes.buffer, v.bytes.byteOffset);
  fds.forEach((fd, i) => dv.setInt32(4 * i, fd, true));
  return v;
}

/** Bytes `[0, n)` filled with a pattern depending on `seed`. */
export function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}
