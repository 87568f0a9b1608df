/**
 * The C controller's own selftest (ffi/native/nvme_emu_selftest.c), plain and
 * under ASan + UBSan: PRP and SGL I/O with and without an IOMMU, a fault that
 * touches nothing, file media direct and bounced and reopened, the device
 * thread at 32 outstanding reads, the allocation ledger back to 0.
 */
import assert from "node:assert/strict";

const BUILD = new URL("../../ffi/native/build/", import.meta.url).pathname;
const variants = ["nvme_emu_selftest", "nvme_emu_selftest-asan"];
let why: string | null = null;
for (const v of variants) {
  try {
    Deno.statSync(BUILD + v);
  } catch {
    why ??= `${BUILD}${v} not built (deno task build; needs gcc and liburing-dev)`;
  }
}
if (why !== null) console.log(`SKIP nvme_emu selftest: ${why}`);

for (const v of variants) {
  Deno.test({
    name: `${v}: every check passes, clean exit${
      v.endsWith("asan") ? ", no sanitizer report" : ""
    }`,
    ignore: why !== null,
    fn: async () => {
      const dir = Deno.makeTempDirSync({ dir: "/var/tmp", prefix: "premap-selftest-" });
      try {
        const out = await new Deno.Command(BUILD + v, {
          args: [dir],
          env: {
            ASAN_OPTIONS: "halt_on_error=1:detect_leaks=1",
            UBSAN_OPTIONS: "halt_on_error=1:print_stacktrace=1",
          },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const stdout = new TextDecoder().decode(out.stdout);
        const stderr = new TextDecoder().decode(out.stderr);
        assert.equal(out.code, 0, stdout + stderr);
        assert.match(stdout, /selftest: all ok/);
        assert.doesNotMatch(stdout + stderr, /FAIL|AddressSanitizer|runtime error/);
        assert.match(stdout, /file .*: ok \(O_DIRECT yes, media_direct [1-9]/);
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    },
  });
}
