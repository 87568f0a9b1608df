/**
 * The application's ring on the real backend when an emulated NVMe
 * namespace is open: the live kernel ring, plus a shadow of it in the host
 * stack (the TypeScript io_uring mirror on the real backend's host kernel).
 *
 * - SQEs on the emulated namespace (its reserved descriptor, or a fixed-file
 *   slot that holds it) go to the shadow ring and so through the TypeScript
 *   host stack to the C controller; every other SQE goes to the kernel
 *   untouched.
 * - Files registered on the ring are split: the kernel's table holds the
 *   kernel files (the namespace's slots are left empty there, so an SQE that
 *   somehow reached the kernel on them fails with -EBADF), the shadow's
 *   table holds the namespace. Buffers are registered on both (the same
 *   memory, mirrored into the host stack). MAP/UNMAP_BUFFERS reach only the
 *   shadow, so they map through the host stack into the device's IOMMU.
 * - Every completion the application reaps is a kernel CQE from its own
 *   ring: a shadow completion is posted into the ring by an
 *   `IORING_OP_MSG_RING` the wrapper sends to the ring itself; the message's
 *   own CQE is consumed and counted (not `IOSQE_CQE_SKIP_SUCCESS`, which would
 *   make the kernel refuse `IOSQE_IO_DRAIN` on the ring from then on). The
 *   device thread's interrupts arrive the same way, as MSG_RING CQEs with
 *   user_data in {@link IRQ_USER_DATA_BASE}..+vectors; the wrapper consumes
 *   and counts them ({@link RingWrapper.internalCqes}) and never returns them.
 * - Until the namespace is first used on a ring, the wrapper is transparent:
 *   `submit` and `reap` are the live ring's own, so a ring of kernel files
 *   behaves exactly as without it (CQ overflow included). Once the namespace
 *   has been used, the wrapper reads the kernel CQ itself (to get at the
 *   interrupt messages among the application's CQEs) and keeps what it read
 *   for `reap`, so that CQ no longer overflows: no CQE is lost either way.
 * - The device's interrupts go to the ring that last submitted to the
 *   namespace; whichever wrapper delivers them forwards every ring's host
 *   completions, each into its own ring.
 * - Link chains: the wrapper holds a chain's SQEs until its last member is
 *   pushed (or `submit` is called). A chain on one side goes to that side
 *   whole. A chain that runs across the namespace and kernel files is cut into
 *   segments of one side each; each segment but the last is linked (with its
 *   last member's own LINK or HARDLINK) to a NOP of the wrapper's, whose CQE
 *   says whether the chain goes on: on success the next segment is submitted,
 *   on -ECANCELED every later member completes with -ECANCELED, as the rest of
 *   a broken chain does. So a chain gives the same results on both backends.
 *   An IORING_OP_LINK_TIMEOUT goes to the side of the request it guards.
 * - Resource tags: a file slot's tag is posted by the side that holds the
 *   file (the namespace's by the shadow, forwarded like any completion);
 *   buffer tags by the kernel alone (the shadow's buffers are untagged).
 *
 * @module
 */

import { Errno } from "../sim/uapi/errno.ts";
import {
  type Cqe,
  IORING_MSG,
  IORING_OP,
  IORING_REGISTER,
  IOSQE,
  RSRC_REGISTER,
  RSRC_UPDATE,
  RSRC_UPDATE2,
  SQE,
} from "../sim/uapi/io_uring.ts";
import type { RawRing, UserBuffer } from "../sim/uapi/ring_api.ts";
import type { LiveRing } from "./liburing.ts";
import type { UserMm } from "../sim/memory/mm.ts";

/** user_data of the device thread's interrupt messages: base + MSI-X vector. */
export const IRQ_USER_DATA_BASE = 0xffff_fffe_0000_0000n;
/** user_data of the wrapper's own MSG_RING SQEs (a CQE with it means a message failed). */
export const WRAPPER_MSG_USER_DATA = 0xffff_fffd_0000_0000n;
/** user_data of the NOP that ends each segment of a chain split across the two sides: base + id. */
export const CHAIN_TOKEN_BASE = 0xffff_fffc_0000_0000n;
const CHAIN_TOKEN_SPAN = 1n << 32n;

type Side = "live" | "shadow";

