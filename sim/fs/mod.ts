/**
 * The simulated host's files: fd table, path lookup and open, in-memory
 * regular files.
 *
 * @module
 */

export { FdTable, filesOf, NR_OPEN_DEFAULT } from "./fdtable.ts";
export {
  doSysOpen,
  filpOpen,
  lookupInode,
  Namespace,
  namespaceOf,
  sysClose,
  sysUnlink,
} from "./namei.ts";
export { SHMEM_DIO_ALIGN, ShmemInode } from "./shmem.ts";
export { fput, getFile, IOCB } from "./file.ts";
export type { File, FileOperations, Inode, Kiocb } from "./file.ts";
