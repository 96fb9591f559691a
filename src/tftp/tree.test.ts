import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import type { TestContext } from "node:test";
import { ErrorCode } from "./protocol.ts";
import { TftpError, VirtualTree } from "./tree.ts";

function root(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "tftp-tree-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "root", "sub"), { recursive: true });
  writeFileSync(join(dir, "root", "sub", "ok.bin"), "inside");
  writeFileSync(join(dir, "outside.txt"), "outside the root");
  return join(dir, "root");
}

async function refused(tree: VirtualTree, path: string): Promise<TftpError> {
  const err = await tree.open(path).then(
    () => assert.fail(`${path} was served`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof TftpError, String(err));
  return err;
}

it("symlinks out of the root are 'file not found' (the file, or a folder on the way)", async (t) => {
  const dir = root(t);
  symlinkSync("/etc/passwd", join(dir, "passwd"));
  symlinkSync("/etc", join(dir, "etc"));
  symlinkSync("../outside.txt", join(dir, "sub", "up.txt"));
  const tree = new VirtualTree(dir);
  for (const path of ["passwd", "etc/passwd", "/etc/hostname", "sub/up.txt"]) {
    const err = await refused(tree, path);
    assert.equal(err.code, ErrorCode.FILE_NOT_FOUND, path);
    assert.match(err.message, /^File not found: /, "reveals nothing");
  }
});

it("folders and devices are 'file not found'; '..' is an access violation", async (t) => {
  const dir = root(t);
  symlinkSync("/dev/zero", join(dir, "zero"));
  mkdirSync(join(dir, "dev"));
  const tree = new VirtualTree(dir);
  assert.equal((await refused(tree, "sub")).code, ErrorCode.FILE_NOT_FOUND);
  assert.equal((await refused(tree, "zero")).code, ErrorCode.FILE_NOT_FOUND);
  assert.equal((await refused(tree, "nope")).code, ErrorCode.FILE_NOT_FOUND);
  assert.equal((await refused(tree, "x".repeat(5000))).code, ErrorCode.FILE_NOT_FOUND);
  assert.equal((await refused(tree, "../outside.txt")).code, ErrorCode.ACCESS_VIOLATION);
});

it("symlinks that stay inside the root are served", async (t) => {
  const dir = root(t);
  symlinkSync("sub/ok.bin", join(dir, "alias.bin"));
  symlinkSync("sub", join(dir, "linked"));
  const tree = new VirtualTree(dir);
  for (const path of ["sub/ok.bin", "alias.bin", "linked/ok.bin", "\\linked\\ok.bin"]) {
    const src = await tree.open(path);
    assert.equal((await src.read(0, 100)).toString(), "inside", path);
    await src.close();
  }
});
