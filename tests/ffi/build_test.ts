import assert from "node:assert/strict";
import { gccArgs, hasMain, targetsFor } from "../../ffi/native/build.ts";

Deno.test("build: programs have main, everything else is a lib<name>.so; -asan variants", () => {
  assert.equal(hasMain("int main(int argc, char **argv)\n{"), true);
  assert.equal(hasMain("static int x;\nint\tmain (void) {"), true);
  assert.equal(hasMain("int nvme_main_loop(void);\n/* main( */"), false);
  const prog = targetsFor("ring_bench.c", "int main(void) { return 0; }", "/b/");
  assert.deepEqual(prog.map((t) => [t.out, t.kind, t.asan]), [
    ["/b/ring_bench", "program", false],
    ["/b/ring_bench-asan", "program", true],
  ]);
  const lib = targetsFor("nvme_emu.c", "int nvme_emu_start(void) { return 0; }", "/b/");
  assert.deepEqual(lib.map((t) => [t.out, t.kind, t.asan]), [
    ["/b/libnvme_emu.so", "library", false],
    ["/b/libnvme_emu-asan.so", "library", true],
  ]);
  const a = gccArgs(lib[1]);
  for (const f of ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared"]) {
    assert.ok(a.includes(f), f);
  }
  assert.ok(a.includes("-fsanitize=address,undefined") && a.includes("-fno-omit-frame-pointer"));
  assert.ok(!gccArgs(prog[0]).some((f) => f.startsWith("-fsanitize")));
});
