/**
 * The device's side of DMA: every access a device makes to host memory goes
 * through a {@link DeviceDmaPort} built here, which translates each page
 * (through the IOMMU when one is in the path), checks the whole range, and
 * only then touches physical memory. A fault leaves memory untouched.
 *
 * Mirrors QEMU's address_space_rw() through an IOMMU memory region
 * (system/physmem.c, hw/i386/intel_iommu.c vtd_iommu_translate()).
 *
 * @module
 */

import { PAGE_MASK_LOW, PAGE_SHIFT, PAGE_SIZE, type PhysMem } from "../memory/phys.ts";
import type { DeviceDmaPort, DmaFault } from "./types.ts";

/** Largest single device access the port accepts (a bound, not a hardware limit): 64 MiB. */
export const BUS_MAX_ACCESS_BYTES = 64 << 20;

/** Highest bus address + 1 (64-bit bus). */
const BUS_LIMIT = 1n << 64n;

/** One translated piece of a device access: physical address and length (within one page). */
interface PhysChunk {
  phys: bigint;
  len: number;
}

/** Translates one bus page for a device access; a physical page address or a fault. */
export interface BusTranslator {
  /** Translate the page holding `addr` for a read (`write` false) or write; page-aligned result. */
  translatePage(addr: bigint, write: boolean): bigint | DmaFault;
}

/**
 * Told of every device access that reaches memory (after translation, before
 * the copy): the DMA-API debug checker's view of the device.
 */
export type DeviceAccessObserver = (addr: bigint, len: number, write: boolean) => void;

/**
 * Build the device port: `translator` absent means bus address = physical
 * address; `observer` hears every access that was not refused.
 */
export function createDevicePort(
  phys: PhysMem,
  translator?: BusTranslator,
  observer?: DeviceAccessObserver,
): DeviceDmaPort {
  const resolve = (addr: bigint, len: number, write: boolean): PhysChunk[] | DmaFault => {
    if (!Number.isInteger(len) || len < 0 || len > BUS_MAX_ACCESS_BYTES) {
      throw new RangeError(`DeviceDmaPort: bad length ${len}`);
    }
    if (addr < 0n || addr + BigInt(len) > BUS_LIMIT) return { addr, reason: "bad-address" };
    const chunks: PhysChunk[] = [];
    let done = 0;
    while (done < len) {
      const a = addr + BigInt(done);
      const off = Number(a & BigInt(PAGE_MASK_LOW));
      const n = Math.min(PAGE_SIZE - off, len - done);
      let pagePhys = a - BigInt(off);
      if (translator) {
        const t = translator.translatePage(a, write);
        if (typeof t !== "bigint") return t;
        pagePhys = t;
      }
      // The frame must be RAM before anything is copied (no partial transfer); a freed
      // kernel frame in quarantine still is.
      if (!phys.onBus(Number(pagePhys >> BigInt(PAGE_SHIFT)))) {
        return { addr: a, reason: "bad-address" };
      }
      chunks.push({ phys: pagePhys + BigInt(off), len: n });
      done += n;
    }
    return chunks;
  };

  return {
    read(addr: bigint, len: number): Uint8Array | DmaFault {
      const r = resolve(addr, len, false);
      if (!Array.isArray(r)) return r;
      observer?.(addr, len, false);
      const out = new Uint8Array(len);
      let pos = 0;
      for (const c of r) {
        phys.read(c.phys, out.subarray(pos, pos + c.len));
        pos += c.len;
      }
      return out;
    },
    write(addr: bigint, data: Uint8Array): DmaFault | null {
      const r = resolve(addr, data.length, true);
      if (!Array.isArray(r)) return r;
      observer?.(addr, data.length, true);
      let pos = 0;
      for (const c of r) {
        phys.write(c.phys, data.subarray(pos, pos + c.len));
        pos += c.len;
      }
      return null;
    },
  };
}
