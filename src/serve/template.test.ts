import assert from "node:assert/strict";
import { it } from "node:test";
import { parseTemplate, renderTemplate } from "./template.ts";
import type { TemplateFacts } from "./template.ts";

const FACTS: TemplateFacts = {
  values: {
    mac: "52:54:00:12:34:56",
    mac_dashes: "52-54-00-12-34-56",
    mac_plain: "525400123456",
    ip: "10.0.0.5",
    hostname: 'it\'s "odd"\nname',
    entry: "cloud",
    release: "cloud@3",
    instance_id: "i-abc",
    server: "http://10.0.0.1:8080",
  },
  labels: { rack: "r7" },
};

it("templates fill names, labels and literals, escaped for YAML, JSON, shell and URLs", () => {
  const { template, errors } = parseTemplate(
    'a {{mac}} {{ label.rack }} {{ label.none }} {{ "{{" }}\ny: {{ hostname | yaml }}\nj: {{ hostname | json }}\ns: {{ hostname | shell }}\nu: {{ hostname | url }}\n',
    "t.cfg",
  );
  assert.deepEqual(errors, []);
  const out = renderTemplate(template!, FACTS);
  assert.equal(
    out,
    `a 52:54:00:12:34:56 r7  {{\ny: "it's \\"odd\\"\\nname"\nj: "it's \\"odd\\"\\nname"\ns: 'it'\\''s "odd"\nname'\nu: it's%20%22odd%22%0Aname\n`,
  );
});

it("template mistakes are file:line errors: unknown names and filters, unclosed places, logic", () => {
  const { template, errors } = parseTemplate(
    "ok {{ mac }}\n{{ nope }}\n{{ mac | upper }}\n{{ mac\n}}\n{{ if mac }}\n",
    "/etc/inetboot/user-data",
  );
  assert.equal(template, undefined);
  assert.deepEqual(errors, [
    '/etc/inetboot/user-data:2: unknown name "nope" (known: mac, mac_dashes, mac_plain, ip, hostname, entry, release, instance_id, server, label.KEY)',
    '/etc/inetboot/user-data:3: unknown filter "upper" (known: yaml, json, shell, url)',
    '/etc/inetboot/user-data:4: "{{" is not closed by "}}" on its line',
  ]);
  const logic = parseTemplate("{{ if mac }}", "f");
  assert.match(logic.errors[0], /^f:1: "\{\{ if mac \}\}" is not a name/);
  assert.match(parseTemplate("x".repeat(300_000), "big").errors[0], /^big: over/);
});
