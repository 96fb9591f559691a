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

it("a file's next slice is read into the same buffer only when the transfer says it is idle", async (t) => {
  const dir = root(t);
  const data = Buffer.alloc(700 * 1024);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
  writeFileSync(join(dir, "big.bin"), data);
  const src = await new VirtualTree(dir).open("big.bin");
  t.after(() => src.close());
  let idle = false;
  src.reuseWhen?.(() => idle);
  const slice = 256 * 1024;
  const first = await src.read(0, 8192);
  const held = Buffer.from(first);
  // Not idle (a send still holds the view): a new buffer, the old view keeps its bytes.
  const second = await src.read(slice, 8192);
  assert.notEqual(second.buffer, first.buffer);
  assert.ok(first.equals(held), "a held view was overwritten");
  assert.ok(second.equals(data.subarray(slice, slice + 8192)));
  // Idle: the same buffer, refilled.
  idle = true;
  const third = await src.read(2 * slice, 8192);
  assert.equal(third.buffer, second.buffer);
  assert.ok(third.equals(data.subarray(2 * slice, 2 * slice + 8192)));
  // Going back (a retransmission) reads the bytes again, right ones.
  const again = await src.read(slice + 4096, 8192);
  assert.ok(again.equals(data.subarray(slice + 4096, slice + 4096 + 8192)));
  assert.equal(src.peek(slice + 4096, 100)?.length, 100);
});
