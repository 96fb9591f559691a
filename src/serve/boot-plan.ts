// A machine's boot plan as data: what an entry kind decides for one machine, before any boot
// loader language. One renderer per loader turns it into a script (ipxe-render.ts for iPXE; a
// GRUB renderer can be added beside it without touching the kinds).

export type BootPlan =
  /** A kernel with initrds (fetched by URL, named so EFI stubs find them) and a command line. */
  | {
      kind: "kernel";
      title: string;
      entry: string;
      kernel: string;
      initrds: string[];
      cmdline: string;
    }
  /** A menu of entries; the chosen one's plan is fetched from `entryUrl(NAME)`. */
  | {
      kind: "menu";
      title: string;
      items: { name: string; title: string }[];
      timeoutSeconds: number;
      defaultItem: string;
      /** The URL of the chosen entry's plan, with `{name}` where its name goes. */
      entryUrl: string;
    }
  | { kind: "chain"; url: string }
  /** Boot a disk image by URL (iPXE's SAN boot); `title` says what, for the screen. */
  | { kind: "sanboot"; url: string; title?: string; noDescribe?: boolean }
  | { kind: "local" }
  | { kind: "shell" }
  /** Leave the boot loader with `code` (the firmware tries its next boot device). */
  | { kind: "exit"; code: number; message?: string }
  /** The machine cannot boot this: say why and stop in the loader's shell. */
  | { kind: "error"; message: string }
  /** Not ready yet (an ISO being checked): say why, wait, ask `url` again. */
  | { kind: "wait"; message: string; url: string; seconds: number };
