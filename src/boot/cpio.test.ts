import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { writeCpio } from "./cpio.ts";

it("writes newc archives that GNU cpio lists and extracts exactly", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "cpio-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const big = Buffer.alloc(70_001, 7);
  const archive = writeCpio([
    { type: "file", path: "init", data: "#!/bin/sh\necho hi\n", mode: 0o755 },
    { type: "file", path: "usr/lib/deep/file.bin", data: big },
    { type: "file", path: "odd", data: "x" },
    { type: "symlink", path: "bin/sh", target: "busybox" },
    { type: "chardev", path: "dev/console", major: 5, minor: 1 },
    { type: "dir", path: "proc" },
  ]);
  assert.equal(archive.length % 512, 0);
  const listing = execFileSync("cpio", ["-itv", "--quiet"], { input: archive, encoding: "utf8" });
  assert.match(listing, /^crw-------.* 5,\s+1 .*dev\/console$/m);
  assert.match(listing, /^lrwxrwxrwx .*bin\/sh -> busybox$/m);
  execFileSync("cpio", ["-idm", "--quiet", "--no-absolute-filenames"], {
    input: archive,
    cwd: dir,
  });
  assert.equal(readFileSync(join(dir, "init"), "utf8"), "#!/bin/sh\necho hi\n");
  assert.equal(statSync(join(dir, "init")).mode & 0o777, 0o755);
  assert.deepEqual(readFileSync(join(dir, "usr/lib/deep/file.bin")), big);
  assert.equal(readFileSync(join(dir, "odd"), "utf8"), "x");
  assert.equal(readlinkSync(join(dir, "bin/sh")), "busybox");
  assert.ok(statSync(join(dir, "proc")).isDirectory());
});

it("refuses paths that climb out of the archive", () => {
  assert.throws(
    () => writeCpio([{ type: "file", path: "../etc/passwd", data: "" }]),
    /bad cpio path/,
  );
});
