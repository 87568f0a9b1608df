/**
 * IORING_OP_TIMEOUT, IORING_OP_LINK_TIMEOUT and IORING_OP_TIMEOUT_REMOVE
 * (io_uring/timeout.c), on the kernel's clock ({@link Kernel.addTimer}: the
 * virtual clock on `sim`, CLOCK_MONOTONIC on `real`).
 *
 * - A TIMEOUT completes with -ETIME when its timer expires, with 0 when
 *   `off` (sqe->off, a u32) further CQEs have been posted (its sequence is
 *   counted from the CQ tail less the timeouts that completed by firing or
 *   by count, `cq_timeouts`), with -ECANCELED when TIMEOUT_REMOVE or ring
 *   teardown cancels it. IORING_TIMEOUT_MULTISHOT re-arms after each expiry
 *   and posts -ETIME with IORING_CQE_F_MORE until its count runs out.
 * - A LINK_TIMEOUT guards the request before it in a link chain. It is armed
 *   when that request is issued; if the request completes first the timeout
 *   completes with -ECANCELED (a completion, not a failure: its
 *   IOSQE_CQE_SKIP_SUCCESS still holds); if the timer fires first the request
 *   is cancelled by user_data (io_try_cancel: only timeouts can be cancelled
 *   in the mirror, anything else answers -ENOENT) and the timeout completes
 *   with -ETIME, or with the cancel's error.
 * - TIMEOUT_REMOVE cancels a timeout by user_data (-ENOENT when none), or
 *   with IORING_TIMEOUT_UPDATE re-arms it with a new expiry (it becomes a
 *   pure timer), IORING_LINK_TIMEOUT_UPDATE the same for a linked timeout.
 *
 * Every completion goes through task work, as in the kernel, so a timeout's
 * CQE follows the CQEs of the batch that triggered it.
 *
 * @module
 */

import type { KernelTimer } from "../kernel.ts";
import { Errno } from "../uapi/errno.ts";
import {
  IORING_CQE_F,
  IORING_OP,
  IORING_TIMEOUT,
  IORING_TIMEOUT_CLOCK_MASK,
  IORING_TIMEOUT_UPDATE_MASK,
  IOSQE,
  KERNEL_TIMESPEC,
} from "../uapi/io_uring.ts";
import { type IoKiocb, type IoRingCtx, IOU_ISSUE_QUEUED } from "./io_uring_types.ts";

/** KTIME_MAX: the largest ktime_t (s64 ns). */
export const KTIME_MAX = (1n << 63n) - 1n;
const NSEC_PER_SEC = 1_000_000_000n;
/** KTIME_SEC_MAX */
const KTIME_SEC_MAX = KTIME_MAX / NSEC_PER_SEC;

/** struct io_timeout + struct io_timeout_data: one TIMEOUT or LINK_TIMEOUT. */
export interface IoTimeoutData {
  /** The request. */
  readonly req: IoKiocb;
  /** sqe->off: CQEs to wait for (0: a pure timer). */
  off: number;
  /** The CQ sequence at which a counted timeout completes (u32). */
  targetSeq: number;
  /** Multishot expiries left (0: unlimited). */
  repeats: number;
  /** IORING_TIMEOUT_* */
  readonly flags: number;
  /** The timespec as a ktime (ns), relative or absolute per `abs`. */
  tsNs: bigint;
  /** HRTIMER_MODE_ABS */
  abs: boolean;
  /** LINK_TIMEOUT: the request it guards, until one of them completes. */
  head: IoKiocb | null;
  /** LINK_TIMEOUT: the guarded request, as taken by the timer. */
  prev: IoKiocb | null;
  /** The armed timer. */
  timer: KernelTimer | null;
  /** Which list holds it (ctx->timeout_list or ctx->ltimeout_list). */
  list: "timeout" | "ltimeout" | null;
}

/** The ring's timeout state (the timeout fields of struct io_ring_ctx). */
export class TimeoutState {
  /** ctx->timeout_list: counted timeouts first, by target, then pure timers in arrival order. */
  readonly timeoutList: IoTimeoutData[] = [];
  /** ctx->ltimeout_list: armed linked timeouts. */
  readonly ltimeoutList: IoTimeoutData[] = [];
  /** ctx->cq_timeouts: timeouts that completed by expiry or by count (u32). */
  cqTimeouts = 0;
  /** ctx->cq_last_tm_flush (u32). */
  cqLastTmFlush = 0;
  /** ctx->off_timeout_used: a counted timeout was ever prepared. */
  offTimeoutUsed = false;
}

