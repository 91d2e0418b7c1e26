declare module 'node-gyp-build' {
  interface Loader {
    (dir: string): unknown;
    /** Path of the binary that `load(dir)` would load (build/ first, then prebuilds/). */
    resolve(dir: string): string;
  }
  const load: Loader;
  export = load;
}
