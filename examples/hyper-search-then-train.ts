// The RepOptimizer recipe in two calls: hyper-search the branch scales, then train RepOpt-VGG with
// them as constants. Usage: node hyper-search-then-train.js [train subset]
import { hyperSearch, train } from 'repopt';

async function main(subset?: number): Promise<void> {
  const data = { kind: 'fashion-mnist', ...(subset ? { trainSubset: subset, testSubset: subset / 5 } : {}) } as const;
  const search = await hyperSearch({ arch: 'RepOpt-VGG-S', data, epochs: 1, outDir: 'runs/hs' }).result;
  for (const warning of search.warnings) console.warn(`warning: ${warning}`);
  console.log(`scales: ${search.files.json} (HS model test accuracy ${(100 * search.train.test.accuracy).toFixed(2)} %)`);
  search.train.network.dispose();

  const run = train({ arch: 'RepOpt-VGG-S', mode: 'target', scales: search.files.json, data, epochs: 2, outDir: 'runs/target' });
  run.on('epoch', (e) => console.log(`epoch ${e.epoch}: test accuracy ${(100 * e.testAccuracy).toFixed(2)} %`));
  const result = await run.result;
  console.log(`RepOpt-VGG-S: ${(100 * result.test.accuracy).toFixed(2)} % after ${result.steps} steps; checkpoint ${result.checkpoint}`);
  result.network.dispose();
}

main(process.argv[2] ? Number(process.argv[2]) : undefined).catch((e: Error) => {
  console.error(e.message);
  process.exitCode = 1;
});
