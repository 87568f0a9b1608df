/**
 * The controller's one way into host memory: every SQE fetch, CQE post, PRP
 * list read and data transfer goes through {@link DeviceDma}, which wraps the
 * {@link DeviceDmaPort} it was given and counts each access. Mirrors
 * hw/nvme/ctrl.c nvme_addr_read()/nvme_addr_write() (pci_dma_read/write).
 *
 * @module
 */

import type { DeviceDmaPort, DmaFault } from "../dma/types.ts";
import { PhysFault } from "../memory/phys.ts";
import { COUNTER, type Stats } from "../stats.ts";

/** One past the highest bus address (64-bit bus). */
const BUS_LIMIT = 1n << 64n;
/** Below this an address plus any access length (at most 16 MiB) cannot pass {@link BUS_LIMIT}. */
const EXACT_LIMIT = 1n << 53n;

/** What {@link DeviceDma} asks of its port. */
const READ = 0;
const WRITE = 1;
const WRITE_WITH = 2;
type Access = typeof READ | typeof WRITE | typeof WRITE_WITH;

/** Largest single device access (a bound, not a hardware limit): 16 MiB. */
export const DEVICE_DMA_MAX_BYTES = 16 << 20;

/** Counted, fault-catching access to host memory for one controller. */
export class DeviceDma {
  readonly #port: DeviceDmaPort;
  readonly #stats: Stats | undefined;
  /** Where {@link DeviceDma.readList} puts a list, and a view of it. */
  #list = new Uint8Array(0);
  #listView = new DataView(this.#list.buffer);
  /** The most recent fault, for diagnostics. */
  lastFault: DmaFault | null = null;
  /** Faults seen since creation. */
  faults = 0;

  /** Wrap a device DMA port. */
  constructor(port: DeviceDmaPort, stats?: Stats) {
    this.#port = port;
    this.#stats = stats;
  }

  /** nvme_addr_read(): `len` bytes at bus address `addr`, or null on a fault (nothing read). */
  read(addr: bigint, len: number): Uint8Array | null {
    if (!Number.isInteger(len) || len < 0 || len > DEVICE_DMA_MAX_BYTES) {
      throw new RangeError(`DeviceDma.read: bad length ${len}`);
    }
    const out = new Uint8Array(len);
    return this.readInto(addr, out) ? out : null;
  }

  /**
   * nvme_addr_read() of a descriptor list (a PRP list page, an SGL segment)
   * into the controller's list buffer: a view valid until the next call, or
   * null on a fault.
   */
  readList(addr: bigint, len: number): DataView | null {
    if (!Number.isInteger(len) || len < 0 || len > DEVICE_DMA_MAX_BYTES) {
      throw new RangeError(`DeviceDma.read: bad length ${len}`);
    }
    if (this.#list.length < len) {
      this.#list = new Uint8Array(Math.max(len, 4096));
      this.#listView = new DataView(this.#list.buffer);
    }
    return this.readInto(addr, this.#list.subarray(0, len)) ? this.#listView : null;
  }

  /** nvme_addr_read() into `dst` (`dst.length` bytes); false on a fault (nothing read). */
  readInto(addr: bigint, dst: Uint8Array): boolean {
    if (dst.length > DEVICE_DMA_MAX_BYTES) {
      throw new RangeError(`DeviceDma.read: bad length ${dst.length}`);
    }
    return this.#access(addr, dst.length, READ, dst, null);
  }

  /** nvme_addr_write(): store `data` at `addr`; false on a fault (nothing written). */
  write(addr: bigint, data: Uint8Array): boolean {
    if (data.length > DEVICE_DMA_MAX_BYTES) {
      throw new RangeError(`DeviceDma.write: bad length ${data.length}`);
    }
    return this.#access(addr, data.length, WRITE, data, null);
  }

  /**
   * nvme_addr_write() from a source that fills host memory in place (see
   * DeviceDmaPort.writeWith); false on a fault (nothing written).
   */
  writeWith(addr: bigint, len: number, fill: (dst: Uint8Array, pos: number) => void): boolean {
    if (!Number.isInteger(len) || len < 0 || len > DEVICE_DMA_MAX_BYTES) {
      throw new RangeError(`DeviceDma.write: bad length ${len}`);
    }
    return this.#access(addr, len, WRITE_WITH, null, fill);
  }

  /**
   * One access through the port: a range off the 64-bit bus is refused
   * before it is counted; a port fault or a physical hole is recorded.
   */
  #access(
    addr: bigint,
    len: number,
    kind: Access,
    buf: Uint8Array | null,
    fill: ((dst: Uint8Array, pos: number) => void) | null,
  ): boolean {
    if (addr < 0n || (addr >= EXACT_LIMIT && addr + BigInt(len) > BUS_LIMIT)) {
      return this.#fault(addr, "bad-address") !== null;
    }
    this.#stats?.add(kind === READ ? COUNTER.deviceDmaReads : COUNTER.deviceDmaWrites);
    let r: DmaFault | null;
    try {
      r = kind === READ
        ? this.#port.readInto(addr, buf!)
        : kind === WRITE
        ? this.#port.write(addr, buf!)
        : this.#port.writeWith(addr, len, fill!);
    } catch (e) {
      if (e instanceof PhysFault) return this.#fault(e.paddr, "bad-address") !== null;
      throw e;
    }
    return r === null || this.#fault(r.addr, r.reason) !== null;
  }

  #fault(addr: bigint, reason: DmaFault["reason"]): null {
    this.lastFault = { addr, reason };
    this.faults++;
    return null;
  }
}
