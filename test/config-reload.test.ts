// Configuration reload without a restart: in process (BootServer.reload: plans switch, the
// running parts stay, a change that needs a restart is refused), and `inetboot serve` taking
// a config file edit and SIGHUP, refusing a broken edit with its file:line problems while it
// keeps serving the previous configuration.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { BootServer, ReloadRefused } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { CLI, inetboot, tempDir } from "./helpers.ts";

const MAC = "52:54:00:12:34:e1";
const DASHED = MAC.replace(/:/g, "-");

const TOKEN = "reload-test-write-token";

const yaml = (
  dir: string,
  boot: string,
  extra = "",
): string => `http: { port: 0, address: 127.0.0.1 }
state: ${dir}/state
ui: { write: true, token: ${TOKEN} }
entries:
  hello: { kernel: ${dir}/vmlinuz, cmdline: hello-kernel }
  other: { kernel: ${dir}/vmlinuz, cmdline: other-kernel }
${extra}machines:
  - { match: { mac: "${MAC}" }, boot: ${boot} }
`;

it("BootServer.reload: new plans use the new rules and entries; a change that needs a restart is refused", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "vmlinuz"), Buffer.alloc(1000, 1));
  const srv = new BootServer(parseConfig(yaml(dir, "hello"), join(dir, "serve.yaml")));
  await srv.start();
  t.after(() => srv.stop());
  const base = `http://127.0.0.1:${srv.httpPort}`;
  const plan = async (): Promise<string> => (await fetch(`${base}/ipxe/boot?mac=${DASHED}`)).text();
  assert.match(await plan(), /hello-kernel/);
  const changes = await srv.reload(
    parseConfig(
      yaml(dir, "extra", `  extra: { kernel: ${dir}/vmlinuz, cmdline: extra-kernel }\n`),
      join(dir, "serve.yaml"),
    ),
  );
  assert.deepEqual(changes, {
    restart: [],
    added: ["extra"],
    removed: [],
    changed: ["menu"], // the built-in menu lists every entry
    rules: true,
    default: false,
    ui: false,
  });
  assert.match(await plan(), /extra-kernel/);
  assert.equal(srv.httpPort > 0, true, "the same HTTP socket serves");
  const moved = parseConfig(
    yaml(dir, "hello").replace("port: 0", "port: 18080"),
    join(dir, "serve.yaml"),
  );
  await assert.rejects(srv.reload(moved), (err: Error) => {
    assert.ok(err instanceof ReloadRefused);
    assert.match(err.message, /http changed, which needs a restart/);
    return true;
  });
  assert.match(await plan(), /extra-kernel/, "the running configuration stays");
  const events = (await (await fetch(`${base}/api/events`)).json()) as {
    stage: string;
    detail?: string;
  }[];
  const reload = events.find((e) => e.stage === "config-reload");
  assert.equal(
    reload?.detail,
    "entries added: extra; entries changed: menu; machine rules changed",
  );
});

/** Runs `inetboot serve`; resolves its base URL and a way to wait for stderr text. */
async function serve(
  t: { after(fn: () => void): void },
  config: string,
): Promise<{ base: string; waitFor(re: RegExp): Promise<string>; pid: number }> {
  const child = spawn(process.execPath, [CLI, "serve", "--config", config], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  t.after(() => child.kill("SIGKILL"));
  let err = "";
  const waiters = new Set<() => void>();
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
    for (const w of waiters) w();
  });
  const waitFor = (re: RegExp, from = 0): Promise<string> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${re} in:\n${err.slice(-3000)}`)),
        20_000,
      );
      const check = (): void => {
        const m = re.exec(err.slice(from));
        if (m) {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(m[0]);
        }
      };
      waiters.add(check);
      check();
    });
  const url = await waitFor(/HTTP +(http:\/\/127\.0\.0\.1:\d+)/);
  return {
    base: /http:\/\/\S+/.exec(url)![0],
    waitFor: (re) => waitFor(re, err.length),
    pid: child.pid!,
  };
}

it("inetboot serve reloads an edited config file and on SIGHUP; a broken edit is refused and the old one keeps serving", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "vmlinuz"), Buffer.alloc(1000, 1));
  const config = join(dir, "serve.yaml");
  writeFileSync(config, yaml(dir, "hello"));
  const s = await serve(t, config);
  const plan = async (): Promise<string> =>
    (await fetch(`${s.base}/ipxe/boot?mac=${DASHED}`)).text();
  assert.match(await plan(), /hello-kernel/);

  let reloaded = s.waitFor(/reloaded .*\(file changed\): machine rules changed/);
  writeFileSync(config, yaml(dir, "other"));
  await reloaded;
  assert.match(await plan(), /other-kernel/);

  const refused = s.waitFor(
    /refused; still serving the previous configuration:\n {2}\S*serve\.yaml:8: machines\[0\]\.boot: [^\n]*nowhere/,
  );
  writeFileSync(config, yaml(dir, "nowhere"));
  await refused;
  assert.match(await plan(), /other-kernel/, "the previous configuration serves");

  reloaded = s.waitFor(/reloaded .*\(SIGHUP\): machine rules changed/);
  writeFileSync(config, yaml(dir, "hello"));
  process.kill(s.pid, "SIGHUP");
  await reloaded;
  assert.match(await plan(), /hello-kernel/);

  // `inetboot reload` over the API: the same reload, its changes or its problems.
  writeFileSync(config, yaml(dir, "other"));
  const viaApi = await inetboot(["reload", "--server", s.base], { INETBOOT_TOKEN: TOKEN });
  assert.equal(viaApi.code, 0, viaApi.stderr);
  // The file watcher may have taken the edit first: then the API's reload changes nothing.
  assert.match(viaApi.stdout, /^reloaded: (machine rules changed|nothing changed)$/m);
  assert.match(await plan(), /other-kernel/);
  writeFileSync(config, yaml(dir, "nowhere"));
  const broken = await inetboot(["reload", "--server", s.base], { INETBOOT_TOKEN: TOKEN });
  assert.notEqual(broken.code, 0);
  assert.match(broken.stderr, /422 .*serve\.yaml:8: machines\[0\]\.boot: no entry named "nowhere"/);
});