/** One SQE of a held chain, already rewritten for its side. */
interface Member {
  sqe: Uint8Array;
  side: Side;
}
/** IORING_MSG_RING_FLAGS_PASS: the message carries cqe->flags in sqe->file_index. */
const IORING_MSG_RING_FLAGS_PASS = 1 << 1;
/** sqe->msg_ring_flags (the rw_flags union) and sqe->file_index offsets. */
const SQE_MSG_RING_FLAGS = 28;
const SQE_FILE_INDEX = 44;

/** What the wrapper needs of the real backend's host. */
export interface WrapperHost {
  /** The host kernel's mirror of the process's memory (to read register arguments safely). */
  readonly mm: UserMm;
  /** Reserved real descriptor -> the namespace's descriptor in the host kernel. */
  readonly emulatedFds: ReadonlyMap<number, number>;
  /** Deliver the device's interrupts (and, inline, step it), run due timers: events handled. */
  poll(): number;
  /** Nanoseconds until the host kernel's next timer (an I/O timeout...), Infinity if none. */
  nextTimerInNs(): number;
  /** Commands the host driver has outstanding on the device. */
  outstanding(): number;
  /** Whether the device runs on its own thread (else the wrapper steps it while waiting). */
  readonly threaded: boolean;
  /** Testbed memory: native, and mirrored into the host kernel at the same address. */
  alloc(len: number): UserBuffer;
  /** Send the device's interrupt messages to this ring from now on. */
  irqTarget(ringFd: number): void;
  /** The ring the device's interrupt messages go to (-1: none). */
  irqTargetFd(): number;
  /** Every live wrapper of this host (completions are forwarded to whichever ring owns them). */
  readonly wrappers: Set<RingWrapper>;
  /**
   * Count an application io_uring_enter that carried no host-stack SQE (it
   * waits or reaps) where the host stack counts syscalls, on the completion
   * side, as the sim's ring counts its own.
   */
  countWaitEnter?(): void;
}

/** The real backend's ring with an emulated namespace behind it. */
export class RingWrapper implements RawRing {
  /** Always "real". */
  readonly backend = "real" as const;
  readonly #live: LiveRing;
  readonly #shadow: RawRing;
  readonly #host: WrapperHost;
  /** Fixed-file slots whose file is the emulated namespace (in the shadow's table). */
  readonly #emuSlots = new Set<number>();
  /** Kernel CQEs read from the CQ and not yet handed to the application. */
  readonly #ready: Cqe[] = [];
  /** The link chain being pushed, held until its last member. */
  #open: Member[] = [];
  /** Chains split across the sides, by the user_data of the NOP ending their running segment. */
  readonly #chains = new Map<bigint, { segs: Member[][]; at: number }>();
  #nextChain = 1n;
  /** Wrapper NOPs queued on each side and not yet submitted (not the application's SQEs). */
  #liveTokens = 0;
  #shadowTokens = 0;
  /** Members of split chains held for later segments: submitted, as the kernel counts, now. */
  #heldCount = 0;
  /** SQEs behind an IO_DRAIN waiting for the other side to drain (null: none waiting). */
  #drainHeld: Member[] | null = null;
  /** user_data of the draining NOPs in flight. */
  readonly #drains = new Set<bigint>();
  #shadowPending = 0;
  #msgsPending = 0;
  /** An interrupt message was read from the CQ and its vector not yet delivered. */
  #irqSeen = false;
  /** Whether the namespace has been used on this ring (transparent until then). */
  #engaged = false;
  /** CQEs consumed by the wrapper itself (interrupt messages). */
  internalCqes = 0;
  /** Completions forwarded from the host stack into the ring. */
  forwarded = 0;

  /** Wrap `live`, sending the namespace's SQEs to `shadow`. */
  constructor(live: LiveRing, shadow: RawRing, host: WrapperHost) {
    this.#live = live;
    this.#shadow = shadow;
    this.#host = host;
    host.wrappers.add(this);
  }

  /** The live ring's descriptor. */
  get fd(): number {
    return this.#live.fd;
  }

  /** SQ entries of the live ring. */
  get sqEntries(): number {
    return this.#live.sqEntries;
  }

  /** CQ entries of the live ring. */
  get cqEntries(): number {
    return this.#live.cqEntries;
  }

  /** Whether the ring has used the namespace (its CQEs are then read by the wrapper). */
  get engaged(): boolean {
    return this.#engaged;
  }

  /** The live ring underneath (for fdinfo checks). */
  get live(): LiveRing {
    return this.#live;
  }

