/**
 * The multi-queue block layer (block/blk-mq.c, block/blk-mq-tag.c): a tag
 * set shared by a driver's queues, hardware contexts with a fixed number of
 * tags (requests), bio to request, plug batching (`queue_rq` with `last`
 * and `commit_rqs`), back/front merging into the plugged request, the
 * dispatch list for requests the driver could not take, and completion.
 *
 * A submission that finds no free tag waits: the bio is parked (in order)
 * and issued when a request completes, the way blk_mq_get_tag() sleeps. A
 * REQ_NOWAIT bio fails with BLK_STS_AGAIN instead.
 *
 * A request the driver cannot take (BLK_STS_RESOURCE) waits on the dispatch
 * list: it is retried when a request of the same queue completes, or, with
 * nothing in flight to free anything, after BLK_MQ_RESOURCE_DELAY
 * (blk_mq_delay_run_hw_queue). One that no retry can ever satisfy would be
 * retried forever by the kernel; the testbed reports it as hung after the
 * kernel's hung-task timeout and fails it with BLK_STS_TIMEOUT.
 *
 * Started requests carry a deadline (blk_add_timer); a queue timer scans
 * them (blk_mq_timeout_work) and hands an expired one to the driver's
 * timeout() handler, which completes it or asks for more time.
 *
 * @module
 */

import type { Kernel, KernelTimer } from "../kernel.ts";
import type { BioVec, DmaTag } from "./bvec.ts";
import { type Bio, bioEndio, bioSegments } from "./bio.ts";
import { bioSplitRwAt, bioSplitToLimits, bioWillGap } from "./blk-merge.ts";
import {
  BLK_MAX_REQUEST_COUNT,
  BLK_PLUG_FLUSH_SIZE,
  BlkStatus,
  type BlkStatusT,
  checkQueueLimits,
  type QueueLimits,
  type ReqOp,
  SECTOR_SHIFT,
} from "./blk_types.ts";
import { COUNTER } from "../stats.ts";

/** Most bios parked waiting for a tag on one queue (then BLK_STS_RESOURCE). */
export const MAX_TAG_WAITERS = 1 << 16;
/** BLK_MQ_RESOURCE_DELAY: 3 ms before re-running a queue that ran out of a resource. */
export const BLK_MQ_RESOURCE_DELAY_NS = 3e6;
/** The default request timeout (nvme's io_timeout module parameter: 30 s). */
export const BLK_DEFAULT_RQ_TIMEOUT_NS = 30e9;
/** The hung-task check's default timeout (kernel.hung_task_timeout_secs: 120 s). */
export const HUNG_TASK_TIMEOUT_NS = 120e9;

/** What a driver's timeout() handler decided (enum blk_eh_timer_return). */
export type BlkEhTimerReturn = "done" | "reset-timer";

/** struct blk_mq_ops: what a driver provides. */
export interface BlkMqOps {
  /** queue_rq(): issue `rq`; `last` says no more follow in this batch (ring the doorbell). */
  queueRq(hctx: BlkMqHwCtx, rq: Request, last: boolean): BlkStatusT;
  /** commit_rqs(): a batch ended early; make what was queued visible to the device. */
  commitRqs?(hctx: BlkMqHwCtx): void;
  /** init_request(): the driver's per-request data (the PDU), made once per tag. */
  initRequest(rq: Request): unknown;
  /** The proposal's dma_map(): premap a registered buffer, returning a tag or -errno. */
  dmaMap?(q: RequestQueue, bvecs: readonly BioVec[]): DmaTag | number;
  /** The proposal's dma_unmap(). */
  dmaUnmap?(q: RequestQueue, tag: DmaTag): void;
  /** timeout(): a started request passed its deadline. */
  timeout?(rq: Request): BlkEhTimerReturn;
}

