/**
 * Ctrl-C during a real-backend run: the process stops within a second and
 * leaves no scratch file, media file or directory behind (they are unlinked
 * as soon as they are open).
 */

import assert from "node:assert/strict";
import { nvmeEmuUnavailable } from "../../ffi/nvme_emu.ts";
import { liveRingUnavailable } from "../../ffi/liburing.ts";

const why = liveRingUnavailable() ?? nvmeEmuUnavailable();
if (why !== null) console.log(`SKIP real interrupt tests: ${why}`);

const BENCH = new URL("../../bench/bench.ts", import.meta.url).pathname;

function premapEntries(dir: string): Set<string> {
  const out = new Set<string>();
  for (const e of Deno.readDirSync(dir)) if (e.name.startsWith("premap-real-")) out.add(e.name);
  return out;
}

/** Loop devices whose backing file lies under `dir`. */
function loopsOver(dir: string): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync("/sys/block")) {
      if (!e.name.startsWith("loop")) continue;
      try {
        const f = Deno.readTextFileSync(`/sys/block/${e.name}/loop/backing_file`);
        if (f.startsWith(dir)) out.push(e.name);
      } catch {
        // not attached
      }
    }
  } catch {
    // no /sys/block
  }
  return out;
}

async function interruptAfter(args: string[], tmp: string, waitMs: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", BENCH, "--backend=real", ...args],
    env: { TMPDIR: tmp },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  await new Promise((r) => setTimeout(r, waitMs));
  const t0 = performance.now();
  child.kill("SIGINT");
  const st = await child.status;
  const stoppedMs = performance.now() - t0;
  await child.stderr.cancel();
  return { st, stoppedMs };
}

for (
  const [what, args] of [
    ["the emulated namespace (media file)", ["--path=none,bvec,dma", "--bs=64k", "--qd=16"]],
    ["the live reference (--fio: a loop device as root)", ["--path=none", "--bs=64k", "--fio"]],
  ] as const
) {
  Deno.test({
    name: `real: Ctrl-C on ${what} stops within a second and leaves nothing behind`,
    ignore: why !== null,
    async fn() {
      const tmp = Deno.makeTempDirSync({ prefix: "premap-int-" });
      try {
        const { st, stoppedMs } = await interruptAfter(
          [...args, "--ios=10000000", "--iommu=lazy"],
          tmp,
          3000,
        );
        assert.ok(!st.success, "the run was interrupted, not finished");
        assert.ok(stoppedMs < 1000, `stopped ${Math.round(stoppedMs)} ms after SIGINT`);
        assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name), [], "left behind");
        assert.equal(premapEntries(tmp).size, 0);
        // No loop device left bound to a file of this run (the kernel clears it at last close).
        await new Promise((r) => setTimeout(r, 200));
        assert.deepEqual(loopsOver(tmp), [], "a loop device is still attached");
      } finally {
        Deno.removeSync(tmp, { recursive: true });
      }
    },
  });
}
