#!/usr/bin/env node
'use strict';
// Writes the manifest of a prebuild: which libtorch it was built against and the shared libraries it
// links (readelf's NEEDED entries, less the C and C++ runtime), which the loader (lib/binary.ts)
// checks before it loads the binary.
//   node scripts/prebuild-manifest.js <repopt.<variant>.napi.node> <builtWith words>
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const { describe } = require('./torch-config.js');

const [file, builtWith] = process.argv.slice(2);
if (!file || !builtWith) {
  process.stderr.write('usage: prebuild-manifest.js <file.node> <built with>\n');
  process.exit(2);
}
const t = describe();
const RUNTIME = /^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux[\w-]*)\.so/;
const needed = execFileSync('readelf', ['-d', file], { encoding: 'utf8' })
  .split('\n')
  .map((l) => /\(NEEDED\)\s+Shared library: \[(.+)\]/.exec(l))
  .filter(Boolean)
  .map((m) => m[1])
  .filter((so) => !RUNTIME.test(so));
const manifest = { variant: t.variant, torchVersion: t.torchVersion, cuda: t.cudaVersion, needed, builtWith };
const out = path.join(path.dirname(file), path.basename(file).replace(/\.napi.*\.node$|\.node$/, '.json'));
fs.writeFileSync(out, JSON.stringify(manifest, null, 2) + '\n');
process.stdout.write(`${out}: ${JSON.stringify(manifest)}\n`);
