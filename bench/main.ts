/**
 * Run a command's main and turn a missing Deno permission into one line that
 * names the flag to add, instead of a stack trace.
 *
 * @module
 */

/** Whether `e` is Deno's refusal for want of a permission. */
export function isPermissionError(e: unknown): boolean {
  // deno-lint-ignore no-explicit-any
  const errors = Deno.errors as any;
  return (errors.NotCapable && e instanceof errors.NotCapable) ||
    e instanceof Deno.errors.PermissionDenied ||
    (e instanceof Error && /Requires \w+ access/.test(e.message));
}

/** The one line for a permission error: Deno's own words name the flag (`--allow-ffi`, ...). */
export function permissionLine(command: string, e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  const flag = /--allow-[a-z-]+/.exec(msg)?.[0];
  const why = msg.replace(/^.*?(Requires \w+ access)/s, "$1").split("\n")[0];
  return flag
    ? `${command}: needs ${flag} (${why}); or run it through its deno task, or with deno run -A`
    : `${command}: ${why}`;
}

/** Exit with `main`'s code; a permission error prints one line and exits 2. */
export async function runMain(
  command: string,
  main: () => number | Promise<number>,
): Promise<never> {
  try {
    Deno.exit(await main());
  } catch (e) {
    if (!isPermissionError(e)) throw e;
    console.error(permissionLine(command, e));
    Deno.exit(2);
  }
}
