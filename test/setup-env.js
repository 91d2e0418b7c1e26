// OpenMP reads this when libtorch loads; the tests also set torch threads explicitly.
process.env.OMP_NUM_THREADS = process.env.OMP_NUM_THREADS || '1';
