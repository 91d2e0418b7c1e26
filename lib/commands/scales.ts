// `repopt scales show`: statistics of a scale file, and which architecture it fits.
import { type Command, Option } from 'commander';
import { ARCHS, networkSpec } from '../configs';
import { plotScales, scaleStatistics, scaleTable, scaleWarnings } from '../api';
import { loadScales, scaleValueWarnings, validateScales } from '../scales';

export function addScalesCommand(program: Command): void {
  const scales = program.command('scales').description('inspect scale files');
  scales
    .command('show <file>')
    .description('per-block statistics of a scale file (JSON or .pth); with --arch, also check that it fits')
    .addOption(new Option('--arch <name>', 'check the file against this architecture').choices(Object.keys(ARCHS)))
    .option('--plot <png>', 'also plot the statistics')
    .action(async (file: string, o: { arch?: string; plot?: string }) => {
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
      process.stdout.write(`${file}: ${set.size} tensors, fits ${arch}\n${scaleTable(stats)}\n`);
      for (const w of [...scaleValueWarnings(set, file), ...scaleWarnings(stats)]) process.stderr.write(`warning: ${w}\n`);
      if (o.plot) await plotScales(o.plot, stats);
    });
}
