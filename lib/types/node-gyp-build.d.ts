declare module 'node-gyp-build' {
  /** The tags node-gyp-build reads from a prebuild's file name (runtime, napi, abi, libc, ...). */
  interface Tags {
    file: string;
    runtime?: string;
    napi?: boolean;
    abi?: string;
    libc?: string;
  }
  interface Loader {
    (dir: string): unknown;
    /** Path of the binary that `load(dir)` would load (build/ first, then prebuilds/). */
    resolve(dir: string): string;
    /** Tags of a file name such as 'repopt.napi.node'; undefined unless it ends in .node. */
    parseTags(file: string): Tags | undefined;
    /** A predicate: whether a file's tags fit this runtime and ABI. */
    matchTags(runtime: string, abi: string): (tags: Tags) => boolean;
  }
  const load: Loader;
  export = load;
}
