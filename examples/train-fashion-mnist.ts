// RepOpt-VGG-S on Fashion-MNIST from a script: a progress line, early stopping, and Ctrl-C that keeps a checkpoint.
import { train } from 'repopt';

const [scales = 'repopt-hs/scales.json', subset] = process.argv.slice(2);
const data = { kind: 'fashion-mnist', ...(subset ? { trainSubset: +subset, testSubset: +subset / 5 } : {}) } as const;
const stop = new AbortController();
process.once('SIGINT', () => stop.abort()); // Ctrl-C: finish the step, write a checkpoint, exit
const run = train({ arch: 'RepOpt-VGG-S', mode: 'target', scales, data, epochs: 10, outDir: 'runs/repopt-vgg-s' }, { signal: stop.signal });
run.on('step', (e) => process.stdout.write(`\rstep ${e.step}  loss ${e.loss.toFixed(3)}  ${e.imagesPerSecond.toFixed(0)} img/s `));
run.on('epoch', (e) => {
  console.log(`\nepoch ${e.epoch}: test accuracy ${(100 * e.testAccuracy).toFixed(2)} %`);
  if (e.testAccuracy >= 0.92) stop.abort(); // early stop: good enough
});
run.result.then((r) => console.log(`\n${r.status} after ${r.steps} steps: ${r.checkpoint}`)); // an error: exit status 1