  /** Queue an SQE on the side its file lives on; false when that side's SQ is full. */
  pushSqe(sqe: Uint8Array): boolean {
    if (sqe.length !== SQE.SIZE) throw new RangeError(`pushSqe: ${sqe.length} bytes, not 64`);
    const v = new DataView(sqe.buffer, sqe.byteOffset, SQE.SIZE);
    const flags = v.getUint8(SQE.flags);
    const fd = v.getInt32(SQE.fd, true);
    let side: "live" | "shadow" = "live";
    let out = sqe;
    if (v.getUint8(SQE.opcode) === IORING_OP.LINK_TIMEOUT) {
      // A linked timeout guards the request before it: it goes to that request's side.
      if (this.#open.length > 0) side = this.#open[this.#open.length - 1].side;
    } else if (flags & IOSQE.FIXED_FILE) {
      if (this.#emuSlots.has(fd)) side = "shadow";
    } else if (this.#host.emulatedFds.has(fd) && opUsesFd(v.getUint8(SQE.opcode))) {
      side = "shadow";
      out = sqe.slice();
      new DataView(out.buffer).setInt32(SQE.fd, this.#host.emulatedFds.get(fd)!, true);
    }
    if (this.#drainHeld !== null) {
      // Behind a drain that waits for the other side: held, in order, until it is released.
      if (this.#drainHeld.length >= this.#live.sqEntries) return false;
      this.#drainHeld.push({ sqe: out, side });
      this.#heldCount++; // the kernel counts it submitted with the rest
      return true;
    }
    const drains = (flags & IOSQE.IO_DRAIN) !== 0 && this.#open.length === 0;
    if (drains && (this.#engaged || side === "shadow" || this.#shadowPending > 0)) {
      // IOSQE_IO_DRAIN waits for everything submitted before it, on both sides: a draining
      // NOP of the wrapper's on the other side tells when that side is done.
      const other: Side = side === "live" ? "shadow" : "live";
      const token = this.#pushToken(other, IOSQE.IO_DRAIN);
      this.#drains.add(token);
      this.#drainHeld = [{ sqe: out, side }];
      this.#heldCount++;
      return true;
    }
    return this.#accept({ sqe: out, side });
  }

  /** Queue a routed SQE: into the open chain, or to its side. */
  #accept(m: Member): boolean {
    const flags = m.sqe[SQE.flags];
    const linked = (flags & (IOSQE.IO_LINK | IOSQE.IO_HARDLINK)) !== 0;
    if (this.#open.length > 0 || linked) {
      if (this.#open.length >= this.#live.sqEntries) return false; // as a full SQ would
      this.#open.push(m);
      if (!linked) this.#closeChain();
      return true;
    }
    return this.#pushTo(m.side, m.sqe);
  }

  /** A NOP of the wrapper's on `side` whose CQE reports back; returns its user_data. */
  #pushToken(side: Side, flags: number): bigint {
    const token = CHAIN_TOKEN_BASE + (this.#nextChain++ % CHAIN_TOKEN_SPAN);
    const nop = new Uint8Array(SQE.SIZE);
    const v = new DataView(nop.buffer);
    v.setUint8(SQE.opcode, IORING_OP.NOP);
    v.setUint8(SQE.flags, flags);
    v.setBigUint64(SQE.userData, token, true);
    while (!this.#pushTo(side, nop)) this.#flushSide(side);
    if (side === "live") this.#liveTokens++;
    else this.#shadowTokens++;
    return token;
  }

  /** The other side has drained: queue the held drain and what followed it, in order. */
  #releaseDrain(): void {
    const held = this.#drainHeld ?? [];
    this.#drainHeld = null;
    const counted = this.#heldCount; // held SQEs were counted when the application submitted
    for (const m of held) {
      while (!this.#accept(m)) this.#flushSide(m.side);
    }
    if (this.#open.length > 0) this.#closeChain();
    this.#heldCount = counted;
    this.#flushSide("shadow");
    this.#flushSide("live");
  }

  #pushTo(side: Side, sqe: Uint8Array): boolean {
    const ok = side === "live" ? this.#live.pushSqe(sqe) : this.#shadow.pushSqe(sqe);
    if (ok && side === "shadow") this.#shadowPending++;
    return ok;
  }

  /** The held chain is complete: to its side whole, or split into one-side segments. */
  #closeChain(): void {
    const members = this.#open;
    this.#open = [];
    if (members.length === 0) return;
    const segs: Member[][] = [];
    for (const m of members) {
      const last = segs[segs.length - 1];
      if (last && last[0].side === m.side) last.push(m);
      else segs.push([m]);
    }
    for (let i = 1; i < segs.length; i++) this.#heldCount += segs[i].length;
    this.#startSegment(segs, 0, false);
  }

  /** Queue segment `at` (and, unless it is the last, the NOP that reports how it ended). */
  #startSegment(segs: Member[][], at: number, now: boolean): void {
    const seg = segs[at];
    const side = seg[0].side;
    for (const m of seg) {
      while (!this.#pushTo(side, m.sqe)) this.#flushSide(side);
    }
    if (at < segs.length - 1) this.#chains.set(this.#pushToken(side, 0), { segs, at });
    if (now) this.#flushSide(side); // a later segment: submitted at once, not by the application
  }

  /** Submit what is queued on one side, for the wrapper's own purposes. */
  #flushSide(side: Side): void {
    if (side === "shadow") {
      if (this.#host.threaded) this.#host.irqTarget(this.#live.fd);
      this.#shadow.submit(0);
      this.#shadowPending = 0;
      this.#shadowTokens = 0;
    } else {
      this.#enter(0);
    }
  }

  /** The NOP ending a segment completed: go on with the chain, or cancel its rest. */
  #chainStep(token: bigint, res: number): void {
    if (this.#drains.delete(token)) {
      this.#releaseDrain();
      return;
    }
    const st = this.#chains.get(token);
    if (st === undefined) throw new Error(`real backend: unknown chain token ${token}`);
    this.#chains.delete(token);
    const next = st.at + 1;
    if (res >= 0) {
      this.#startSegment(st.segs, next, true);
      return;
    }
    // The segment broke the chain: every later member completes with -ECANCELED.
    for (const seg of st.segs.slice(next)) {
      for (const m of seg) {
        const ud = new DataView(m.sqe.buffer, m.sqe.byteOffset, SQE.SIZE).getBigUint64(
          SQE.userData,
          true,
        );
        this.#queueCqe(this, ud, -Errno.ECANCELED, 0);
      }
    }
  }

  /**
   * io_uring_enter(): submit both sides, then wait until `waitNr` kernel
   * CQEs are ready for the application (forwarding the host stack's
   * completions into the ring meanwhile). Returns the application's SQEs
   * submitted, or -errno.
   */
  submit(waitNr = 0): number {
    if (!Number.isInteger(waitNr) || waitNr < 0) return -Errno.EINVAL;
    // A chain still open at submit ends here, as the kernel ends it at the end of a submission.
    if (this.#open.length > 0) this.#closeChain();
    const split = this.#heldCount > 0 || this.#liveTokens > 0 || this.#shadowTokens > 0;
    if (!this.#engaged && this.#shadowPending === 0 && !split) return this.#live.submit(waitNr);
    this.#engaged = true;
    let submitted = this.#heldCount;
    this.#heldCount = 0;
    if (this.#shadowPending > 0) {
      if (this.#host.threaded) this.#host.irqTarget(this.#live.fd);
      const tokens = this.#shadowTokens;
      const r = this.#shadow.submit(0);
      if (r < 0) return r;
      submitted += Math.max(0, r - tokens);
      this.#shadowPending = 0;
      this.#shadowTokens = 0;
    } else {
      this.#host.countWaitEnter?.();
    }
    this.#forwardVia(this);
    const r = this.#enter(0);
    if (r < 0) return r;
    submitted += r;
    while (this.#ready.length < waitNr) {
      this.#pump();
      if (this.#ready.length >= waitNr) break;
      if (!this.#host.threaded && this.#host.outstanding() > 0) continue; // inline: step it
      // An interrupt message already consumed must be delivered before sleeping: the
      // device sends at most one message per vector until the host takes it.
      if (this.#irqSeen) continue;
      // SQEs the kernel left in the SQ (it stops at an SQE that fails to initialise)
      // are submitted again on the next enter, as io_uring_submit_and_wait would.
      if (this.#unconsumed() > 0) {
        const again = this.#enter(0);
        if (again < 0) return submitted || again;
        submitted += again;
        if (again > 0) continue;
      }
      // Sleep in the kernel until a CQE (a kernel op's, or the device's interrupt) arrives.
      // If another ring receives the interrupts, wake every millisecond to deliver them.
      // A host timer (an I/O timeout: a command the device never completes) bounds the sleep.
      const elsewhere = this.#host.threaded && this.#host.irqTargetFd() !== this.#live.fd &&
        this.#host.outstanding() > 0;
      const timer = this.#host.nextTimerInNs();
      const bound = Math.min(elsewhere ? 1e6 : Infinity, Math.max(1e5, timer));
      const w = bound === Infinity ? this.#live.waitCqes(1) : this.#live.waitCqes(1, bound);
      if (w < 0 && w !== -Errno.EINTR && w !== -Errno.ETIME) return submitted || w;
    }
    return submitted;
  }

  /** Take up to `max` of the application's CQEs (each read from the kernel's CQ). */
  reap(max = Infinity): Cqe[] {
    if (!this.#engaged) return this.#live.reap(max);
    this.#pump();
    return this.#ready.splice(0, Math.min(max, this.#ready.length));
  }

  /** io_uring_register(2), split between the kernel and the host stack as the module says. */
  register(opcode: number, arg: Uint8Array | null, nrArgs: number): number {
    const R = IORING_REGISTER;
    switch (opcode) {
      case R.REGISTER_MAP_BUFFERS:
      case R.REGISTER_UNMAP_BUFFERS:
        return this.#shadow.register(opcode, arg, nrArgs);
      case R.REGISTER_BUFFERS:
      case R.REGISTER_BUFFERS2:
      case R.REGISTER_BUFFERS_UPDATE:
      case R.UNREGISTER_BUFFERS: {
        const r = this.#live.register(opcode, arg, nrArgs);
        if (r < 0) return r;
        // Buffer tags are the kernel's to post (the application's CQEs come from its ring):
        // the shadow registers the same buffers untagged.
        const s = this.#shadow.register(opcode, withoutTags(opcode, arg), nrArgs);
        if (s < 0) {
          throw new Error(
            `real backend: the host stack refused a buffer registration the ` +
              `kernel accepted (${s}); were the buffers allocated with tb.allocBuffer()?`,
          );
        }
        return r;
      }
      case R.UNREGISTER_FILES: {
        const r = this.#live.register(opcode, arg, nrArgs);
        if (r < 0) return r;
        this.#shadow.register(opcode, arg, nrArgs);
        this.#emuSlots.clear();
        return r;
      }
      case R.REGISTER_FILES:
        return this.#registerFiles(arg, nrArgs);
      case R.REGISTER_FILES2:
        return this.#registerFiles2(opcode, arg, nrArgs);
      case R.REGISTER_FILES_UPDATE2:
        return this.#updateFiles2(opcode, arg, nrArgs);
      case R.REGISTER_FILES_UPDATE:
        return this.#updateFiles(opcode, arg, nrArgs);
      default:
        return this.#live.register(opcode, arg, nrArgs);
    }
  }

  /** Tear down the shadow, then the live ring. */
  [Symbol.dispose](): void {
    this.#host.wrappers.delete(this);
    this.#shadow[Symbol.dispose]();
    this.#live[Symbol.dispose]();
  }

  /** SQEs queued or flushed to the kernel that it has not consumed yet. */
  #unconsumed(): number {
    return this.#live.sqEntries - this.#live.sqSpace;
  }

  /** io_uring_enter(to_submit): the application's SQEs submitted (the wrapper's not counted). */
  #enter(waitNr: number): number {
    const own = this.#msgsPending + this.#liveTokens;
    const r = waitNr > 0 ? this.#live.submitAndWait(waitNr) : this.#live.submit(0);
    if (r < 0) return r;
    this.#msgsPending = 0;
    this.#liveTokens = 0;
    return Math.max(0, r - own);
  }

  /** Read the kernel CQ, handle interrupts, forward the host stack's completions. */
  #pump(): void {
    this.#drainKernelCq();
    this.#irqSeen = false;
    this.#host.poll();
    this.#forwardVia(this);
    // Interrupts this ring delivered may have completed other rings' I/O: post theirs too.
    for (const w of this.#host.wrappers) if (w !== this) w.#forwardVia(this);
    for (let round = 0; round < 64; round++) {
      const own = this.#msgsPending + this.#liveTokens;
      // Only the wrapper's SQEs are queued: posting them submits nothing of the application's.
      if (own === 0 || this.#live.sqPending !== own) break;
      this.#enter(0);
      this.#drainKernelCq(); // may step a split chain, which may queue more
    }
  }

  #drainKernelCq(): void {
    for (const c of this.#live.reap()) {
      if (c.userData >= IRQ_USER_DATA_BASE && c.userData < IRQ_USER_DATA_BASE + 65536n) {
        this.internalCqes++;
        this.#irqSeen = true;
        continue;
      }
      if (c.userData >= CHAIN_TOKEN_BASE && c.userData < CHAIN_TOKEN_BASE + CHAIN_TOKEN_SPAN) {
        this.internalCqes++;
        this.#chainStep(c.userData, c.res);
        continue;
      }
      if (c.userData === WRAPPER_MSG_USER_DATA) {
        this.internalCqes++; // the message's own CQE; the completion it carried is separate
        if (c.res < 0) {
          throw new Error(`real backend: posting a completion into the ring failed: ${c.res}`);
        }
        continue;
      }
      this.#ready.push(c);
    }
  }

  /** Queue, on `via`'s ring, one MSG_RING into this ring per host-stack completion. */
  #forwardVia(via: RingWrapper): number {
    let n = 0;
    for (const c of this.#shadow.reap()) {
      if (c.userData >= CHAIN_TOKEN_BASE && c.userData < CHAIN_TOKEN_BASE + CHAIN_TOKEN_SPAN) {
        this.#chainStep(c.userData, c.res); // the end of a segment of a split chain
        continue;
      }
      this.#queueCqe(via, c.userData, c.res, c.flags);
      this.forwarded++;
      n++;
    }
    return n;
  }

  /** Queue, on `via`'s ring, an IORING_OP_MSG_RING that posts this CQE into this ring. */
  #queueCqe(via: RingWrapper, userData: bigint, res: number, flags: number): void {
    const sqe = new Uint8Array(SQE.SIZE);
    const v = new DataView(sqe.buffer);
    v.setUint8(SQE.opcode, IORING_OP.MSG_RING);
    // No IOSQE_CQE_SKIP_SUCCESS: once a ring has seen that flag the kernel refuses
    // IOSQE_IO_DRAIN on it for good (-EOPNOTSUPP); the message's own CQE is consumed instead.
    v.setInt32(SQE.fd, this.#live.fd, true);
    v.setBigUint64(SQE.addr, BigInt(IORING_MSG.DATA), true);
    v.setUint32(SQE.len, res >>> 0, true);
    v.setBigUint64(SQE.off, userData, true);
    v.setBigUint64(SQE.userData, WRAPPER_MSG_USER_DATA, true);
    if (flags !== 0) {
      v.setUint32(SQE_MSG_RING_FLAGS, IORING_MSG_RING_FLAGS_PASS, true);
      v.setUint32(SQE_FILE_INDEX, flags, true);
    }
    while (!via.#live.pushSqe(sqe)) via.#enter(0); // SQ full: post what is queued first
    via.#msgsPending++;
  }

  /** REGISTER_FILES: the fd array is the argument itself. */
  #registerFiles(arg: Uint8Array | null, nrArgs: number): number {
    if (arg === null || arg.length < 4 * nrArgs || nrArgs <= 0) {
      return this.#live.register(IORING_REGISTER.REGISTER_FILES, arg, nrArgs);
    }
    const fds = readInts(arg, 0, nrArgs);
    const { live, shadow, emu } = this.#split(fds);
    const r = this.#live.register(IORING_REGISTER.REGISTER_FILES, ints(live), nrArgs);
    if (r < 0) return r;
    const s = this.#shadow.register(IORING_REGISTER.REGISTER_FILES, ints(shadow), nrArgs);
    if (s < 0) throw new Error(`real backend: host stack file table refused: ${s}`);
    this.#emuSlots.clear();
    for (const i of emu) this.#emuSlots.add(i);
    return r;
  }

  /** REGISTER_FILES2: sparse, or an fd array at `data`. */
  #registerFiles2(opcode: number, arg: Uint8Array | null, nrArgs: number): number {
    if (arg === null || arg.length < RSRC_REGISTER.SIZE) {
      return this.#live.register(opcode, arg, nrArgs);
    }
    const v = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    const nr = v.getUint32(RSRC_REGISTER.nr, true);
    const data = v.getBigUint64(RSRC_REGISTER.data, true);
    const fds = data === 0n ? null : this.#readUserInts(data, nr);
    if (data !== 0n && fds === null) return this.#live.register(opcode, arg, nrArgs); // -EFAULT
    if (fds === null) {
      const r = this.#live.register(opcode, arg, nrArgs);
      if (r < 0) return r;
      this.#shadow.register(opcode, arg, nrArgs);
      this.#emuSlots.clear();
      return r;
    }
    const { live, shadow, emu } = this.#split(fds);
    const tags = this.#splitTags(v.getBigUint64(RSRC_REGISTER.tags, true), nr, emu);
    if (tags === null) return this.#live.register(opcode, arg, nrArgs); // the kernel's -EFAULT
    return this.#withArrays(live, shadow, (ld, sd, lt, st) => {
      const a = (d: bigint, t: bigint) => {
        const b = arg.slice();
        const bv = new DataView(b.buffer);
        bv.setBigUint64(RSRC_REGISTER.data, d, true);
        bv.setBigUint64(RSRC_REGISTER.tags, t, true);
        return b;
      };
      const r = this.#live.register(opcode, a(ld, lt), nrArgs);
      if (r < 0) return r;
      const s = this.#shadow.register(opcode, a(sd, st), nrArgs);
      if (s < 0) throw new Error(`real backend: host stack file table refused: ${s}`);
      this.#emuSlots.clear();
      for (const i of emu) this.#emuSlots.add(i);
      return r;
    }, tags);
  }

  /** REGISTER_FILES_UPDATE2: { offset, resv, data, tags, nr, resv2 }, `nr` fds at `data`. */
  #updateFiles2(opcode: number, arg: Uint8Array | null, nrArgs: number): number {
    if (arg === null || arg.length < RSRC_UPDATE2.SIZE) {
      return this.#live.register(opcode, arg, nrArgs);
    }
    const v = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    return this.#updateSlots(opcode, arg, nrArgs, v.getUint32(RSRC_UPDATE2.nr, true), {
      offset: RSRC_UPDATE2.offset,
      data: RSRC_UPDATE2.data,
      tags: RSRC_UPDATE2.tags,
    });
  }

  /** REGISTER_FILES_UPDATE: struct io_uring_files_update { offset, resv, fds }, nr_args fds. */
  #updateFiles(opcode: number, arg: Uint8Array | null, nrArgs: number): number {
    if (arg === null || arg.length < RSRC_UPDATE.SIZE) {
      return this.#live.register(opcode, arg, nrArgs);
    }
    return this.#updateSlots(opcode, arg, nrArgs, nrArgs, {
      offset: RSRC_UPDATE.offset,
      data: RSRC_UPDATE.data,
    });
  }

  /** Replace `nr` slots from the struct's offset with the fds its data pointer names, split by side. */
  #updateSlots(
    opcode: number,
    arg: Uint8Array,
    nrArgs: number,
    nr: number,
    at: { offset: number; data: number; tags?: number },
  ): number {
    const v = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    const offset = v.getUint32(at.offset, true);
    const fds = this.#readUserInts(v.getBigUint64(at.data, true), nr);
    if (fds === null) return this.#live.register(opcode, arg, nrArgs); // the kernel's -EFAULT
    const { live, shadow, emu } = this.#split(fds);
    const tagAddr = at.tags === undefined ? 0n : v.getBigUint64(at.tags, true);
    const tags = this.#splitTags(tagAddr, nr, emu);
    if (tags === null) return this.#live.register(opcode, arg, nrArgs); // the kernel's -EFAULT
    return this.#withArrays(live, shadow, (ld, sd, lt, st) => {
      const withData = (d: bigint, t: bigint) => {
        const b = arg.slice();
        const bv = new DataView(b.buffer);
        bv.setBigUint64(at.data, d, true);
        if (at.tags !== undefined) bv.setBigUint64(at.tags, t, true);
        return b;
      };
      const r = this.#live.register(opcode, withData(ld, lt), nrArgs);
      if (r < 0) return r;
      this.#shadow.register(opcode, withData(sd, st), nrArgs);
      for (let i = 0; i < r; i++) this.#emuSlots.delete(offset + i);
      for (const i of emu) if (i < r) this.#emuSlots.add(offset + i);
      return r;
    }, tags);
  }

  /** Kernel side: the namespace's slots empty (-1); shadow side: only the namespace. */
  #split(fds: number[]): { live: number[]; shadow: number[]; emu: number[] } {
    const live: number[] = [];
    const shadow: number[] = [];
    const emu: number[] = [];
    fds.forEach((fd, i) => {
      const simFd = this.#host.emulatedFds.get(fd);
      if (simFd !== undefined) {
        live.push(-1);
        shadow.push(simFd);
        emu.push(i);
      } else {
        live.push(fd);
        shadow.push(-1);
      }
    });
    return { live, shadow, emu };
  }

  /**
   * Tags split by side: the kernel's array has 0 for the namespace's slots
   * (which it leaves empty, where a tag is -EINVAL), the shadow's holds only
   * theirs, so each side posts the tags of the files it holds. null when the
   * tag array cannot be read (the kernel answers that itself); [] for no tags.
   */
  #splitTags(addr: bigint, nr: number, emu: number[]): { live: bigint[]; shadow: bigint[] } | null {
    if (addr === 0n) return { live: [], shadow: [] };
    if (nr > 1 << 20 || !this.#host.mm.rangeMapped(addr, 8 * nr)) return null;
    const live: bigint[] = [];
    const shadow: bigint[] = [];
    const isEmu = new Set(emu);
    for (let i = 0; i < nr; i++) {
      const t = this.#host.mm.translate(addr + BigInt(8 * i))!;
      const tag = new DataView(t.page.data.buffer, t.page.data.byteOffset).getBigUint64(
        t.offset,
        true,
      );
      live.push(isEmu.has(i) ? 0n : tag);
      shadow.push(isEmu.has(i) ? tag : 0n);
    }
    return { live, shadow };
  }

  /** Run `f` with the two fd arrays (and tag arrays, if any) placed in memory both sides can read. */
  #withArrays(
    live: number[],
    shadow: number[],
    f: (liveAddr: bigint, shadowAddr: bigint, liveTags: bigint, shadowTags: bigint) => number,
    tags: { live: bigint[]; shadow: bigint[] } = { live: [], shadow: [] },
  ): number {
    using lb = this.#host.alloc(Math.max(4, 4 * live.length));
    using sb = this.#host.alloc(Math.max(4, 4 * shadow.length));
    using ltb = this.#host.alloc(Math.max(8, 8 * tags.live.length));
    using stb = this.#host.alloc(Math.max(8, 8 * tags.shadow.length));
    const lv = new DataView(lb.bytes.buffer, lb.bytes.byteOffset, lb.bytes.byteLength);
    const sv = new DataView(sb.bytes.buffer, sb.bytes.byteOffset, sb.bytes.byteLength);
    live.forEach((fd, i) => lv.setInt32(4 * i, fd, true));
    shadow.forEach((fd, i) => sv.setInt32(4 * i, fd, true));
    const ltv = new DataView(ltb.bytes.buffer, ltb.bytes.byteOffset, ltb.bytes.byteLength);
    const stv = new DataView(stb.bytes.buffer, stb.bytes.byteOffset, stb.bytes.byteLength);
    tags.live.forEach((t, i) => ltv.setBigUint64(8 * i, t, true));
    tags.shadow.forEach((t, i) => stv.setBigUint64(8 * i, t, true));
    const noTags = tags.live.length === 0;
    return f(lb.addr, sb.addr, noTags ? 0n : ltb.addr, noTags ? 0n : stb.addr);
  }

  /** `n` int32s at a user address, or null when any byte is outside the testbed's memory. */
  #readUserInts(addr: bigint, n: number): number[] | null {
    if (n === 0) return [];
    if (n > 1 << 20 || !this.#host.mm.rangeMapped(addr, 4 * n)) return null;
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = this.#host.mm.translate(addr + BigInt(4 * i))!;
      out.push(new DataView(t.page.data.buffer, t.page.data.byteOffset).getInt32(t.offset, true));
    }
    return out;
  }
}