/** struct request */
export class Request {
  /** Owning queue (set when allocated). */
  q!: RequestQueue;
  /** Operation. */
  op: ReqOp = "read";
  /** REQ_FUA (kept only when the queue has a volatile write cache). */
  fua = false;
  /** __sector */
  sector = 0n;
  /** __data_len */
  dataLen = 0;
  /** bio ... biotail */
  bios: Bio[] = [];
  /** nr_phys_segments */
  nrPhysSegments = 0;
  /** Status set by the driver before completing. */
  status: BlkStatusT = BlkStatus.OK;
  /** Whether it is allocated (tag held). */
  inUse = false;
  /** Whether the driver accepted it (blk_mq_start_request) and it has not ended. */
  started = false;
  /** Driver per-request data (init_request). */
  pdu: unknown;
  /** rq->deadline: when a started request times out (clock ns). */
  deadline = 0;
  /** When the driver first refused it for a resource (clock ns; -1: not waiting). */
  resourceSinceNs = -1;

  /** A request for tag `tag` of `hctx`. */
  constructor(readonly hctx: BlkMqHwCtx, readonly tag: number) {}

  /** blk_rq_sectors() */
  get sectors(): number {
    return this.dataLen >>> SECTOR_SHIFT;
  }

  /** The proposal: a request made of one dma-tag bio. */
  get isDmaTagged(): boolean {
    return this.bios.length > 0 && this.bios[0].isDmaTagged;
  }
}

/** A free request's bios: none (shared and frozen: a request gets its own list when allocated). */
const NO_BIOS = Object.freeze([]) as unknown as Bio[];

/** struct blk_mq_hw_ctx: one hardware queue with its tags. */
export class BlkMqHwCtx {
  readonly #free: number[] = [];
  /** Requests by tag (preallocated, like blk_mq_alloc_rqs). */
  readonly rqs: Request[] = [];
  /** hctx->dispatch: requests the driver returned BLK_STS_RESOURCE for. */
  readonly dispatch: Request[] = [];
  /** driver_data (the NVMe queue). */
  driverData: unknown;
  /** Requests the driver holds now. */
  active = 0;
  /** The pending delayed run (blk_mq_delay_run_hw_queue), if any. */
  delayedRun: KernelTimer | undefined;

  /** A hardware context with `depth` tags. */
  constructor(readonly set: BlkMqTagSet, readonly index: number, depth: number) {
    for (let t = depth - 1; t >= 0; t--) this.#free.push(t);
    for (let t = 0; t < depth; t++) this.rqs.push(new Request(this, t));
  }

  /** Tags free now. */
  get freeTags(): number {
    return this.#free.length;
  }

  /** blk_mq_get_tag() without sleeping: a free request or undefined. */
  getTag(): Request | undefined {
    const t = this.#free.pop();
    if (t === undefined) return undefined;
    const rq = this.rqs[t];
    if (rq.inUse) throw new Error(`tag ${t} on hctx ${this.index} handed out twice`);
    rq.inUse = true;
    return rq;
  }

  /** blk_mq_put_tag() */
  putTag(rq: Request): void {
    if (!rq.inUse) throw new Error(`tag ${rq.tag} freed twice`);
    rq.inUse = false;
    rq.bios = NO_BIOS;
    this.#free.push(rq.tag);
  }
}

/** struct blk_mq_tag_set */
export class BlkMqTagSet {
  /** Hardware contexts. */
  readonly hctxs: BlkMqHwCtx[] = [];
  /** Queues sharing this set (one per namespace). */
  readonly queues = new Set<RequestQueue>();
  /** set->timeout: request timeout in ns (the driver's io_timeout). */
  timeoutNs = BLK_DEFAULT_RQ_TIMEOUT_NS;
  /** How long a request may wait for a resource before it is reported hung. */
  hungTimeoutNs = HUNG_TASK_TIMEOUT_NS;
  /** Requests reported hung (waited on a resource past {@link BlkMqTagSet.hungTimeoutNs}). */
  hungRequests = 0;
  /** Requests the timeout handler was called for. */
  timedOutRequests = 0;
  #timeoutTimer: KernelTimer | undefined;

