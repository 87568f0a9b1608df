import assert from "node:assert/strict";
import { IO_URING } from "../../ffi/liburing.ts";
import { CQE, PARAMS, SQE } from "../../sim/uapi/io_uring.ts";

const PROGRAM = new URL("../../ffi/native/build/ring_layout", import.meta.url).pathname;
let why: string | null = null;
try {
  Deno.statSync(PROGRAM);
} catch {
  why = `${PROGRAM} not built (deno task build; needs gcc and liburing-dev)`;
  console.log(`SKIP layout test: ${why}`);
}

Deno.test({
  name: "struct io_uring offsets match liburing.h offsetof()",
  ignore: why !== null,
  fn: async () => {
    const out = await new Deno.Command(PROGRAM, { stdout: "piped" }).output();
    assert.equal(out.code, 0);
    const c = JSON.parse(new TextDecoder().decode(out.stdout)) as Record<string, number>;
    const camel = (s: string) => s.replace(/_([a-z])/g, (_, x: string) => x.toUpperCase());
    let checked = 0;
    for (const [key, off] of Object.entries(c)) {
      if (key.endsWith("SIZE")) continue;
      const [a, b] = key.split(".");
      const ts = b === undefined
        ? (IO_URING as unknown as Record<string, number>)[camel(a)]
        : (IO_URING as unknown as Record<string, Record<string, number>>)[a][camel(b)];
      assert.equal(ts, off, `offset of ${key}`);
      checked++;
    }
    assert.equal(checked, 30);
    assert.equal(c.SIZE, IO_URING.SIZE);
    assert.equal(c["sqe.SIZE"], SQE.SIZE);
    assert.equal(c["cqe.SIZE"], CQE.SIZE);
    assert.equal(c["params.SIZE"], PARAMS.SIZE);
  },
});