/** What a timeout needs of its ring beyond {@link IoRingCtx}. */
export interface TimeoutCtx extends IoRingCtx {
  /** The ring's timeout state. */
  readonly timeouts: TimeoutState;
  /** ctx->cached_cq_tail: CQEs written into the CQ ring so far (u32). */
  readonly cachedCqTail: number;
  /** ctx->submit_state.link: the chain being assembled. */
  readonly submitLink: { readonly head: IoKiocb | null; readonly last: IoKiocb | null };
  /** io_req_task_work_add(): run `fn` as task work. */
  taskWorkAdd(fn: () => void): void;
  /** req_set_fail() */
  reqSetFail(req: IoKiocb): void;
  /** io_req_task_complete() in task work: post `req`'s CQE and free it (`res` already set). */
  taskComplete(req: IoKiocb): void;
  /**
   * io_req_post_cqe(): post a CQE for `req` now, the request staying alive;
   * false when the CQ ring is full or has a backlog (nothing is posted then).
   */
  postReqCqe(req: IoKiocb, res: number, cflags: number): boolean;
}

function tctx(req: IoKiocb): TimeoutCtx {
  return req.ctx as TimeoutCtx;
}

function hweight32(x: number): number {
  let n = 0;
  for (let v = x >>> 0; v; v &= v - 1) n++;
  return n;
}

/**
 * get_timespec64() + timespec64_to_ktime(): the timespec at `addr` as ns, or
 * -EFAULT; -EINVAL for a negative field (the callers' check).
 */
function readTimespec(req: IoKiocb, addr: bigint): bigint | number {
  const raw = req.ctx.kernel.mm.copyFromUser(addr, KERNEL_TIMESPEC.SIZE);
  if (typeof raw === "number") return -Errno.EFAULT;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const sec = v.getBigInt64(KERNEL_TIMESPEC.tvSec, true);
  const nsec = v.getBigInt64(KERNEL_TIMESPEC.tvNsec, true);
  if (sec < 0n || nsec < 0n) return -Errno.EINVAL;
  if (sec >= KTIME_SEC_MAX) return KTIME_MAX;
  // ktime_set(): s64 arithmetic, which a huge tv_nsec makes wrap.
  return BigInt.asIntN(64, sec * NSEC_PER_SEC + nsec);
}

/** The clock a timeout runs on, in ns (io_timeout_get_clock()). */
function clockNow(ctx: IoRingCtx, flags: number): bigint {
  const k = ctx.kernel;
  const mono = BigInt(Math.round(k.clock.nowNs()));
  // CLOCK_BOOTTIME equals CLOCK_MONOTONIC on a host that never suspends.
  return flags & IORING_TIMEOUT.REALTIME ? mono + BigInt(k.realtimeOffsetNs) : mono;
}

/** hrtimer_start(): call `fn` at the timeout's expiry on its clock. */
function hrtimerStart(req: IoKiocb, t: IoTimeoutData, fn: () => void): void {
  let delay = t.tsNs;
  if (t.abs) delay -= clockNow(req.ctx, t.flags);
  if (delay < 0n) delay = 0n; // an expiry in the past fires at once
  t.timer = req.ctx.kernel.addTimer(Number(delay), fn);
}

/** hrtimer_try_to_cancel(): the callback never runs concurrently here, so it always succeeds. */
function hrtimerCancel(t: IoTimeoutData): void {
  t.timer?.cancel();
  t.timer = null;
}

function listDel(st: TimeoutState, t: IoTimeoutData): void {
  const list = t.list === "timeout"
    ? st.timeoutList
    : t.list === "ltimeout"
    ? st.ltimeoutList
    : null;
  if (list) {
    const i = list.indexOf(t);
    if (i >= 0) list.splice(i, 1);
  }
  t.list = null;
}

/** io_is_timeout_noseq() */
function isNoseq(t: IoTimeoutData): boolean {
  return !t.off || (t.flags & IORING_TIMEOUT.MULTISHOT) !== 0;
}

