// Fine-tune a trained RepOpt-VGG checkpoint at a lower lr, then export it: the deploy network
// (folded, one conv3x3 + bias per block) as safetensors, the training weights as a PyTorch .pth,
// and INT8. Usage: node finetune-and-export.js <run folder> <scale file> [train subset]
import { convert, exportWeights, quantize, train } from 'repopt';

async function main(runDir: string, scales: string, subset?: number): Promise<void> {
  const data = { kind: 'fashion-mnist', ...(subset ? { trainSubset: subset, testSubset: subset / 5 } : {}) } as const;
  const run = train({
    arch: 'RepOpt-VGG-S',
    mode: 'target',
    scales,
    finetune: runDir,
    data,
    epochs: 1,
    lr: 0.01,
    outDir: 'runs/finetuned',
  });
  const tuned = await run.result;
  console.log(`fine-tuned: ${(100 * tuned.test.accuracy).toFixed(2)} %`);
  tuned.network.dispose();

  const deploy = convert({ checkpoint: 'runs/finetuned', out: 'runs/deploy.safetensors' });
  const weights = exportWeights({ checkpoint: 'runs/finetuned', out: 'runs/finetuned.pth' });
  console.log(`deploy network: ${deploy.out} (${deploy.blocks} blocks); weights: ${weights.out} (${weights.tensors} tensors)`);

  const int8 = await quantize({ checkpoint: 'runs/finetuned', calibBatches: 2 });
  for (const row of int8.rows)
    console.log(`${row.name}: float ${(100 * row.float.accuracy).toFixed(2)} %, int8 ${(100 * row.int8.accuracy).toFixed(2)} %`);
}

const [runDir, scales, subset] = process.argv.slice(2);
if (!runDir || !scales) {
  console.error('usage: finetune-and-export <run folder> <scale file> [train subset]');
  process.exitCode = 2;
} else {
  main(runDir, scales, subset ? Number(subset) : undefined).catch((e: Error) => {
    console.error(e.message);
    process.exitCode = 1;
  });
}
