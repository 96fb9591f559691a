// A one-line progress bar on stderr, redrawn at most 10 times a second, only on a terminal.

export interface ProgressBar {
  update(done: number, total: number | null, detail: string): void;
  done(): void;
}

export function createProgressBar(options: { enabled: boolean; label: string }): ProgressBar {
  const stream = process.stderr;
  const enabled = options.enabled && stream.isTTY;
  const started = performance.now();
  let last = 0;
  let drawn = false;
  return {
    update(done, total, detail) {
      if (!enabled) return;
      const now = performance.now();
      if (now - last < 100 && (total === null || done < total)) return;
      last = now;
      const seconds = (now - started) / 1000;
      const rate = seconds > 0 ? `${(done / 1e6 / seconds).toFixed(1)} MB/s` : "";
      let bar = "";
      if (total !== null && total > 0) {
        const width = 24;
        const filled = Math.min(width, Math.round((done / total) * width));
        bar = `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${((done / total) * 100).toFixed(0).padStart(3)}% `;
      }
      const text = `${options.label} ${bar}${(done / 1e6).toFixed(0)} MB ${rate}  ${detail}`;
      stream.write(`\r${text.slice(0, (stream.columns || 120) - 1)}\x1b[K`);
      drawn = true;
    },
    done() {
      if (drawn) stream.write("\r\x1b[K");
    },
  };
}