/** __io_timeout_prep() */
function timeoutPrep(req: IoKiocb, isLink: boolean): number {
  const s = req.sqe;
  const off = Number(s.off & 0xffffffffn);
  if (s.bufIndex || s.len !== 1 || s.fileIndex) return -Errno.EINVAL;
  if (off && isLink) return -Errno.EINVAL;
  const flags = s.rwFlags;
  const valid = IORING_TIMEOUT.ABS | IORING_TIMEOUT_CLOCK_MASK | IORING_TIMEOUT.ETIME_SUCCESS |
    IORING_TIMEOUT.MULTISHOT;
  if (flags & ~valid) return -Errno.EINVAL;
  if (hweight32(flags & IORING_TIMEOUT_CLOCK_MASK) > 1) return -Errno.EINVAL;
  // Multishot only makes sense with a relative expiry.
  if ((flags & IORING_TIMEOUT.MULTISHOT) && (flags & IORING_TIMEOUT.ABS)) return -Errno.EINVAL;
  const ctx = tctx(req);
  if (off) ctx.timeouts.offTimeoutUsed = true;
  const t: IoTimeoutData = {
    req,
    off,
    targetSeq: 0,
    repeats: (flags & IORING_TIMEOUT.MULTISHOT) && off > 0 ? off : 0,
    flags,
    tsNs: 0n,
    abs: (flags & IORING_TIMEOUT.ABS) !== 0,
    head: null,
    prev: null,
    timer: null,
    list: null,
  };
  const ts = readTimespec(req, s.addr);
  if (typeof ts === "number") return ts;
  t.tsNs = ts;
  if (isLink) {
    const link = ctx.submitLink;
    if (!link.head || !link.last) return -Errno.EINVAL;
    if (link.last.sqe.opcode === IORING_OP.LINK_TIMEOUT) return -Errno.EINVAL;
    t.head = link.last;
    link.last.armLtimeout = true;
  }
  req.op = t;
  return 0;
}

/** io_timeout_prep() */
export function ioTimeoutPrep(req: IoKiocb): number {
  return timeoutPrep(req, false);
}

/** io_link_timeout_prep() */
export function ioLinkTimeoutPrep(req: IoKiocb): number {
  return timeoutPrep(req, true);
}

/** io_no_issue(): a linked timeout is never issued on its own. */
export function ioNoIssue(_req: IoKiocb): number {
  return -Errno.ECANCELED;
}

/** io_timeout(): queue the timeout, sorted by target for a counted one, and start its timer. */
export function ioTimeout(req: IoKiocb): number {
  const t = req.op as IoTimeoutData;
  const ctx = tctx(req);
  const st = ctx.timeouts;
  let at = st.timeoutList.length;
  if (!isNoseq(t)) {
    const tail = (ctx.cachedCqTail - st.cqTimeouts) >>> 0;
    t.targetSeq = (tail + t.off) >>> 0;
    st.cqLastTmFlush = tail;
    // Insertion sort from the back, so the first entry is the one needed first.
    let i = st.timeoutList.length - 1;
    for (; i >= 0; i--) {
      const n = st.timeoutList[i];
      if (isNoseq(n)) continue;
      if (t.off >= ((n.targetSeq - tail) >>> 0)) break;
    }
    at = i + 1;
  }
  st.timeoutList.splice(at, 0, t);
  t.list = "timeout";
  hrtimerStart(req, t, () => timeoutFn(t));
  return IOU_ISSUE_QUEUED;
}

/** io_timeout_fn(): the timer expired. */
function timeoutFn(t: IoTimeoutData): void {
  const req = t.req;
  const ctx = tctx(req);
  t.timer = null;
  listDel(ctx.timeouts, t);
  ctx.timeouts.cqTimeouts = (ctx.timeouts.cqTimeouts + 1) >>> 0;
  if (!(t.flags & IORING_TIMEOUT.ETIME_SUCCESS)) ctx.reqSetFail(req);
  req.res = -Errno.ETIME;
  ctx.taskWorkAdd(() => timeoutComplete(t));
}

/** io_timeout_finish() */
function timeoutFinish(t: IoTimeoutData): boolean {
  if (!(t.flags & IORING_TIMEOUT.MULTISHOT)) return true;
  if (!t.off) return false;
  if (t.repeats && --t.repeats) return false;
  return true;
}

/**
 * io_timeout_complete(): a multishot timeout not yet finished posts -ETIME
 * with IORING_CQE_F_MORE and re-arms; when that CQE cannot be posted (a full
 * CQ ring, or a backlog) or the timeout is finished, it completes.
 */
function timeoutComplete(t: IoTimeoutData): void {
  const req = t.req;
  const ctx = tctx(req);
  if (!timeoutFinish(t) && ctx.postReqCqe(req, -Errno.ETIME, IORING_CQE_F.MORE)) {
    ctx.timeouts.timeoutList.push(t);
    t.list = "timeout";
    hrtimerStart(req, t, () => timeoutFn(t));
    return;
  }
  ctx.taskComplete(req);
}

/** io_kill_timeout(): stop the timer; the timeout goes to `killed`. */
function killTimeout(ctx: TimeoutCtx, t: IoTimeoutData, killed: IoTimeoutData[]): void {
  hrtimerCancel(t);
  ctx.timeouts.cqTimeouts = (ctx.timeouts.cqTimeouts + 1) >>> 0;
  listDel(ctx.timeouts, t);
  killed.push(t);
}

