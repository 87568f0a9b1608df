/**
 * IORING_REGISTER_UNMAP_BUFFERS while a premapped I/O is in flight
 * (DESIGN.md section 2, "Lifetime as posted"), for the posted code (`v2`,
 * the default, and `v3`) and the project's `hardened` variant, under IOMMU
 * `strict` and `off`, for a READ_FIXED and a WRITE_FIXED of 16 KiB.
 *
 * Each case registers and premaps one 16 KiB buffer, queues the I/O without
 * waiting (its PRPs written, the doorbell rung: on `sim` the device runs only
 * when the kernel is polled, so the command stays in flight), unmaps the
 * buffer, then waits and prints one row: the CQE, the NVMe status(es) the
 * controller posted (sim), the IOMMU faults, the DMA-API debug checker's
 * reports, what KASAN would report (the driver's use of the freed mapping),
 * and the bytes the device moved to or from pages no longer mapped for it. Two 8 KiB cases follow (v2, IOMMU off: PRP2 is then the second
 * array entry itself, so no PRP list is fetched from the freed array), then
 * the checker's messages (sim) and what the rows mean.
 *
 * Under v2 with IOMMU off at 16 KiB the controller fetches its PRP list from
 * the freed array: freed kernel memory is poisoned (0x6b) and quarantined,
 * still RAM on the bus as on a real machine, so it reads poison as PRP
 * entries and fails the command (PRP Offset Invalid), and the checker
 * reports the read of memory no longer mapped for the device.
 *
 *   deno run examples/unmap_race.ts                              # sim
 *   deno run --allow-all examples/unmap_race.ts --backend=real   # C controller, stepped inline
 *
 * @module
 */

import { runMain } from "../bench/main.ts";
import { parseArgs } from "node:util";
import { IOSQE, O, openTestbed, type PremapVariant, realNvmeUnavailable } from "../mod.ts";
import type { IommuMode } from "../sim/dma/types.ts";
import type { DmaDebug } from "../sim/dma/debug.ts";
import type { SimTestbed } from "../sim/testbed.ts";
import type { NvmeQueue } from "../sim/nvme/pci.ts";
import { decodeCqe, NVME_CQE_SIZE, nvmeStatusString } from "../sim/device/nvme_spec.ts";
import { describeResult } from "../sim/uapi/errno.ts";

/** Bytes per I/O (four 4 KiB pages: PRP1, and PRP2 straight into the flat array). */
export const IO_BYTES = 16384;
/** The contrast cases: two pages, PRP2 is the second array entry itself (no list is read). */
export const SMALL_IO_BYTES = 8192;
const PAGE = 4096;
/** Where the case's I/O goes on the namespace. */
const IO_POS = 65536n;

