/**
 * Where a premapped I/O's PRPs come from. Registers a 4 MiB buffer, premaps
 * it (its flat PRP array has 1024 entries, 8 KiB: two controller pages), and
 * issues reads at chosen offsets, printing the command the driver wrote:
 *
 * - 4k at 0: PRP1 only;
 * - 8k at 0: PRP1 + PRP2 = the next array entry;
 * - 64k at 0: PRP2 points straight into the flat array (nothing allocated);
 * - 64k ending past entry 511: the entries cross a page of the array, so the
 *   driver copies them into a PRP list page from the pool.
 *
 * Each PRP is checked against the flat array, and each read's bytes against
 * what was written.
 *
 *   deno run examples/prp_walk.ts [--iommu=strict] [--backend=sim]
 *
 * @module
 */

import { runMain } from "../bench/main.ts";
import { parseArgs } from "node:util";
import { openSimTestbed } from "../sim/testbed.ts";
import type { NvmeDmaMapping, NvmeSubmitEvent } from "../sim/nvme/pci.ts";
import { IOMMU_MODES, type IommuMode } from "../sim/dma/types.ts";
import { IOSQE, O } from "../sim/uapi/io_uring.ts";
import { describeResult } from "../sim/uapi/errno.ts";

const hex = (x: bigint) => `0x${x.toString(16)}`;

function main(args: string[]): number {
  let values;
  try {
    ({ values } = parseArgs({
      args: args[0] === "--" ? args.slice(1) : args,
      strict: true,
      options: {
        iommu: { type: "string", default: "strict" },
        backend: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`prp_walk: ${(e as Error).message} (--help lists the flags)`);
    return 2;
  }
  if (values.help) {
    console.log(`usage: deno run examples/prp_walk.ts [flags]
  --iommu=${IOMMU_MODES.join("|")}  DMA configuration of the simulated host (default strict)
  --backend=sim      the only backend it runs on: the PRP walk needs the simulated NVMe driver
  -h, --help         this text`);
    return 0;
  }
  if (values.backend !== undefined && values.backend !== "sim") {
    console.error(
      `prp_walk: --backend=${values.backend}: the PRP walk needs the simulated NVMe driver ` +
        `(the live kernel has no premap and this machine has no NVMe); use --backend=sim`,
    );
    return 2;
  }
  const iommu = values.iommu as IommuMode;
  if (!IOMMU_MODES.includes(iommu)) {
    console.error(`prp_walk: --iommu: '${values.iommu}' is not one of ${IOMMU_MODES.join(", ")}`);
    return 2;
  }

  using tb = openSimTestbed({ iommu, seed: 1 });
  const fd = tb.open(tb.nvmeDevice, O.RDWR | O.DIRECT);
  using ring = tb.ring({ entries: 8 });
  const BUF = 4 << 20;
  using buf = tb.allocBuffer(BUF);
  const check = (what: string, r: { ok: boolean; res: number }) => {
    if (!r.ok) throw new Error(`${what}: ${describeResult(r.res)}`);
  };
  check("register files", ring.registerFiles([fd]));
  check("register buffers", ring.registerBuffers([{ addr: buf.addr, len: BUF }]));
  check("map buffers", ring.mapBuffers(0, 0, 1));

  // Find the tag the driver made, to compare PRPs with its flat array.
  let tag: NvmeDmaMapping | undefined;
  let last: NvmeSubmitEvent | undefined;
  tb.host.driver.onSubmit = (ev) => {
    if (ev.qid === 0) return;
    last = ev; // the request is recycled after completion: take what we need now
    tag ??= ev.rq?.bios[0]?.dmaTag as NvmeDmaMapping | undefined;
  };

  for (let i = 0; i < BUF; i++) buf.bytes[i] = (i * 7 + (i >>> 12)) & 0xff;
  ring.writeFixed(0, buf.addr, BUF, 0n, 0, { flags: IOSQE.FIXED_FILE });
  const [w] = ring.submitAndReap(1);
  if (w.res !== BUF) throw new Error(`write: ${describeResult(w.res)}`);
  console.log(
    `premapped a ${BUF >> 20} MiB registered buffer (iommu=${iommu}); wrote it to ${tb.nvmeDevice}`,
  );

  const cases: [string, number, number][] = [
    ["4k at buffer offset 0", 0, 4096],
    ["8k at buffer offset 0", 0, 8192],
    ["64k at buffer offset 0", 0, 65536],
    ["64k at buffer offset 500 pages (entries 501..515 cross the array's page)", 500 * 4096, 65536],
  ];
  let failed = false;
  for (const [label, off, len] of cases) {
    buf.bytes.fill(0, off, off + len);
    ring.readFixed(0, buf.addr + BigInt(off), len, BigInt(off), 0, { flags: IOSQE.FIXED_FILE });
    const [c] = ring.submitAndReap(1);
    const ev = last!;
    let ok = c.res === len;
    for (let i = off; i < off + len && ok; i++) ok = buf.bytes[i] === ((i * 7 + (i >>> 12)) & 0xff);
    console.log(`\n${label}: res ${describeResult(c.res)}, data ${ok ? "ok" : "WRONG"}`);
    console.log(`  path ${ev.path}  PRP1 ${hex(ev.cmd.prp1)}  PRP2 ${hex(ev.cmd.prp2)}`);
    if (tag) {
      const index = off >> 12;
      const n = len >> 12;
      console.log(
        `  flat array entry[${index}] = ${hex(tag.entry(index))}` +
          (n > 1 ? `, entry[${index + 1}] = ${hex(tag.entry(index + 1))}` : ""),
      );
      if (n > 2) {
        const inArray = tag.prps.dma + BigInt((index + 1) * 8);
        const where = ev.cmd.prp2 === inArray
          ? "PRP2 points into the flat array at entry " + (index + 1) + " (no allocation)"
          : `PRP2 is a PRP list from the pool (${ev.listBlocks.length} block(s))`;
        console.log(`  ${where}`);
        for (const [bi, b] of ev.listBlocks.entries()) {
          const v = new DataView(b.cpu.buffer, b.cpu.byteOffset, b.cpu.byteLength);
          const k = Math.min(b.cpu.byteLength / 8, n - 1);
          const es = Array.from(
            { length: Math.min(k, 4) },
            (_, j) => hex(v.getBigUint64(j * 8, true)),
          );
          console.log(
            `  list block ${bi} at ${hex(b.dma)}: ${es.join(", ")}${k > 4 ? ", ..." : ""}`,
          );
        }
      }
    }
    if (!ok) failed = true;
  }
  return failed ? 1 : 0;
}

if (import.meta.main) await runMain("prp_walk", () => main(Deno.args));
