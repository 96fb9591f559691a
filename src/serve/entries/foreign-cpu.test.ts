import assert from "node:assert/strict";
import { it } from "node:test";
import { BUNDLE_CPU, bundleRunsOn } from "../../boot/nbd-client-bundle.ts";
import type { ImageEntry } from "./image.ts";
import { imageKind } from "./image.ts";
import type { PlanContext } from "./kind.ts";

it("the NBD overlay carries this server's nbd-client: a machine of another CPU is told why it cannot boot", async () => {
  assert.equal(bundleRunsOn(undefined), true, "an unknown CPU is assumed like the server's");
  assert.equal(bundleRunsOn(BUNDLE_CPU), true);
  const other = BUNDLE_CPU === "arm64" ? "x86_64" : "arm64";
  assert.equal(bundleRunsOn(other), false);
  // iPXE's BIOS build says i386 on x86_64 machines: the family is what counts.
  if (BUNDLE_CPU === "x86_64") assert.equal(bundleRunsOn("i386"), true);
  const entry = {
    ...{ name: "deb", title: "Debian", once: false, kind: "image", kernel: { path: "/k" } },
    ...{ initrd: [], cmdline: "", disk: "ephemeral", nbdOverlay: true },
    image: { source: "deb", stores: ["/s"], trust: [], insecure: true, recheckSeconds: 60 },
  } as ImageEntry;
  let prepared = 0;
  const ctx = {
    ...{ base: "http://s", query: "", mac: "52:54:00:00:00:01", ip: "10.0.0.5", cpu: other },
    images: {
      prepare: () => Promise.resolve(`x${++prepared}`),
      staysOn: () => null,
    },
    nbd: { host: "s", port: 10809 },
    record: () => undefined,
  } as unknown as PlanContext;
  const plan = await imageKind.plan(entry, ctx);
  assert.equal(plan.kind, "error");
  assert.match(
    plan.kind === "error" ? plan.message : "",
    new RegExp(`${BUNDLE_CPU} nbd-client .* ${other} machine`),
  );
  assert.equal(prepared, 0, "no export was made for a plan that cannot boot");
  const same = await imageKind.plan(entry, { ...ctx, cpu: BUNDLE_CPU });
  assert.equal(same.kind, "kernel");
  assert.equal(prepared, 1);
});
