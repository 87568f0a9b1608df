/**
 * PRP lists at their page boundaries, on the TypeScript controller and on the
 * C one (libnvme_emu.so through the binding), with the same test bodies:
 *
 * - a list that exactly fills its page: the last slot is the transfer's last
 *   entry, not a pointer to another list page (NVMe Base 2.0, 4.1.1: the last
 *   entry chains only when more than one entry remains);
 * - a list page of 511 entries plus the chain pointer, the next page holding
 *   the rest, and a 4 MiB transfer whose second list page is filled to its
 *   last slot;
 * - the geometry of the driver's small-pool threshold (`nprps <= 256 / 8`):
 *   32 entries in a page's last 256-byte block end on the page's last slot,
 *   33 come from a page of their own.
 *
 * Where a device that took an exactly filled last slot for a chain pointer
 * could still pass its checks, the last data page starts with a valid page
 * address, so only the data can tell: every case writes, then reads back.
 */
import assert from "node:assert/strict";
import {
  assertBytes,
  Host,
  pattern,
  putU64s,
  type QueueHost,
  type QueueRegisters,
  type Region,
} from "./harness.ts";
import { CHost, cHostUnavailable } from "./c_host.ts";
import { NvmeEmu } from "../../ffi/nvme_emu.ts";
import { NVME_CMD } from "../../sim/device/nvme_spec.ts";

const PAGE = 4096;
type AnyHost = QueueHost<QueueRegisters>;

const cWhy = cHostUnavailable();
if (cWhy !== null) console.log(`SKIP PRP list boundaries on the C controller: ${cWhy}`);

const CONTROLLERS: { name: string; why: string | null; make(mdts: number): AnyHost }[] = [
  { name: "TS", why: null, make: (mdts) => Host.ready({ mdts }) },
  { name: "C", why: cWhy, make: (mdts) => CHost.ready({ mdts }) },
];

/** Each case on both controllers; the C one's allocation ledger is checked empty after. */
function both(name: string, mdts: number, body: (h: AnyHost) => void): void {
  for (const c of CONTROLLERS) {
    Deno.test({
      name: `${name} [${c.name}]`,
      ignore: c.why !== null,
      fn: () => {
        {
          using h = c.make(mdts);
          body(h);
        }
        if (c.name === "C") assert.equal(NvmeEmu.ledger(), 0, "nvme_emu_ledger() after destroy");
      },
    });
  }
}

/** The bus address of page `i` of a contiguous region. */
const at = (r: Region, i: number) => r.addr + BigInt(i * PAGE);

/**
 * Page `last` of `data` starts with a page-aligned address in the buffer, so
 * the page passes the PRP checks if a device wrongly reads it as a list page.
 */
function plantPointer(data: Uint8Array, last: number, target: bigint): void {
  new DataView(data.buffer, data.byteOffset + last * PAGE, 8).setBigUint64(0, target, true);
}

/**
 * Write `data` from `buf` (PRP1 = its first page, PRP2 = `prp2`) to LBA
 * `slba`, check the media; zero the buffer, read it back, check the buffer.
 */
function writeThenRead(h: AnyHost, buf: Region, prp2: bigint, data: Uint8Array, slba = 0n) {
  const pages = data.length / PAGE;
  buf.write(0, data);
  const cmd = { nsid: 1, prp1: buf.addr, prp2, slba, nlb0: pages - 1 };
  let c = h.run(1, { opcode: NVME_CMD.WRITE, ...cmd });
  assert.equal(c.status, 0, "write status");
  assertBytes(h.mediaRead(1, Number(slba) * PAGE, data.length), data, "media after write");
  buf.write(0, new Uint8Array(data.length));
  c = h.run(1, { opcode: NVME_CMD.READ, ...cmd });
  assert.equal(c.status, 0, "read status");
  assertBytes(buf.read(0, data.length), data, "host pages after read");
}

