/**
 * README's excerpts are what the commands README shows print now
 * (`deno task readme` rewrites them), and the excerpt machinery itself.
 */

import assert from "node:assert/strict";
import { current, EXCERPTS, generate, replace } from "../../bench/readme_excerpts.ts";

const README = Deno.readTextFileSync(new URL("../../README.md", import.meta.url));

for (const e of EXCERPTS) {
  Deno.test(`README excerpt '${e.name}' is what \`${e.shown}\` prints (deno task readme)`, async () => {
    assert.ok(README.includes(e.shown), `README does not show the command ${e.shown}`);
    const have = current(README, e.name);
    assert.ok(have !== null, `README has no excerpt ${e.name}`);
    assert.equal(have, await generate(e), `stale excerpt ${e.name}: run deno task readme`);
  });
}

Deno.test("README excerpts: replace() rewrites one block, current() reads it back", () => {
  const doc = "a\n<!-- excerpt:x -->\n\n```\nold\n```\n\n<!-- /excerpt -->\nb\n";
  const next = replace(doc, "x", "new 1\nnew 2");
  assert.equal(current(next, "x"), "new 1\nnew 2");
  assert.ok(next.startsWith("a\n") && next.endsWith("<!-- /excerpt -->\nb\n"));
  assert.equal(current(doc, "y"), null);
  assert.throws(() => replace(doc, "y", "z"), /no <!-- excerpt:y -->/);
});
