// InPlaceReads: small reads in place until reads show the disk is being waited for: a slow read
// with no disk reads meanwhile (a preempted thread) never switches them off; two slow reads with
// disk reads, or two very slow ones, within a second, do, for ten seconds.
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { IN_PLACE_MAX, InPlaceReads } from "./in-place-reads.ts";

it("reads in place; two slow reads from the disk within a second send reads to the thread pool for ten seconds", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "inetboot-inplace-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "f"), Buffer.from("0123456789"));
  const fd = openSync(join(dir, "f"), "r");
  t.after(() => closeSync(fd));

  // A clock that moves by `tick` each time it is read: a read (two readings) then seems to
  // take `tick` ms.
  let clock = 0;
  let tick = 0;
  let disk = 0;
  const reads = new InPlaceReads({ now: () => (clock += tick), diskReads: () => disk });
  const read = (ms = 0, fromDisk = true): string => {
    tick = ms;
    if (ms && fromDisk) disk += 8;
    const into = Buffer.alloc(4);
    const n = reads.read(fd, into, 8);
    tick = 0;
    return into.subarray(0, n).toString();
  };
  const allowed = (length = 4096): boolean => reads.allowed(length);

  assert.equal(read(), "89", "a read at the file's end returns what is there");
  assert.ok(allowed());
  assert.ok(!allowed(0) && !allowed(IN_PLACE_MAX + 1) && allowed(IN_PLACE_MAX), "sizes");

  for (let i = 0; i < 5; i++) read(5, false); // slow, nothing read from the disk: preempted
  assert.ok(allowed(), "slow reads without disk reads change nothing");
  clock += 2000;
  read(5); // one slow read from the disk
  assert.ok(allowed(), "one slow read alone changes nothing");
  clock += 2000;
  read(5); // slow again, but two seconds later: still one strike
  assert.ok(allowed(), "slow reads far apart change nothing");
  read(5); // the second within a second: the disk is being waited for
  assert.ok(!allowed(), "two slow reads within a second: through the thread pool");
  clock += 9_000;
  assert.ok(!allowed(), "for ten seconds");
  clock += 1_100;
  assert.ok(allowed(), "then in place again");

  // Reads of 10 ms or more wait for storage whatever the block count says (NFS, FUSE).
  clock += 5000;
  read(12, false);
  read(12, false);
  assert.ok(!allowed(), "two very slow reads within a second, no block input");
});
