/**
 * The proposal's uAPI, call by call: each IORING_REGISTER_MAP_BUFFERS /
 * UNMAP_BUFFERS misuse and what it returns, then a mapping undone by
 * unregistering its buffer. On `--backend=real` every call answers -EINVAL,
 * what the live kernel returns for a register opcode it does not have.
 *
 *   deno run examples/premap_rules.ts                 # sim
 *   deno run --allow-all examples/premap_rules.ts --backend=real
 *
 * @module
 */

import { runMain } from "../bench/main.ts";
import { parseArgs } from "node:util";
import { type CallResult, IOSQE, O, openTestbed, type Ring, type Testbed } from "../mod.ts";
import { describeResult } from "../sim/uapi/errno.ts";
import { encodeMapBuffers, IORING_REGISTER } from "../sim/uapi/io_uring.ts";

function show(what: string, r: CallResult): void {
  console.log(`  ${what.padEnd(58)} -> ${describeResult(r.res)}`);
}

function walk(tb: Testbed, ring: Ring, nvme: string | undefined): void {
  using a = tb.allocBuffer(8192);
  using b = tb.allocBuffer(8192);
  const direct = nvme ? tb.open(nvme, O.RDWR | O.DIRECT) : -1;
  const buffered = tb.open(tb.tempPath("plain.dat"), O.RDWR | O.CREAT, 0o644);
  const regularDirect = tb.open(tb.tempPath("direct.dat"), O.RDWR | O.CREAT | O.DIRECT, 0o644);
  const slot0 = nvme ? "nvme O_DIRECT" : "-1 (no NVMe on this backend)";
  show(
    `register files [${slot0}, plain file, O_DIRECT file, -1]`,
    ring.registerFiles([direct, buffered, regularDirect, -1]),
  );
  if (tb.backend === "real") {
    console.log(
      "  (real backend: MAP/UNMAP_BUFFERS are answered -EINVAL by the testbed itself, as the live\n" +
        "   kernel does for an opcode it lacks; they are never sent to the kernel)",
    );
  }
  show(
    "register buffers [a, b]",
    ring.registerBuffers([{ addr: a.addr, len: 8192 }, { addr: b.addr, len: 8192 }]),
  );
  console.log("dispatch checks (before CAP_SYS_ADMIN, as the proposal's __io_uring_register):");
  const raw = (opcode: number, arg: Uint8Array, nr: number) => ({
    ...wrap(ring.raw.register(opcode, arg, nr)),
  });
  const MAP = IORING_REGISTER.REGISTER_MAP_BUFFERS;
  show("NULL argument", raw(MAP, new Uint8Array(0), 1));
  show("nr_args = 2", raw(MAP, encodeMapBuffers(0, 0, 1), 2));
  console.log("then CAP_SYS_ADMIN (-EPERM), then the argument, in the order of the proposal:");
  show("flags = 1", ring.mapBuffers(0, 0, 1, 1));
  show("fd (fixed index) 9 >= nr_user_files 4", ring.mapBuffers(9, 0, 1));
  show("buf_start -1", ring.mapBuffers(0, -1, 1));
  show("buf_start 2 >= nr_user_bufs 2", ring.mapBuffers(0, 2, 3));
  show("empty range [1, 1)", ring.mapBuffers(0, 1, 1));
  console.log("file checks:");
  show("slot 3 is empty", ring.mapBuffers(3, 0, 1));
  show("slot 1: regular file without O_DIRECT", ring.mapBuffers(1, 0, 1));
  show("slot 2: regular file with O_DIRECT (no dma_map)", ring.mapBuffers(2, 0, 1));
  console.log("mapping:");
  show("slot 0, buffers [0, 99): buf_end clamped to 2", ring.mapBuffers(0, 0, 99));
  show("map buffer 1 again", ring.mapBuffers(0, 1, 2));
  show("unregister buffers (undoes the mappings)", ring.unregisterBuffers());
  show("register buffers [a] again", ring.registerBuffers([{ addr: a.addr, len: 8192 }]));
  show("map it again (the old mapping is gone)", ring.mapBuffers(0, 0, 1));
  if (direct >= 0) {
    a.bytes.fill(0x5a);
    ring.writeFixed(0, a.addr, 8192, 0n, 0, { flags: IOSQE.FIXED_FILE, userData: 1n });
    const [c] = ring.submitAndReap(1);
    console.log(
      `  WRITE_FIXED 8k through the premapped buffer`.padEnd(60) + ` -> ${describeResult(c.res)}`,
    );
  }
  show("unmap naming slot 3 (empty): fd is only range-checked", ring.unmapBuffers(3, 0, 1));
  show("map it again (the unmap undid it)", ring.mapBuffers(0, 0, 1));
  show("unmap", ring.unmapBuffers(0, 0, 1));
}

function wrap(res: number): CallResult {
  return { res, ok: res >= 0, errno: null };
}

function main(args: string[]): number {
  let values;
  try {
    ({ values } = parseArgs({
      args: args[0] === "--" ? args.slice(1) : args,
      strict: true,
      options: {
        backend: { type: "string", default: "sim" },
        "no-cap-sys-admin": { type: "boolean", default: false },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`premap_rules: ${(e as Error).message} (--help lists the flags)`);
    return 2;
  }
  if (values.help) {
    console.log(`usage: deno run examples/premap_rules.ts [flags]
  --backend=sim|real    the simulated host (default sim) or the live kernel's ring (deno run -A)
  --no-cap-sys-admin    run without CAP_SYS_ADMIN: MAP/UNMAP_BUFFERS answer -EPERM (default: with it)
  -h, --help            this text`);
    return 0;
  }
  if (values.backend !== "sim" && values.backend !== "real") {
    console.error(`premap_rules: --backend: '${values.backend}' is not one of sim, real`);
    return 2;
  }
  using tb = openTestbed({ backend: values.backend, capSysAdmin: !values["no-cap-sys-admin"] });
  using ring = tb.ring({ entries: 8 });
  console.log(`backend=${tb.backend}, CAP_SYS_ADMIN ${values["no-cap-sys-admin"] ? "off" : "on"}`);
  walk(tb, ring, tb.nvmeDevice);
  return 0;
}

if (import.meta.main) await runMain("premap_rules", () => main(Deno.args));
