// What every part of the ISO 9660 reader shares: the sector size, the error for images that
// are not what they claim, and a directory entry as the reader gives it.

export const SECTOR = 2048;

export class IsoFormatError extends Error {
  readonly code = "ERR_ISO_FORMAT";
}

/** A path's directory is not in the ISO (as IsoImage.list says it), not a damaged image or device. */
export function isNoDirectory(err: unknown): boolean {
  return err instanceof IsoFormatError && /^No directory/.test(err.message);
}

export interface IsoEntry {
  /** The best name: Rock Ridge, else Joliet, else ISO 9660 without ";1". */
  name: string;
  directory: boolean;
  /** Byte offset of the data (of its first extent) in the image. */
  offset: number;
  /** Bytes in all (the file's data). */
  size: number;
  /**
   * The file's extents in order, when it has several that do not follow each other (a file of
   * 4 GiB or more is recorded in parts; usually they are contiguous and this is absent).
   */
  extents?: { offset: number; size: number }[];
}
