/** @type {import('jest').Config} */
module.exports = {
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/test/tsconfig.json' }] },
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  // One worker: native suites run libtorch with explicit threads on a 2-core machine; parallel
  // workers would oversubscribe the cores (OpenMP slows down ~18x when it does).
  maxWorkers: 1,
  testTimeout: 120000,
  setupFiles: ['<rootDir>/test/setup-env.js'],
};