/** io_flush_killed_timeouts(): complete each with `err` (0: by count). */
function flushKilled(ctx: TimeoutCtx, killed: IoTimeoutData[], err: number): boolean {
  for (const t of killed) {
    if (err) ctx.reqSetFail(t.req);
    t.req.res = err;
    ctx.taskWorkAdd(() => ctx.taskComplete(t.req));
  }
  return killed.length > 0;
}

/**
 * io_flush_timeouts(): complete, with 0, every counted timeout whose target
 * the CQ has reached. Called after CQEs are committed.
 */
export function ioFlushTimeouts(ctx: TimeoutCtx): void {
  const st = ctx.timeouts;
  const seq = (ctx.cachedCqTail - st.cqTimeouts) >>> 0;
  const killed: IoTimeoutData[] = [];
  for (const t of [...st.timeoutList]) {
    if (isNoseq(t)) break;
    // Both differences are taken from the last flush, so u32 wrap-around cancels out.
    const needed = (t.targetSeq - st.cqLastTmFlush) >>> 0;
    const got = (seq - st.cqLastTmFlush) >>> 0;
    if (got < needed) break;
    killTimeout(ctx, t, killed);
  }
  st.cqLastTmFlush = seq;
  flushKilled(ctx, killed, 0);
}

/** io_kill_timeouts(cancel_all): ring teardown cancels every timeout with -ECANCELED. */
export function ioKillTimeouts(ctx: TimeoutCtx): boolean {
  const killed: IoTimeoutData[] = [];
  for (const t of [...ctx.timeouts.timeoutList]) killTimeout(ctx, t, killed);
  return flushKilled(ctx, killed, -Errno.ECANCELED);
}

/** io_timeout_extract(): take the first timeout with `userData` off the list, or -ENOENT. */
function timeoutExtract(ctx: TimeoutCtx, userData: bigint): IoTimeoutData | number {
  const t = ctx.timeouts.timeoutList.find((x) => x.req.sqe.userData === userData);
  if (!t) return -Errno.ENOENT;
  hrtimerCancel(t);
  listDel(ctx.timeouts, t);
  return t;
}

/** io_timeout_cancel(): cancel a timeout by user_data; it completes with -ECANCELED. */
export function ioTimeoutCancel(ctx: TimeoutCtx, userData: bigint): number {
  const t = timeoutExtract(ctx, userData);
  if (typeof t === "number") return t;
  // io_req_task_queue_fail()
  ctx.reqSetFail(t.req);
  t.req.res = -Errno.ECANCELED;
  ctx.taskWorkAdd(() => ctx.taskComplete(t.req));
  return 0;
}

/**
 * io_try_cancel() as far as the mirror has cancellable requests: no io-wq,
 * poll, waitid or futex requests exist, so only a timeout can be found.
 */
export function ioTryCancel(ctx: TimeoutCtx, userData: bigint): number {
  return ioTimeoutCancel(ctx, userData);
}

/**
 * __io_prep_linked_timeout(): at the issue of a request whose next link is a
 * LINK_TIMEOUT, mark it as guarded and return the timeout to arm.
 */
export function ioPrepLinkedTimeout(req: IoKiocb): IoKiocb | null {
  req.armLtimeout = false;
  if (!req.link) return null;
  req.linkTimeout = true;
  return req.link;
}

/** io_queue_linked_timeout(): start the timer, unless the guarded request already finished. */
export function ioQueueLinkedTimeout(lt: IoKiocb): void {
  const t = lt.op as IoTimeoutData;
  if (!t || !t.head) return;
  tctx(lt).timeouts.ltimeoutList.push(t);
  t.list = "ltimeout";
  hrtimerStart(lt, t, () => linkTimeoutFn(t));
}

/** io_link_timeout_fn(): the guarded request took too long: detach the timeout and cancel it. */
function linkTimeoutFn(t: IoTimeoutData): void {
  const ctx = tctx(t.req);
  t.timer = null;
  const prev = t.head;
  t.head = null;
  if (prev) {
    // io_remove_next_linked(prev): the timeout leaves the chain, the rest stays on prev.
    prev.link = t.req.link;
    t.req.link = null;
  }
  listDel(ctx.timeouts, t);
  t.prev = prev;
  ctx.taskWorkAdd(() => reqTaskLinkTimeout(t));
}

