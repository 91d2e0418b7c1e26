export * from './launch';
export * from './worker';
