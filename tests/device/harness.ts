/**
 * A minimal host for controller tests: SQE writes and doorbells, CQE reaping
 * with phase tracking ({@link QueueHost}), over either controller. {@link Host}
 * keeps queues and buffers in kernel frames and the TypeScript controller
 * reaches them only through the real DMA layer (`createDma`, IOMMU off);
 * `c_host.ts` puts the same host in front of the C controller.
 *
 * @module
 */

import { Kernel } from "../../sim/kernel.ts";
import { createDevicePort } from "../../sim/dma/bus.ts";
import type { DeviceDmaPort } from "../../sim/dma/types.ts";
import { PAGE_SIZE, pfnToPhys } from "../../sim/memory/phys.ts";
import { type ControllerConfig, NvmeController } from "../../sim/device/controller.ts";
import {
  decodeCqe,
  encodeNvmeCommand,
  NVME_ADMIN,
  NVME_CQ_IRQ_ENABLED,
  NVME_CQE_SIZE,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_SQE_SIZE,
  type NvmeCommandInit,
  type NvmeCqe,
} from "../../sim/device/nvme_spec.ts";
import { doorbellOffset, encodeAqa, encodeCc } from "../../sim/device/regs.ts";
import { NVME_REG } from "../../sim/device/port.ts";

/** Physically contiguous kernel frames: bus address (IOMMU off) and CPU view. */
export interface Region {
  pfn: number;
  npages: number;
  addr: bigint;
  /** CPU read of `len` bytes at `off`. */
  read(off: number, len: number): Uint8Array;
  /** CPU write at `off`. */
  write(off: number, data: Uint8Array): void;
}

/** Host-side view of one queue pair. */
export interface HostQueue {
  qid: number;
  sq: Region;
  cq: Region;
  sqSize: number;
  cqSize: number;
  sqTail: number;
  cqHead: number;
  phase: 0 | 1;
}

/** The device port of the real DMA layer in IOMMU-off mode. */
export function devicePort(kernel: Kernel): DeviceDmaPort {
  return createDevicePort(kernel.phys);
}

/** What {@link QueueHost} needs of a controller: its registers. */
export interface QueueRegisters {
  readReg32(offset: number): number;
  writeReg32(offset: number, value: number): void;
  writeReg64(offset: number, value: bigint): void;
}

/**
 * The host side of the queues, whatever controller is behind the registers:
 * admin and I/O queues in host frames, SQE writes and doorbells, CQE reaping
 * with phase tracking. A subclass gives the memory and the controller's step.
 */
export abstract class QueueHost<C extends QueueRegisters> implements Disposable {
  readonly ctrl: C;
  readonly queues = new Map<number, HostQueue>();
  #cid = 1;

  constructor(ctrl: C) {
    this.ctrl = ctrl;
  }

  /** Allocate `npages` contiguous zeroed host frames. */
  abstract alloc(npages: number): Region;

  /** Let the controller fetch and execute what the doorbells announced. */
  abstract step(): void;

  /** The controller's media bytes `[pos, pos + len)` of namespace `nsid`. */
  abstract mediaRead(nsid: number, pos: number, len: number): Uint8Array;

  /** Release what the host holds (nothing by default). */
  [Symbol.dispose](): void {}

  /** Program AQA/ASQ/ACQ and set CC.EN; returns CSTS. */
  enable(sqSize = 16, cqSize = 16, ccOverride?: number): number {
    const sq = this.alloc(Math.ceil((sqSize * NVME_SQE_SIZE) / PAGE_SIZE));
    const cq = this.alloc(Math.ceil((cqSize * NVME_CQE_SIZE) / PAGE_SIZE));
    this.ctrl.writeReg32(NVME_REG.AQA, encodeAqa(sqSize, cqSize));
    this.ctrl.writeReg64(NVME_REG.ASQ, sq.addr);
    this.ctrl.writeReg64(NVME_REG.ACQ, cq.addr);
    const cc = ccOverride ??
      encodeCc({ en: true, css: 0, mps: 0, shn: 0, iosqes: 6, iocqes: 4 });
    this.ctrl.writeReg32(NVME_REG.CC, cc);
    this.queues.set(0, { qid: 0, sq, cq, sqSize, cqSize, sqTail: 0, cqHead: 0, phase: 1 });
    return this.ctrl.readReg32(NVME_REG.CSTS);
  }

  /** Next command identifier. */
  cid(): number {
    const c = this.#cid;
    this.#cid = (this.#cid + 1) & 0xffff || 1;
    return c;
  }

  /** Write an SQE at the tail (no doorbell). */
  push(qid: number, init: Omit<NvmeCommandInit, "commandId"> & { commandId?: number }): number {
    const q = this.queues.get(qid)!;
    const commandId = init.commandId ?? this.cid();
    q.sq.write(q.sqTail * NVME_SQE_SIZE, encodeNvmeCommand({ ...init, commandId }));
    q.sqTail = (q.sqTail + 1) % q.sqSize;
    return commandId;
  }

  /** Ring the SQ tail doorbell with the host's tail. */
  ring(qid: number): void {
    this.ctrl.writeReg32(doorbellOffset(qid, false), this.queues.get(qid)!.sqTail);
  }

