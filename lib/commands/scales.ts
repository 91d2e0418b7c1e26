// `repopt scales show`: statistics of a scale file, and which architecture it fits.
import { type Command, Option } from 'commander';
import { ARCHS, networkSpec } from '../configs';
import { plotScales, scaleStatistics, scaleTable, scaleWarnings } from '../api';
import { loadScales, scalesDigest, scaleValueWarnings, validateScales } from '../scales';

export function addScalesCommand(program: Command): void {
  const scales = program.command('scales').description('inspect scale files');
  scales
    .command('show <file>')
    .description('per-block statistics of a scale file (JSON or .pth); with --arch, also check that it fits')
    .addOption(new Option('--arch <name>', 'check the file against this architecture').choices(Object.keys(ARCHS)))
    .option('--plot <png>', 'also plot the statistics')
    .option('--json', 'print JSON (file, arch, sha256 of the scales, per-branch statistics, warnings) instead')
    .action(async (file: string, o: { arch?: string; plot?: string; json?: boolean }) => {
      const set = loadScales(file);
      // Without --arch, find the architecture whose scale keys the file has.
      const arch =
        o.arch ??
        Object.keys(ARCHS).find((a) => {
          try {
            validateScales(networkSpec(a, { mode: 'hs' }), set);
            return true;
          } catch {
            return false;
          }
        });
      if (!arch)
        throw new Error(`${file}: its ${set.size} keys fit none of ${Object.keys(ARCHS).join(', ')}; pass --arch to see what is missing`);
      const spec = networkSpec(arch, { mode: 'hs' });
      validateScales(spec, set);
      const stats = scaleStatistics(spec, set);
      const warnings = [...scaleValueWarnings(set, file), ...scaleWarnings(stats)];
      if (o.json) {
        // sha256: what a JSON scale file records for these values, so files of either format compare.
        const doc = { file, arch, tensors: set.size, sha256: scalesDigest(set.entries()), statistics: stats, warnings };
        process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
      } else {
        process.stdout.write(`${file}: ${set.size} tensors, fits ${arch}\n${scaleTable(stats)}\n`);
        for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
      }
      if (o.plot) await plotScales(o.plot, stats);
    });
}