both("PRP list ending in the last slot of its page: three entries at offset 4072", 5, (h) => {
  const pages = [h.alloc(1), h.alloc(1), h.alloc(1), h.alloc(1)];
  const list = h.alloc(1);
  putU64s(list, 4072, pages.slice(1).map((p) => p.addr));
  const data = pattern(4 * PAGE, 21);
  plantPointer(data, 3, pages[0].addr);
  pages.forEach((p, i) => p.write(0, data.subarray(i * PAGE, (i + 1) * PAGE)));
  const c = h.run(1, {
    opcode: NVME_CMD.WRITE,
    nsid: 1,
    prp1: pages[0].addr,
    prp2: list.addr + 4072n,
    slba: 3n,
    nlb0: 3,
  });
  assert.equal(c.status, 0);
  assertBytes(h.mediaRead(1, 3 * PAGE, 4 * PAGE), data, "media after write");
});

both("PRP list of 512 entries filling a whole page: 513 pages with MDTS 10", 10, (h) => {
  const buf = h.alloc(513);
  const list = h.alloc(1);
  putU64s(list, 0, Array.from({ length: 512 }, (_, i) => at(buf, i + 1)));
  const data = pattern(513 * PAGE, 22);
  plantPointer(data, 512, at(buf, 0));
  writeThenRead(h, buf, list.addr, data);
});

both(
  "PRP list of 511 entries + chain: 514 pages, entries 512 and 513 on the next page",
  10,
  (h) => {
    const buf = h.alloc(514);
    const lists = h.alloc(2);
    putU64s(lists, 0, [...Array.from({ length: 511 }, (_, i) => at(buf, i + 1)), at(lists, 1)]);
    // The second list page: two entries, then page-aligned addresses a device must not follow.
    putU64s(lists, PAGE, [
      at(buf, 512),
      at(buf, 513),
      ...Array.from({ length: 510 }, () => buf.addr),
    ]);
    writeThenRead(h, buf, lists.addr, pattern(514 * PAGE, 23), 5n);
  },
);

both("PRP lists of 4 MiB: 511 + chain, then a second page filled to its last slot", 10, (h) => {
  const buf = h.alloc(1024);
  const lists = h.alloc(2);
  putU64s(lists, 0, [...Array.from({ length: 511 }, (_, i) => at(buf, i + 1)), at(lists, 1)]);
  putU64s(lists, PAGE, Array.from({ length: 512 }, (_, i) => at(buf, 512 + i)));
  const data = pattern(1024 * PAGE, 24);
  plantPointer(data, 1023, at(buf, 0));
  writeThenRead(h, buf, lists.addr, data);
});

both(
  "PRP list of 511 entries + chain, starting mid-page: 31 + chain at offset 3840, then 2",
  6,
  (h) => {
    // The 33 entries the driver would put in a page-pool block, here from a 256-byte block.
    const buf = h.alloc(34);
    const lists = h.alloc(2);
    putU64s(lists, 3840, [...Array.from({ length: 31 }, (_, i) => at(buf, i + 1)), at(lists, 1)]);
    putU64s(lists, PAGE, [at(buf, 32), at(buf, 33)]);
    writeThenRead(h, buf, lists.addr + 3840n, pattern(34 * PAGE, 25));
  },
);

both(
  "small-pool geometry: 32 entries in a page's last 256-byte block end on its last slot",
  6,
  (h) => {
    const buf = h.alloc(33);
    const list = h.alloc(1);
    putU64s(list, 3840, Array.from({ length: 32 }, (_, i) => at(buf, i + 1)));
    const data = pattern(33 * PAGE, 26);
    plantPointer(data, 32, at(buf, 0));
    writeThenRead(h, buf, list.addr + 3840n, data);
  },
);

both("small-pool geometry: 33 entries from the start of a page-pool page, no chain", 6, (h) => {
  const buf = h.alloc(34);
  const list = h.alloc(1);
  putU64s(list, 0, Array.from({ length: 33 }, (_, i) => at(buf, i + 1)));
  writeThenRead(h, buf, list.addr, pattern(34 * PAGE, 27));
});