  /** Reap one CQE if its phase matches; advances the head, rings the doorbell if asked. */
  reap(qid: number, ringDoorbell = true): NvmeCqe | null {
    const q = this.queues.get(qid)!;
    const cqe = decodeCqe(q.cq.read(q.cqHead * NVME_CQE_SIZE, NVME_CQE_SIZE));
    if (cqe.phase !== q.phase) return null;
    q.cqHead++;
    if (q.cqHead === q.cqSize) {
      q.cqHead = 0;
      q.phase = q.phase === 1 ? 0 : 1;
    }
    if (ringDoorbell) this.ctrl.writeReg32(doorbellOffset(qid, true), q.cqHead);
    return cqe;
  }

  /** Submit one command, step the controller, reap its completion. */
  run(qid: number, init: Omit<NvmeCommandInit, "commandId">): NvmeCqe {
    const cid = this.push(qid, init);
    this.ring(qid);
    for (let i = 0; i < 100; i++) {
      this.step();
      const cqe = this.reap(qid);
      if (cqe) {
        if (cqe.commandId !== cid) throw new Error(`cid ${cqe.commandId} != ${cid}`);
        return cqe;
      }
    }
    throw new Error(`no completion for cid ${cid} on queue ${qid}`);
  }

  /** Create I/O CQ and SQ `qid` (admin commands); returns both statuses. */
  createIoQueuePair(qid: number, size = 16, vector = qid): [number, number] {
    const sq = this.alloc(Math.ceil((size * NVME_SQE_SIZE) / PAGE_SIZE));
    const cq = this.alloc(Math.ceil((size * NVME_CQE_SIZE) / PAGE_SIZE));
    const a = this.run(0, {
      opcode: NVME_ADMIN.CREATE_CQ,
      prp1: cq.addr,
      cdw10: ((size - 1) << 16) | qid,
      cdw11: (vector << 16) | NVME_QUEUE_PHYS_CONTIG | NVME_CQ_IRQ_ENABLED,
    });
    const b = this.run(0, {
      opcode: NVME_ADMIN.CREATE_SQ,
      prp1: sq.addr,
      cdw10: ((size - 1) << 16) | qid,
      cdw11: (qid << 16) | NVME_QUEUE_PHYS_CONTIG,
    });
    if (a.status === 0 && b.status === 0) {
      this.queues.set(qid, {
        qid,
        sq,
        cq,
        sqSize: size,
        cqSize: size,
        sqTail: 0,
        cqHead: 0,
        phase: 1,
      });
    }
    return [a.status, b.status];
  }

  /** Enable, create I/O queue pair 1; throws if either fails. */
  start(ioSize = 16): this {
    if (this.enable() !== 1) throw new Error("controller did not become ready");
    const [a, b] = this.createIoQueuePair(1, ioSize);
    if (a !== 0 || b !== 0) throw new Error(`queue creation failed ${a} ${b}`);
    return this;
  }
}

/** Test host around one TypeScript controller, memory in the kernel's frames. */
export class Host extends QueueHost<NvmeController> {
  readonly kernel: Kernel;

  constructor(cfg: Partial<ControllerConfig> = {}, seed = 7) {
    const kernel = new Kernel({ seed });
    super(new NvmeController(devicePort(kernel), { seed, ...cfg }, kernel.stats));
    this.kernel = kernel;
  }

  alloc(npages: number): Region {
    const phys = this.kernel.phys;
    const pfn = phys.allocContig(npages);
    const addr = pfnToPhys(pfn);
    return {
      pfn,
      npages,
      addr,
      read(off, len) {
        const b = new Uint8Array(len);
        phys.read(addr + BigInt(off), b);
        return b;
      },
      write(off, data) {
        phys.write(addr + BigInt(off), data);
      },
    };
  }

  step(): void {
    this.ctrl.poll();
  }

  mediaRead(nsid: number, pos: number, len: number): Uint8Array {
    return this.ctrl.mediaRead(nsid, pos, len);
  }

  /** Enable and create I/O queue pair 1. */
  static ready(cfg: Partial<ControllerConfig> = {}, ioSize = 16): Host {
    return new Host(cfg).start(ioSize);
  }
}

/** Bytes 0..n-1 filled from a seed (deterministic pattern). */
export function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/**
 * Byte-exact comparison that reports the first difference (offset and page)
 * instead of a diff of the whole array: `assert.deepEqual` on two differing
 * megabyte arrays spends minutes formatting its message.
 */
export function assertBytes(actual: Uint8Array, expected: Uint8Array, what = "bytes"): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: ${actual.length} bytes, expected ${expected.length}`);
  }
  let first = -1;
  let differ = 0;
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] === expected[i]) continue;
    if (first < 0) first = i;
    differ++;
  }
  if (first >= 0) {
    throw new Error(
      `${what}: ${differ} of ${actual.length} bytes differ, the first at ${first} (page ${
        first >> 12
      } +${first & 4095}: ${actual[first]}, expected ${expected[first]})`,
    );
  }
}

/** Write a little-endian u64 array into a region at `off`. */
export function putU64s(r: Region, off: number, vals: bigint[]): void {
  const b = new Uint8Array(vals.length * 8);
  const v = new DataView(b.buffer);
  vals.forEach((x, i) => v.setBigUint64(i * 8, x, true));
  r.write(off, b);
}
