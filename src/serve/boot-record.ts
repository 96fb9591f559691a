// Recording a boot stage: into the event log (machines, timelines, live pages), a counter by
// stage and firmware for /metrics, and a structured log line (DHCP's chatter excepted).
import type { Logger } from "../lib/log.ts";
import type { EventInput, EventLog } from "./events.ts";
import type { Metrics } from "./metrics.ts";

export type Record = (input: EventInput, facts?: Parameters<EventLog["record"]>[1]) => void;

export function bootRecorder(events: EventLog, metrics: Metrics, log: Logger): Record {
  return (input, facts) => {
    const e = events.record(input, facts);
    const m = e.mac ? events.machine(e.mac) : undefined;
    // DHCP's view of the firmware when the machine came through our DHCP; else iPXE's report.
    const platform = m?.ipxe?.platform;
    const fw =
      m?.firmware?.kind ??
      (platform === "pcbios" ? "bios" : platform === "efi" ? "uefi" : "unknown");
    metrics.inc("inetboot_boot_events_total", "Boot stages reached, by stage and firmware", {
      stage: e.stage,
      firmware: m?.ipxe || m?.firmware?.ipxe ? `${fw}+ipxe` : fw,
    });
    if (/^(dhcp|proxy|pxe)/.test(input.stage)) return;
    const { stage, mac, ip, file, entry, rule, bytes, detail } = e;
    log.info({ event: stage, mac, ip, file, entry, rule, bytes, detail }, stage);
  };
}