  /** blk_mq_alloc_tag_set() */
  constructor(
    readonly kernel: Kernel,
    readonly ops: BlkMqOps,
    readonly nrHwQueues: number,
    readonly queueDepth: number,
  ) {
    if (!Number.isInteger(nrHwQueues) || nrHwQueues < 1 || nrHwQueues > 1024) {
      throw new RangeError(`blk_mq_alloc_tag_set: nr_hw_queues ${nrHwQueues}`);
    }
    if (!Number.isInteger(queueDepth) || queueDepth < 1 || queueDepth > 10240) {
      throw new RangeError(`blk_mq_alloc_tag_set: queue_depth ${queueDepth}`);
    }
    for (let i = 0; i < nrHwQueues; i++) {
      const h = new BlkMqHwCtx(this, i, queueDepth);
      this.hctxs.push(h);
    }
    for (const h of this.hctxs) for (const rq of h.rqs) rq.pdu = ops.initRequest(rq);
  }

  /** blk_mq_run_hw_queue(): retry the dispatch list. */
  runHwQueue(hctx: BlkMqHwCtx): void {
    if (hctx.dispatch.length === 0) return;
    dispatchList(this, hctx, hctx.dispatch.splice(0));
  }

  /** blk_mq_delay_run_hw_queue() */
  delayRunHwQueue(hctx: BlkMqHwCtx, delayNs: number): void {
    if (hctx.delayedRun) return;
    hctx.delayedRun = this.kernel.addTimer(delayNs, () => {
      hctx.delayedRun = undefined;
      this.runHwQueue(hctx);
    });
  }

  /** blk_add_timer(): `rq` starts; arm the queue timer if it is due later than `rq`. */
  addTimer(rq: Request): void {
    rq.deadline = this.kernel.clock.nowNs() + this.timeoutNs;
    const t = this.#timeoutTimer;
    if (t && t.atNs <= rq.deadline) return;
    t?.cancel();
    this.#timeoutTimer = this.kernel.addTimer(this.timeoutNs, () => this.#timeoutWork());
  }

  /** blk_mq_timeout_work(): expire started requests past their deadline, re-arm for the rest. */
  #timeoutWork(): void {
    this.#timeoutTimer = undefined;
    const now = this.kernel.clock.nowNs();
    const expired: Request[] = [];
    for (const h of this.hctxs) {
      for (const rq of h.rqs) if (rq.inUse && rq.started && rq.deadline <= now) expired.push(rq);
    }
    for (const rq of expired) {
      if (!rq.inUse || !rq.started || rq.deadline > now) continue; // completed meanwhile
      this.timedOutRequests++;
      const r = this.ops.timeout ? this.ops.timeout(rq) : "reset-timer";
      if (r === "reset-timer" && rq.inUse && rq.started) {
        rq.deadline = this.kernel.clock.nowNs() + this.timeoutNs;
      }
    }
    let next = Infinity;
    for (const h of this.hctxs) {
      for (const rq of h.rqs) if (rq.inUse && rq.started && rq.deadline < next) next = rq.deadline;
    }
    if (next !== Infinity) {
      this.#timeoutTimer = this.kernel.addTimer(
        Math.max(0, next - this.kernel.clock.nowNs()),
        () => this.#timeoutWork(),
      );
    }
  }

  /** Cancel the queue timers (the tag set is going away). */
  stopTimers(): void {
    this.#timeoutTimer?.cancel();
    this.#timeoutTimer = undefined;
    for (const h of this.hctxs) {
      h.delayedRun?.cancel();
      h.delayedRun = undefined;
    }
  }
}

/** struct blk_plug: requests held back to be issued as one batch. */
export class BlkPlug {
  /** mq_list, in submission order (replaced by an empty list when flushed). */
  mqList: Request[] = [];
}

/** current->plug for the (single) submitting task of `kernel` ({@link Kernel.plug}). */
export function currentPlug(kernel: Kernel): BlkPlug | undefined {
  return kernel.plug;
}

/** blk_start_plug(): nested plugs are folded into the outer one, as in the kernel. */
export function blkStartPlug(kernel: Kernel): BlkPlug {
  const p = new BlkPlug();
  if (kernel.plug === undefined) kernel.plug = p;
  return p;
}

/** blk_finish_plug(): issue everything plugged. */
export function blkFinishPlug(kernel: Kernel, plug: BlkPlug): void {
  if (kernel.plug !== plug) return; // an inner plug: the outer one finishes
  kernel.plug = undefined;
  blkMqFlushPlugList(plug);
}

