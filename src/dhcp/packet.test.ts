import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  allDhcpFixtures as allFixtures,
  dhcpFixture as fixture,
} from "../../test/dhcp-fixtures.ts";
import { classifyFirmware, firmwareKey } from "./firmware.ts";
import {
  clientUuid,
  decodePacket,
  DhcpDecodeError,
  encodePacket,
  macOf,
  MessageType,
  messageType,
  Opt,
  optIp,
  optString,
  optU32,
  requestedParameters,
  subOptions,
  userClasses,
} from "./packet.ts";
import type { DhcpPacket } from "./packet.ts";

describe("DHCP codec, golden packets captured from real clients and servers", () => {
  it("re-encodes every captured packet byte for byte", () => {
    const all = allFixtures();
    assert.ok(all.length >= 9);
    for (const [name, buf] of all) assert.deepEqual(encodePacket(decodePacket(buf)), buf, name);
  });

  it("reads dhclient's DISCOVER: an OS client, not boot firmware", () => {
    const p = decodePacket(fixture("dhclient-discover"));
    assert.equal(messageType(p), MessageType.DISCOVER);
    assert.equal(macOf(p), "7a:4b:f2:77:4e:a9");
    assert.ok(requestedParameters(p).includes(Opt.ROUTER));
    const fw = classifyFirmware(p);
    assert.equal(fw.netboot, false);
  });

  it("reads dnsmasq's OFFER: address, server, lease, mask, router", () => {
    const p = decodePacket(fixture("dnsmasq-offer"));
    assert.equal(messageType(p), MessageType.OFFER);
    assert.equal(p.yiaddr, "10.99.0.56");
    assert.equal(optIp(p, Opt.SERVER_ID), "10.99.0.2");
    assert.equal(optU32(p, Opt.LEASE_TIME), 3600);
    assert.equal(optIp(p, Opt.SUBNET_MASK), "255.255.255.0");
  });

  it("recognises QEMU's iPXE ROM (BIOS) by user class and option 175", () => {
    const p = decodePacket(fixture("ipxe-bios-discover"));
    const fw = classifyFirmware(p);
    assert.deepEqual(
      [fw.arch, fw.kind, fw.cpu, fw.pxe, fw.ipxe, fw.http],
      [0, "bios", "i386", true, true, false],
    );
    assert.deepEqual(userClasses(p), ["iPXE"]);
    assert.ok(subOptions(p.options.get(Opt.IPXE_ENCAP)).size > 0);
    assert.equal(firmwareKey(fw), "bios");
    assert.equal(clientUuid(p), "00000000-0000-0000-0000-000000000000");
  });

  it("recognises OVMF's PXE client as x64 UEFI without iPXE", () => {
    const fw = classifyFirmware(decodePacket(fixture("ovmf-pxe-discover")));
    assert.deepEqual(
      [fw.arch, fw.kind, fw.cpu, fw.pxe, fw.ipxe],
      [7, "uefi", "x86_64", true, false],
    );
    assert.equal(firmwareKey(fw), "uefi-x86_64");
    assert.match(fw.vendorClass ?? "", /^PXEClient:Arch:00007/);
  });

  it("recognises ipxe.efi after the chainload, so it gets the script, not ipxe.efi again", () => {
    const fw = classifyFirmware(decodePacket(fixture("ipxe-efi-discover")));
    assert.deepEqual([fw.arch, fw.kind, fw.ipxe], [7, "uefi", true]);
  });

  it("reads inetboot's proxy offers: no address, boot file, PXEClient and discovery control", () => {
    const pxe = decodePacket(fixture("inetboot-proxy-offer-pxe"));
    assert.equal(pxe.yiaddr, "0.0.0.0");
    assert.equal(pxe.file, "ipxe.efi");
    assert.equal(optString(pxe, Opt.VENDOR_CLASS), "PXEClient");
    assert.deepEqual(
      [...subOptions(pxe.options.get(Opt.VENDOR_SPECIFIC))],
      [[6, Buffer.from([8])]],
    );
    const ipxe = decodePacket(fixture("inetboot-proxy-offer-ipxe"));
    assert.equal(optString(ipxe, Opt.BOOTFILE), "http://10.99.0.1:8080/boot.ipxe");
  });

  it("classifies UEFI HTTP Boot by option 60 and arch codes 16 and 19", () => {
    const base = decodePacket(fixture("ovmf-pxe-discover"));
    const http = (vci: string, arch: number): ReturnType<typeof classifyFirmware> => {
      const p: DhcpPacket = { ...base, options: new Map(base.options) };
      p.options.set(Opt.VENDOR_CLASS, Buffer.from(vci));
      p.options.set(Opt.CLIENT_ARCH, Buffer.from([0, arch]));
      return classifyFirmware(p);
    };
    const x64 = http("HTTPClient:Arch:00016:UNDI:003001", 16);
    assert.deepEqual([x64.http, x64.kind, x64.cpu], [true, "uefi", "x86_64"]);
    const arm = http("HTTPClient:Arch:00019", 19);
    assert.deepEqual([arm.http, arm.cpu, firmwareKey(arm)], [true, "arm64", "uefi-arm64"]);
  });
});

