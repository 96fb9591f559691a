// An entry's per-machine files: a cloud-init NoCloud datasource (`cloud-init:` with user-data,
// meta-data, network-config, vendor-data templates) and any other file (`files: { NAME:
// TEMPLATE }`, linked from the command line as {file-url:NAME}: a preseed, an autoinstall, a
// kickstart). Template files are read and parsed with the configuration, so their mistakes
// are `file:line` problems at --check, never a half-rendered file served to a machine.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseTemplate } from "../template.ts";
import type { Template } from "../template.ts";
import type { Checker, Path } from "./checker.ts";

export const CLOUD_INIT_FILES = [
  "user-data",
  "meta-data",
  "network-config",
  "vendor-data",
] as const;
export type CloudInitFile = (typeof CLOUD_INIT_FILES)[number];

export interface MachineFiles {
  /** Present when the entry serves a NoCloud datasource (missing files get defaults). */
  cloudInit?: Partial<Record<CloudInitFile, Template>>;
  /** NAME → template. */
  files: Map<string, Template>;
}

const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** {file-url:NAME} in a command line. */
export const FILE_URL = /\{file-url:([^}\s]*)\}/g;

function template(c: Checker, v: unknown, path: Path, baseDir: string): Template | undefined {
  const file = c.string(v, path, "a template file (a path)");
  if (file === undefined) return undefined;
  const full = resolve(baseDir, file);
  let text: string;
  try {
    text = readFileSync(full, "utf8");
  } catch (err) {
    c.error(
      path,
      `cannot read template ${full}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
    return undefined;
  }
  const { template, errors } = parseTemplate(text, full);
  for (const e of errors) c.error(path, e);
  return template;
}

/** The entry's `cloud-init:` and `files:`, checked against its command line's {file-url:…}. */
export function parseMachineFiles(
  c: Checker,
  o: Record<string, unknown>,
  path: Path,
  baseDir: string,
): MachineFiles | undefined {
  const files = new Map<string, Template>();
  if (o.files !== undefined) {
    const fo = c.object(o.files, [...path, "files"], Object.keys(o.files ?? {})) ?? {};
    for (const [name, v] of Object.entries(fo)) {
      if (!FILE_NAME.test(name)) {
        c.error(
          [...path, "files", name],
          `file name "${name}" must be letters, digits, "_", "." or "-"`,
        );
        continue;
      }
      const t = template(c, v, [...path, "files", name], baseDir);
      if (t) files.set(name, t);
    }
  }
  let cloudInit: MachineFiles["cloudInit"];
  if (o["cloud-init"] !== undefined) {
    const p = [...path, "cloud-init"];
    const co = c.object(o["cloud-init"], p, [...CLOUD_INIT_FILES]) ?? {};
    cloudInit = {};
    for (const key of CLOUD_INIT_FILES) {
      if (co[key] === undefined) continue;
      const t = template(c, co[key], [...p, key], baseDir);
      if (t) cloudInit[key] = t;
    }
  }
  const cmdline = typeof o.cmdline === "string" ? o.cmdline : "";
  for (const m of cmdline.matchAll(FILE_URL)) {
    if (!files.has(m[1]))
      c.error(
        [...path, "cmdline"],
        `{file-url:${m[1]}} names no file under files: (${[...files.keys()].join(", ") || "none"})`,
      );
  }
  return files.size || cloudInit ? { cloudInit, files } : undefined;
}
