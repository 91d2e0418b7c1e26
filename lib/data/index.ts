// Data set readers: each returns an ImageDataset of uint8 NCHW images and int32 labels, held in memory.
export type { DatasetSplit, ImageDataset, Split } from './dataset';
export { classCounts, describeDataset, splitDataset, subsetDataset } from './dataset';
export { DataFormatError } from './files';
export type { IdxOptions } from './idx';
export { FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, loadFashionMnist, loadIdxDataset } from './idx';
export type { CifarOptions, CifarVariant } from './cifar';
export { CIFAR10_CLASSES, loadCifar } from './cifar';
export type { ImageFolderOptions } from './image-folder';
export { loadImageFolder } from './image-folder';