/** io_req_task_link_timeout(): cancel the guarded request; -ETIME, or the cancel's error. */
function reqTaskLinkTimeout(t: IoTimeoutData): void {
  const req = t.req;
  const ctx = tctx(req);
  let res = -Errno.ETIME;
  if (t.prev) {
    const ret = ioTryCancel(ctx, t.prev.sqe.userData);
    if (ret) res = ret;
    t.prev = null;
  }
  req.res = res;
  ctx.taskComplete(req);
}

/**
 * __io_disarm_linked_timeout(): the guarded request `req` completed; its
 * timeout leaves the chain and, if its timer had not fired, is returned to
 * be completed with -ECANCELED.
 */
export function ioDisarmLinkedTimeout(req: IoKiocb): IoKiocb | null {
  const link = req.link;
  if (!link || link.sqe.opcode !== IORING_OP.LINK_TIMEOUT) return null;
  const t = link.op as IoTimeoutData;
  req.link = link.link;
  link.link = null;
  t.head = null;
  if (t.list !== "ltimeout") return null; // its timer already fired
  hrtimerCancel(t);
  listDel(tctx(req).timeouts, t);
  return link;
}

interface IoTimeoutRem {
  addr: bigint;
  flags: number;
  ltimeout: boolean;
  tsNs: bigint;
}

/** io_timeout_remove_prep() */
export function ioTimeoutRemovePrep(req: IoKiocb): number {
  const s = req.sqe;
  if (req.flags & (IOSQE.FIXED_FILE | IOSQE.BUFFER_SELECT)) return -Errno.EINVAL;
  if (s.bufIndex || s.len || s.fileIndex) return -Errno.EINVAL;
  const tr: IoTimeoutRem = { addr: s.addr, flags: s.rwFlags, ltimeout: false, tsNs: 0n };
  if (tr.flags & IORING_TIMEOUT_UPDATE_MASK) {
    if (hweight32(tr.flags & IORING_TIMEOUT_CLOCK_MASK) > 1) return -Errno.EINVAL;
    if (tr.flags & IORING_TIMEOUT.LINK_TIMEOUT_UPDATE) tr.ltimeout = true;
    if (tr.flags & ~(IORING_TIMEOUT_UPDATE_MASK | IORING_TIMEOUT.ABS)) return -Errno.EINVAL;
    const ts = readTimespec(req, s.off); // sqe->addr2
    if (typeof ts === "number") return ts;
    tr.tsNs = ts;
  } else if (tr.flags) {
    return -Errno.EINVAL; // removal takes no flags
  }
  req.op = tr;
  return 0;
}

/** io_timeout_update(): re-arm a timeout as a pure timer with a new expiry. */
function timeoutUpdate(ctx: TimeoutCtx, userData: bigint, tsNs: bigint, abs: boolean): number {
  const t = timeoutExtract(ctx, userData);
  if (typeof t === "number") return t;
  t.off = 0; // noseq
  t.tsNs = tsNs;
  t.abs = abs;
  ctx.timeouts.timeoutList.push(t);
  t.list = "timeout";
  hrtimerStart(t.req, t, () => timeoutFn(t));
  return 0;
}

/** io_linked_timeout_update() */
function linkedTimeoutUpdate(
  ctx: TimeoutCtx,
  userData: bigint,
  tsNs: bigint,
  abs: boolean,
): number {
  const t = ctx.timeouts.ltimeoutList.find((x) => x.req.sqe.userData === userData);
  if (!t) return -Errno.ENOENT;
  hrtimerCancel(t);
  t.tsNs = tsNs;
  t.abs = abs;
  hrtimerStart(t.req, t, () => linkTimeoutFn(t));
  return 0;
}

/** io_timeout_remove(): cancel or update; the result is this request's CQE. */
export function ioTimeoutRemove(req: IoKiocb): number {
  const tr = req.op as IoTimeoutRem;
  const ctx = tctx(req);
  if (!(tr.flags & IORING_TIMEOUT.UPDATE)) return ioTimeoutCancel(ctx, tr.addr);
  const abs = (tr.flags & IORING_TIMEOUT.ABS) !== 0;
  return tr.ltimeout
    ? linkedTimeoutUpdate(ctx, tr.addr, tr.tsNs, abs)
    : timeoutUpdate(ctx, tr.addr, tr.tsNs, abs);
}

/** Cancel every armed timer of a ring being freed (nothing may fire into a dead ring). */
export function ioTimeoutsShutdown(st: TimeoutState): void {
  for (const t of [...st.timeoutList, ...st.ltimeoutList]) {
    hrtimerCancel(t);
    t.list = null;
  }
  st.timeoutList.length = 0;
  st.ltimeoutList.length = 0;
}