describe("DHCP codec details", () => {
  const base = (): DhcpPacket => decodePacket(fixture("udhcpc-discover"));

  it("splits options longer than 255 bytes and joins them back (RFC 3396)", () => {
    const p = base();
    const long = Buffer.alloc(700, 0x41);
    p.options.set(Opt.ROOT_PATH, long);
    const q = decodePacket(encodePacket(p));
    assert.deepEqual(q.options.get(Opt.ROOT_PATH), long);
  });

  it("reads options carried in the file and sname fields (option 52 overload)", () => {
    const buf = encodePacket(base());
    const file = Buffer.from([Opt.TFTP_SERVER, 4, ...Buffer.from("node"), 255]);
    file.copy(buf, 108);
    const sname = Buffer.from([Opt.DOMAIN_NAME, 3, ...Buffer.from("lab"), 255]);
    sname.copy(buf, 44);
    // Insert option 52 = 3 (both fields) before END.
    let end = buf.length - 1;
    while (buf[end] === 0) end--; // END is the last non-pad byte
    const withOverload = Buffer.concat([
      buf.subarray(0, end),
      Buffer.from([52, 1, 3]),
      buf.subarray(end),
    ]);
    const p = decodePacket(withOverload);
    assert.equal(optString(p, Opt.TFTP_SERVER), "node");
    assert.equal(optString(p, Opt.DOMAIN_NAME), "lab");
    assert.equal(p.file, "");
  });

  it("rejects short, cookieless and truncated packets with a reason", () => {
    assert.throws(() => decodePacket(Buffer.alloc(100)), DhcpDecodeError);
    const noCookie = encodePacket(base());
    noCookie.writeUInt32BE(0, 236);
    assert.throws(() => decodePacket(noCookie), /magic cookie/);
    const truncated = Buffer.concat([
      encodePacket(base()).subarray(0, 240),
      Buffer.from([12, 50, 65]),
    ]);
    assert.throws(() => decodePacket(truncated), /claims 50 bytes/);
  });

  it("keeps unknown options", () => {
    const p = base();
    p.options.set(224, Buffer.from("site-specific"));
    assert.deepEqual(decodePacket(encodePacket(p)).options.get(224), Buffer.from("site-specific"));
  });

  it("never throws anything but DhcpDecodeError on random or mutated input (fuzz)", () => {
    const seeds = allFixtures().map(([, b]) => b);
    const check = (buf: Buffer): void => {
      try {
        const p = decodePacket(buf);
        // Everything read from a decoded packet must be safe too.
        classifyFirmware(p);
        macOf(p);
        clientUuid(p);
        requestedParameters(p);
      } catch (err) {
        if (!(err instanceof DhcpDecodeError)) throw err;
      }
    };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1500 }), (a) => check(Buffer.from(a))),
      {
        numRuns: 3000,
      },
    );
    const mutated = fc.tuple(
      fc.constantFrom(...seeds),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 20,
      }),
      fc.nat(),
    );
    fc.assert(
      fc.property(mutated, ([seed, flips, cut]) => {
        const buf = Buffer.from(seed);
        for (const [pos, byte] of flips) buf[240 + (pos % Math.max(1, buf.length - 240))] = byte;
        check(buf.subarray(0, Math.max(236, buf.length - (cut % 64))));
      }),
      { numRuns: 5000 },
    );
  });
});