/** Whether an opcode's `fd` field names a file (these opcodes' never names the namespace). */
function opUsesFd(op: number): boolean {
  return op !== IORING_OP.NOP && op !== IORING_OP.MSG_RING && op !== IORING_OP.TIMEOUT &&
    op !== IORING_OP.TIMEOUT_REMOVE && op !== IORING_OP.LINK_TIMEOUT &&
    op !== IORING_OP.FILES_UPDATE;
}

function readInts(b: Uint8Array, off: number, n: number): number[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(v.getInt32(off + 4 * i, true));
  return out;
}

function ints(a: number[]): Uint8Array {
  const b = new Uint8Array(4 * a.length);
  const v = new DataView(b.buffer);
  a.forEach((x, i) => v.setInt32(4 * i, x, true));
  return b;
}

/** A copy of a BUFFERS2 / BUFFERS_UPDATE argument with its tags pointer cleared. */
function withoutTags(opcode: number, arg: Uint8Array | null): Uint8Array | null {
  const at = opcode === IORING_REGISTER.REGISTER_BUFFERS2
    ? RSRC_REGISTER.tags
    : opcode === IORING_REGISTER.REGISTER_BUFFERS_UPDATE
    ? RSRC_UPDATE2.tags
    : -1;
  if (at < 0 || arg === null || arg.length < at + 8) return arg;
  const b = arg.slice();
  new DataView(b.buffer).setBigUint64(at, 0n, true);
  return b;
}