/** blk_mq_flush_plug_list(): issue per hardware queue, `last` on each batch's final request. */
export function blkMqFlushPlugList(plug: BlkPlug): void {
  // Take the whole list and leave the plug an empty one (what splice(0) does, without
  // splice's cost).
  const rqs = plug.mqList;
  plug.mqList = [];
  let i = 0;
  while (i < rqs.length) {
    const hctx = rqs[i].hctx;
    let j = i;
    while (j < rqs.length && rqs[j].hctx === hctx) j++;
    // One hardware queue for the whole list (the usual case): hand it over as it is.
    rqs[i].q.issueList(hctx, i === 0 && j === rqs.length ? rqs : rqs.slice(i, j));
    i = j;
  }
}

/**
 * The last element, or undefined when empty. (Reading `a[a.length - 1]` of an
 * empty array looks up the property "-1" through the prototype chain, which
 * V8 does on a slow path, some 100 ns.)
 */
export function lastOf<T>(a: readonly T[]): T | undefined {
  const n = a.length;
  return n > 0 ? a[n - 1] : undefined;
}

/** End `bio` with `status` (a bio that cannot be split validly). */
function bioEndWithStatus(bio: Bio, status: BlkStatusT): void {
  bio.status = status;
  bioEndio(bio);
}

/** struct request_queue: one namespace's queue over a shared tag set. */
export class RequestQueue {
  /** Parked bios waiting for a tag, in order. */
  readonly #waiters: { bio: Bio; nsegs: number }[] = [];
  /** CPU the submitter runs on (blk_mq_map_queue picks the hctx from it). */
  cpu = 0;
  /** Whether the device has a volatile write cache (flushes reach it). */
  writeCache = false;

  /** blk_mq_init_queue() */
  constructor(
    readonly kernel: Kernel,
    readonly set: BlkMqTagSet,
    readonly limits: QueueLimits,
    readonly queuedata: unknown,
  ) {
    checkQueueLimits(limits);
    set.queues.add(this);
  }

  /** blk_mq_map_queue() */
  mapQueue(): BlkMqHwCtx {
    return this.set.hctxs[this.cpu % this.set.nrHwQueues];
  }

  /** Bios parked waiting for a tag. */
  get tagWaiters(): number {
    return this.#waiters.length;
  }

  /** blk_mq_submit_bio(): split, merge into the plug, get a request, issue or plug. */
  submitBio(bio: Bio): void {
    const st = this.kernel.stats;
    const t0 = st.begin();
    // A bio within the limits (the usual case) goes on as it is; bioSplitToLimits() would
    // find the same split point (a pure function of the bio and the limits) and return it
    // alone.
    const sp = bioSplitRwAt(this.limits, bio);
    if (sp.sectors === 0) {
      bio.nrSegs = sp.nsegs;
      st.end("bio", t0);
      this.#submitOne(bio, sp.nsegs);
      return;
    }
    const pieces = bioSplitToLimits(this.kernel, this.limits, bio, bioEndWithStatus);
    st.end("bio", t0);
    for (const p of pieces) this.#submitOne(p.bio, p.nsegs);
  }

  #submitOne(bio: Bio, nsegs: number, woken = false): void {
    const st = this.kernel.stats;
    const t0 = st.begin();
    try {
      const plug = currentPlug(this.kernel);
      if (plug && this.#attemptPlugMerge(plug, bio, nsegs)) return;
      // Parked bios go first (FIFO): a new bio does not overtake them.
      const rq = woken || this.#waiters.length === 0 ? this.mapQueue().getTag() : undefined;
      if (!rq) {
        if (bio.nowait) {
          bio.status = BlkStatus.AGAIN;
          bioEndio(bio);
          return;
        }
        if (this.#waiters.length >= MAX_TAG_WAITERS) {
          bio.status = BlkStatus.RESOURCE;
          bioEndio(bio);
          return;
        }
        // blk_mq_get_tag() sleeps; schedule() flushes the plug first.
        if (plug) blkMqFlushPlugList(plug);
        if (woken) this.#waiters.unshift({ bio, nsegs });
        else this.#waiters.push({ bio, nsegs });
        return;
      }
      this.#bioToRequest(rq, bio, nsegs);
      if (plug) this.#addRqToPlug(plug, rq);
      else this.issueList(rq.hctx, [rq]);
    } finally {
      st.end("blk_mq", t0);
    }
  }

