/**
 * The storage behind one namespace: a sparse byte store of 4 KiB chunks,
 * zero where never written. Mirrors the role of QEMU's block backend under
 * hw/nvme/ns.c (a namespace's `blk`), without the asynchronous I/O.
 *
 * @module
 */

/** Chunk size of the sparse store. */
export const MEDIA_CHUNK_SIZE = 4096;

/** Largest namespace the model accepts (bytes must stay exact in a double). */
export const MEDIA_MAX_BYTES = 2 ** 50;

/** A sparse, zero-filled byte store. */
export class SparseMedia {
  /** Capacity in bytes. */
  readonly sizeBytes: number;
  readonly #chunks = new Map<number, Uint8Array>();

  /** Create an empty store of `sizeBytes` (a multiple of 512, at most {@link MEDIA_MAX_BYTES}). */
  constructor(sizeBytes: number) {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MEDIA_MAX_BYTES) {
      throw new RangeError(`SparseMedia: bad size ${sizeBytes}`);
    }
    if (sizeBytes % 512 !== 0) throw new RangeError(`SparseMedia: size ${sizeBytes} % 512 != 0`);
    this.sizeBytes = sizeBytes;
  }

  /** Number of chunks that hold data. */
  get chunksAllocated(): number {
    return this.#chunks.size;
  }

  /** Copy `len` bytes at byte offset `pos` into a new array (zeros where unwritten). */
  read(pos: number, len: number): Uint8Array {
    this.#check(pos, len);
    const out = new Uint8Array(len);
    this.readInto(pos, out);
    return out;
  }

  /** Copy `out.length` bytes at byte offset `pos` into `out` (zeros where unwritten). */
  readInto(pos: number, out: Uint8Array): void {
    const len = out.length;
    this.#check(pos, len);
    let done = 0;
    while (done < len) {
      const p = pos + done;
      const idx = Math.floor(p / MEDIA_CHUNK_SIZE);
      const off = p % MEDIA_CHUNK_SIZE;
      const n = Math.min(MEDIA_CHUNK_SIZE - off, len - done);
      const chunk = this.#chunks.get(idx);
      if (chunk === undefined) out.fill(0, done, done + n);
      else if (off === 0 && n === MEDIA_CHUNK_SIZE) out.set(chunk, done);
      else out.set(chunk.subarray(off, off + n), done);
      done += n;
    }
  }

  /** Store `data` at byte offset `pos`. */
  write(pos: number, data: Uint8Array): void {
    this.#check(pos, data.length);
    let done = 0;
    while (done < data.length) {
      const p = pos + done;
      const idx = Math.floor(p / MEDIA_CHUNK_SIZE);
      const off = p % MEDIA_CHUNK_SIZE;
      const n = Math.min(MEDIA_CHUNK_SIZE - off, data.length - done);
      let chunk = this.#chunks.get(idx);
      if (!chunk) {
        chunk = new Uint8Array(MEDIA_CHUNK_SIZE);
        this.#chunks.set(idx, chunk);
      }
      chunk.set(data.subarray(done, done + n), off);
      done += n;
    }
  }

  #check(pos: number, len: number): void {
    if (!Number.isSafeInteger(pos) || !Number.isSafeInteger(len) || pos < 0 || len < 0) {
      throw new RangeError(`SparseMedia: bad range ${pos}+${len}`);
    }
    if (pos + len > this.sizeBytes) {
      throw new RangeError(`SparseMedia: ${pos}+${len} beyond ${this.sizeBytes}`);
    }
  }
}
