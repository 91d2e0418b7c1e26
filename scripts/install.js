#!/usr/bin/env node
'use strict';
// The package's install step: use the shipped prebuild made for the libtorch installed here, else
// build from source with cmake-js, else say what was found and how to fix it. Never leaves a binary
// for another libtorch in place.
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.join(__dirname, '..');
const log = (line) => process.stdout.write(`repopt: ${line}\n`);
const built = path.join(root, 'dist', 'binary.js');

if (fs.existsSync(built)) {
  const { chooseBinary, describeLibtorch } = require(built);
  const choice = chooseBinary(root);
  log(`found ${describeLibtorch(choice.found)}`);
  for (const line of choice.passedOver) log(`passed over ${line}`);
  for (const candidate of choice.candidates.filter((c) => c.kind === 'prebuild')) {
    // Load it in a child, so a failure (a missing cuDNN, say) is reported rather than fatal here.
    const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(candidate.file)})`], { encoding: 'utf8' });
    if (r.status === 0) {
      log(`using prebuild ${candidate.prebuild.variant} (${path.relative(root, candidate.file)})`);
      process.exit(0);
    }
    log(`prebuild ${candidate.prebuild.variant} did not load: ${(r.stderr.split('\n').find((l) => /Error/.test(l)) || r.stderr).trim()}`);
  }
}

log('no prebuild fits; building from source (cmake-js)');
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const r = spawnSync(process.execPath, [cmakeJs, 'compile'], { cwd: root, stdio: 'inherit' });
if (r.status === 0) process.exit(0);
let fixes = '';
try {
  fixes = '\n' + require(path.join(root, 'dist', 'binary.js')).HOW_TO_FIX;
} catch {
  // a checkout without dist/: the README has the same list
}
process.stderr.write(`repopt: the source build failed too (see above).${fixes}\n`);
process.exit(1);