  /** blk_mq_bio_to_request() */
  #bioToRequest(rq: Request, bio: Bio, nsegs: number): void {
    rq.q = this;
    rq.op = bio.op;
    // submit_bio_noacct() drops REQ_FUA on a queue without QUEUE_FLAG_FUA (nvme: = VWC).
    rq.fua = bio.fua && this.writeCache;
    rq.sector = bio.iter.sector;
    rq.dataLen = bio.iter.size;
    rq.bios = [bio];
    rq.nrPhysSegments = nsegs;
    rq.status = BlkStatus.OK;
    this.kernel.stats.add(COUNTER.requests);
  }

  /** blk_add_rq_to_plug() */
  #addRqToPlug(plug: BlkPlug, rq: Request): void {
    const last = lastOf(plug.mqList);
    if (
      plug.mqList.length >= BLK_MAX_REQUEST_COUNT ||
      (last && last.dataLen >= BLK_PLUG_FLUSH_SIZE)
    ) {
      blkMqFlushPlugList(plug);
    }
    plug.mqList.push(rq);
  }

  /** blk_attempt_plug_merge(): merge into the last plugged request of this queue. */
  #attemptPlugMerge(plug: BlkPlug, bio: Bio, nsegs: number): boolean {
    const rq = lastOf(plug.mqList);
    if (!rq || rq.q !== this) return false;
    if (!this.#mergeOk(rq, bio)) return false;
    if (rq.sector + BigInt(rq.sectors) === bio.iter.sector) {
      if (!this.#llMergeFn(rq, bio, nsegs, "back")) return false;
      rq.bios.push(bio);
    } else if (rq.sector - BigInt(bio.sectors) === bio.iter.sector) {
      if (!this.#llMergeFn(rq, bio, nsegs, "front")) return false;
      rq.bios.unshift(bio);
      rq.sector = bio.iter.sector;
    } else {
      return false;
    }
    rq.dataLen += bio.iter.size;
    rq.nrPhysSegments += nsegs;
    this.kernel.stats.add(COUNTER.bioMerges);
    return true;
  }

  /** blk_rq_merge_ok(): same op, data requests, and never a dma-tag bio (the proposal). */
  #mergeOk(rq: Request, bio: Bio): boolean {
    if (rq.op !== bio.op || rq.op === "flush") return false;
    if (rq.fua || bio.fua) return false; // REQ_NOMERGE_FLAGS
    if (rq.isDmaTagged || bio.isDmaTagged) return false;
    return true;
  }

  /** ll_back_merge_fn() / ll_front_merge_fn() */
  #llMergeFn(rq: Request, bio: Bio, nsegs: number, dir: "back" | "front"): boolean {
    const lim = this.limits;
    const gap = dir === "back"
      ? bioWillGap(lim, rq.bios[0], rq.bios[rq.bios.length - 1], bio)
      : bioWillGap(lim, bio, bio, rq.bios[0]);
    if (gap) return false;
    if (rq.sectors + bio.sectors > lim.maxSectors) return false;
    if (rq.nrPhysSegments + nsegs > lim.maxSegments) return false;
    return true;
  }

  /**
   * blk_mq_issue_direct() / blk_mq_dispatch_rq_list(): hand `rqs` (all on
   * `hctx`) to the driver in order, the last with `last` set. Requests the
   * driver cannot take now go to the dispatch list; others that fail end
   * with their status.
   */
  issueList(hctx: BlkMqHwCtx, rqs: Request[]): void {
    if (hctx.dispatch.length > 0) {
      hctx.dispatch.push(...rqs);
      this.set.runHwQueue(hctx);
      return;
    }
    dispatchList(this.set, hctx, rqs);
  }

  /** Issue parked bios now that tags are free. */
  wakeWaiters(): void {
    while (this.#waiters.length > 0 && this.mapQueue().freeTags > 0) {
      const w = this.#waiters.shift()!;
      this.#submitOne(w.bio, w.nsegs, true);
    }
  }
}