/** One (variant, IOMMU mode, direction) case, measured. */
export interface RaceRow {
  /** Premap variant. */
  premap: PremapVariant;
  /** IOMMU mode. */
  iommu: IommuMode;
  /** Direction of the in-flight I/O. */
  dir: "read" | "write";
  /** I/O size. */
  bytes: number;
  /** UNMAP_BUFFERS' own result. */
  unmapRes: number;
  /** Pages still DMA-mapped right after UNMAP returned (before the device ran). */
  pagesMappedAfterUnmap: number;
  /** The I/O's CQE res. */
  res: number;
  /** NVMe statuses the controller posted for the command, one per attempt (sim only). */
  nvmeStatuses: number[] | undefined;
  /** Requeues by the driver (nvme_retry_req) during the I/O (sim only). */
  retries: number | undefined;
  /** IOMMU faults during the I/O. */
  iommuFaults: number;
  /** Controller error completions (deviceErrors) during the I/O. */
  deviceErrors: number;
  /** DMA-API debug reports during the I/O. */
  dmaDebugErrors: number;
  /** KASAN-style reports from the driver (its use of the freed mapping). */
  kasanReports: number;
  /** Bytes the device moved to/from bus addresses no live mapping covers (the checker's count). */
  unmappedBytes: number;
  /** 4 KiB pages of the buffer (read) or the media (write) now holding the I/O's data (NaN: unknown). */
  dataPagesMoved: number;
  /** The checker's messages during the I/O, oldest first (sim only). */
  messages: string[] | undefined;
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** 4 KiB pages of `a` equal to those of `b`. */
function samePages(a: Uint8Array, b: Uint8Array): number {
  let n = 0;
  for (let p = 0; p < a.length; p += PAGE) {
    const x = a.subarray(p, p + PAGE);
    const y = b.subarray(p, p + PAGE);
    if (x.every((v, i) => v === y[i])) n++;
  }
  return n;
}

function check(what: string, r: { res: number }, want = 0): void {
  if (r.res !== want) throw new Error(`${what}: ${describeResult(r.res)}, expected ${want}`);
}

/** Run one case on a fresh testbed. */
export function runCase(
  backend: "sim" | "real",
  premap: PremapVariant,
  iommu: IommuMode,
  dir: "read" | "write",
  seed: number,
  len = IO_BYTES,
): RaceRow {
  using tb = backend === "sim"
    ? openTestbed({ backend, iommu, premap, seed })
    // The device is stepped by the host (as sim's is), so the I/O stays in flight until the wait.
    : openTestbed({ backend, iommu, premap, seed, device: "inline", mediaInMemory: true });
  const sim = backend === "sim" ? tb as SimTestbed : undefined;
  const stats = tb.stats!;
  const c = stats.counters;
  using ring = tb.ring({ entries: 8 });
  using buf = tb.allocBuffer(len);
  const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
  if (fd < 0) throw new Error(`open ${tb.nvmeDevice}: ${describeResult(fd)}`);
  check("register files", ring.registerFiles([fd]));
  check("register buffers", ring.registerBuffers([{ addr: buf.addr, len: len }]));
  check("map buffers", ring.mapBuffers(0, 0, 1));
  // What the media holds before the case: the old data; the case's data is the new pattern.
  const oldData = pattern(len, 1);
  const newData = pattern(len, 2);
  buf.bytes.set(dir === "read" ? newData : oldData);
  ring.writeFixed(0, buf.addr, len, IO_POS, 0, { flags: IOSQE.FIXED_FILE, userData: 1n });
  const [w] = ring.submitAndReap(1);
  check("setup WRITE_FIXED", w, len);
  buf.bytes.set(dir === "read" ? new Uint8Array(len) : newData);

  const debug: DmaDebug | undefined = sim?.host.dmaSetup.debug;
  const ioQueues: NvmeQueue[] = sim ? sim.host.driver.queues : [];
  const heads = ioQueues.map((q) => ({ head: q.cqHead, phase: q.cqPhase }));
  const before = { ...c };
  const retriedBefore = sim?.host.driver.retriedCommands ?? 0;
  const eventsBefore = debug?.events.length ?? 0;
  const live = () => c.dmaMapPageCalls - c.dmaUnmapPageCalls;

  const op = dir === "read" ? ring.readFixed.bind(ring) : ring.writeFixed.bind(ring);
  op(0, buf.addr, len, IO_POS, 0, { flags: IOSQE.FIXED_FILE, userData: 2n });
  check("submit without waiting", ring.submit(0), 1);
  const unmapRes = ring.unmapBuffers(0, 0, 1).res;
  const pagesMappedAfterUnmap = live();
  check("wait", ring.submit(1));
  const cqes = ring.reap();
  if (cqes.length !== 1) throw new Error(`expected 1 CQE, got ${cqes.length}`);

  // The controller's completions for the command: the CQ entries the driver consumed meanwhile.
  let nvmeStatuses: number[] | undefined;
  if (sim) {
    nvmeStatuses = [];
    ioQueues.forEach((q, i) => {
      let { head, phase } = heads[i];
      while (head !== q.cqHead || phase !== q.cqPhase) {
        nvmeStatuses!.push(decodeCqe(q.cq.cpu, head * NVME_CQE_SIZE).status);
        if (++head === q.depth) {
          head = 0;
          phase = phase === 1 ? 0 : 1;
        }
      }
    });
  }
  const dataPagesMoved = dir === "read"
    ? samePages(buf.bytes, newData)
    : sim
    ? samePages(sim.host.controller!.mediaRead(1, Number(IO_POS), len), newData)
    : Number.NaN;
  const d = (k: keyof typeof c) => c[k] - before[k];
  return {
    premap,
    iommu,
    dir,
    bytes: len,
    unmapRes,
    pagesMappedAfterUnmap,
    res: cqes[0].res,
    nvmeStatuses,
    retries: sim ? sim.host.driver.retriedCommands - retriedBefore : undefined,
    iommuFaults: d("iommuFaults"),
    deviceErrors: d("deviceErrors"),
    dmaDebugErrors: d("dmaDebugErrors"),
    kasanReports: d("kasanReports"),
    unmappedBytes: d("dmaDebugDeviceUnmappedBytes"),
    dataPagesMoved,
    messages: debug?.events.slice(eventsBefore).map((e) => e.message),
  };
}

function statusSummary(s: number[] | undefined): string {
  if (s === undefined) return "n/a (real)";
  if (s.length === 0) return "-";
  const last = s[s.length - 1];
  if (last === 0) return s.length === 1 ? "Success" : `${s.length - 1} error(s), then Success`;
  const name = nvmeStatusString(last).replace(/ \(0x[0-9a-f]+\/0x[0-9a-f]+(, DNR)?\)/, "$1");
  return s.length === 1 ? name : `${name} x${s.length}`;
}

function printTable(rows: RaceRow[]): void {
  const head = [
    "variant",
    "iommu",
    "I/O",
    "mapped after UNMAP",
    "CQE res",
    "NVMe status",
    "retries",
    "IOMMU faults",
    "dev errors",
    "checker reports",
    "KASAN",
    "bytes via unmapped IOVAs",
    "data moved (pages)",
  ];
  const cells = rows.map((r) => [
    r.premap,
    r.iommu,
    `${r.dir === "read" ? "READ_FIXED" : "WRITE_FIXED"} ${r.bytes / 1024}k`,
    `${r.pagesMappedAfterUnmap} pages`,
    describeResult(r.res),
    statusSummary(r.nvmeStatuses),
    r.retries === undefined ? "n/a" : String(r.retries),
    String(r.iommuFaults),
    String(r.deviceErrors),
    String(r.dmaDebugErrors),
    String(r.kasanReports),
    String(r.unmappedBytes),
    Number.isNaN(r.dataPagesMoved) ? "n/a" : `${r.dataPagesMoved}/${r.bytes / PAGE}`,
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(w[i])).join(" | ").trimEnd();
  console.log(line(head));
  console.log(w.map((n) => "-".repeat(n)).join("-|-"));
  for (const c of cells) console.log(line(c));
}

const EXPLANATION = `
What this shows:
- v2 (as posted): UNMAP_BUFFERS returns 0 at once and unmaps under the running command: the
  pages' DMA mappings are gone and the flat PRP array the command's PRP2 points into is freed
  before the controller fetches it ("mapped after UNMAP: 0 pages"). A use after unmap.
- v2, IOMMU strict: the controller's DMA through the stale IOVAs faults in the IOMMU (DMAR
  fault); it completes the command with Data Transfer Error; the completion's
  nvme_unmap_data and the retry's nvme_premapped both dereference the freed mapping (KASAN
  column: use-after-free; the kernel would read freed slab memory, the testbed fails the
  retried request), so the application sees -EIO.
  Nothing reaches the buffer or the media, and the DMA checker reports nothing: the IOMMU
  stopped the access.
- v2, IOMMU off, 16 KiB: bus address = physical address, so nothing translates the PRPs. The
  controller's first access is the PRP list at PRP2, inside the freed array. Freed kernel
  memory stays RAM, poisoned with 0x6b and quarantined: the controller reads poison as PRP
  entries (0x6b6b6b6b6b6b6b6b, not page aligned), fails the command with PRP Offset Invalid
  and DNR (no retry), and the DMA-API checker reports the device's read of the freed
  coherent array. Had the page been reused, the controller would have read whatever the new
  owner wrote there as PRPs and moved data to or from those addresses.
- v2, IOMMU off, 8 KiB: no PRP list is read; the controller moves the data to and from the
  buffer's pages after their unmap and the command succeeds. Only the DMA-API debug checker
  notices: every byte is counted as device access to unmapped DMA addresses.
- v3: the io_uring side of PATCHv3 is v2's, so the race and its outcomes are the same.
- hardened: UNMAP_BUFFERS waits for the in-flight I/O (the pages stay mapped until its CQE),
  the I/O completes with its full length, and the unmap follows: no fault, no report.`;

function main(args: string[]): number {
  let values;
  try {
    ({ values } = parseArgs({
      args: args[0] === "--" ? args.slice(1) : args,
      strict: true,
      options: {
        backend: { type: "string", default: "sim" },
        seed: { type: "string", default: "1" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`unmap_race: ${(e as Error).message} (--help lists the flags)`);
    return 2;
  }
  if (values.help) {
    console.log(`usage: deno run examples/unmap_race.ts [flags]
  --backend=sim|real    the simulated host (default sim) or the live kernel's ring with the C
                        controller (deno run -A)
  --seed=N              seed (default 1)
  -h, --help            this text`);
    return 0;
  }
  const backend = values.backend;
  if (backend !== "sim" && backend !== "real") {
    console.error(`unmap_race: --backend: '${backend}' is not one of sim, real`);
    return 2;
  }
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed)) {
    console.error(`unmap_race: --seed: '${values.seed}' is not an integer`);
    return 2;
  }
  if (backend === "real") {
    const why = realNvmeUnavailable();
    if (why !== null) {
      console.error(`unmap_race: --backend=real: ${why}`);
      return 2;
    }
  }
  console.log(
    `backend=${backend}, seed=${seed}: a premapped I/O is queued (doorbell rung, not waited for), ` +
      `IORING_REGISTER_UNMAP_BUFFERS is called, then the CQE is waited for`,
  );
  const rows: RaceRow[] = [];
  for (const premap of ["v2", "v3", "hardened"] as const) {
    for (const iommu of ["strict", "off"] as const) {
      for (const dir of ["read", "write"] as const) {
        rows.push(runCase(backend, premap, iommu, dir, seed));
      }
    }
  }
  printTable(rows);
  console.log(
    `\nFor contrast, v2 with IOMMU off at ${SMALL_IO_BYTES / 1024} KiB: PRP2 is the second ` +
      `array entry itself, so no PRP list is read from the freed array:`,
  );
  const small = (["read", "write"] as const).map((dir) =>
    runCase(backend, "v2", "off", dir, seed, SMALL_IO_BYTES)
  );
  printTable(small);
  const all = [...rows, ...small];
  if (all.some((r) => r.messages?.length)) {
    console.log("\nDMA-API debug checker (CONFIG_DMA_API_DEBUG) reports:");
    for (const r of all) {
      const m = r.messages ?? [];
      if (m.length === 0) continue;
      const dir = r.dir === "read" ? "READ_FIXED" : "WRITE_FIXED";
      console.log(`  ${r.premap}/${r.iommu}/${dir} ${r.bytes / 1024}k: ${m.length} report(s)`);
      for (const msg of m.slice(0, 2)) console.log(`    ${msg}`);
      if (m.length > 2) console.log(`    ... ${m.length - 2} more`);
    }
  }
  console.log(EXPLANATION);
  return 0;
}

if (import.meta.main) await runMain("unmap_race", () => main(Deno.args));