/** Hand a list to queue_rq; what the driver cannot take now goes to hctx->dispatch. */
function dispatchList(set: BlkMqTagSet, hctx: BlkMqHwCtx, rqs: Request[]): void {
  let queued = 0;
  let lastSt: BlkStatusT = BlkStatus.OK;
  for (let i = 0; i < rqs.length; i++) {
    const rq = rqs[i];
    const st = set.ops.queueRq(hctx, rq, i === rqs.length - 1);
    lastSt = st;
    if (st === BlkStatus.OK) {
      if (!rq.started) hctx.active++;
      rq.started = true;
      rq.resourceSinceNs = -1;
      set.addTimer(rq);
      queued++;
      continue;
    }
    if (st === BlkStatus.RESOURCE || st === BlkStatus.DEV_RESOURCE) {
      // Out of a resource: wait on the dispatch list. A completion on this queue reruns
      // it; with nothing in flight to free anything, rerun after a delay
      // (blk_mq_dispatch_rq_list's needs_restart / BLK_MQ_RESOURCE_DELAY).
      const now = set.kernel.clock.nowNs();
      if (rq.resourceSinceNs < 0) rq.resourceSinceNs = now;
      if (now - rq.resourceSinceNs < set.hungTimeoutNs) {
        hctx.dispatch.push(...rqs.slice(i));
        if (queued > 0) set.ops.commitRqs?.(hctx);
        if (hctx.active === 0) set.delayRunHwQueue(hctx, BLK_MQ_RESOURCE_DELAY_NS);
        return;
      }
      // The kernel would retry for ever (the hung-task check reports the waiter);
      // the testbed reports it hung and fails it so that nothing waits for ever.
      set.hungRequests++;
      set.kernel.stats.add(COUNTER.requestsHung);
      rq.resourceSinceNs = -1;
      rq.status = BlkStatus.TIMEOUT;
      blkMqEndRequest(rq, BlkStatus.TIMEOUT);
      continue;
    }
    rq.status = st;
    blkMqEndRequest(rq, st);
  }
  // A batch whose last request failed still has queued commands to announce.
  if (queued > 0 && lastSt !== BlkStatus.OK) {
    set.ops.commitRqs?.(hctx);
  }
}

/**
 * blk_mq_end_request(): complete every bio with the request's status, free
 * the tag, then let parked bios and the dispatch list proceed.
 */
export function blkMqEndRequest(rq: Request, status: BlkStatusT): void {
  if (!rq.inUse) throw new Error(`blk_mq_end_request: tag ${rq.tag} not in use`);
  const bios = rq.bios;
  const hctx = rq.hctx;
  if (rq.started) {
    hctx.active--;
    rq.started = false;
  }
  hctx.putTag(rq);
  for (const bio of bios) {
    if (status !== BlkStatus.OK && bio.status === BlkStatus.OK) bio.status = status;
    bioEndio(bio);
  }
  hctx.set.runHwQueue(hctx);
  hctx.set.queues.forEach(wakeWaiters);
}

function wakeWaiters(q: RequestQueue): void {
  q.wakeWaiters();
}

/** blk_mq_requeue_request(): the driver gives a started request back to be issued again. */
export function blkMqRequeueRequest(rq: Request): void {
  if (!rq.inUse || !rq.started) {
    throw new Error(`blk_mq_requeue_request: tag ${rq.tag} not started`);
  }
  rq.started = false;
  rq.hctx.active--;
  rq.hctx.set.kernel.stats.add(COUNTER.requestsRequeued);
  rq.q.issueList(rq.hctx, [rq]);
}

/** Bytes a request moves (blk_rq_payload_bytes). */
export function blkRqPayloadBytes(rq: Request): number {
  return rq.op === "flush" ? 0 : rq.dataLen;
}

/** rq_for_each_bvec(): the (multi-page) bio_vecs of every bio of a request. */
export function* rqSegments(rq: Request) {
  for (const bio of rq.bios) yield* bioSegments(bio);
}
