// Open MPI's C interface (Debian: libopenmpi-dev; include path from pkg-config ompi-c), wrapped in the few calls
// LongTune makes (docs/CONVENTIONS.md §16): MPI_COMM_WORLD, MPI_FLOAT and the reduction operations are macros
// over library symbols, which Swift cannot import.
#include <mpi.h>

static inline int lt_mpi_init(void) {
    int provided = 0;
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
}
static inline int lt_mpi_rank(void) { int r = 0; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
static inline int lt_mpi_size(void) { int s = 1; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }
// x[0..<count] = the sum over ranks, on every rank.
static inline int lt_mpi_sum_floats(float *x, int count) {
    return MPI_Allreduce(MPI_IN_PLACE, x, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
static inline int lt_mpi_sum_doubles(double *x, int count) {
    return MPI_Allreduce(MPI_IN_PLACE, x, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}
// Sends send[0..<sendCount] to rank dest while receiving recv[0..<recvCount] from rank source, in one deadlock-free
// call; a negative rank is MPI_PROC_NULL (nothing sent or received). The halo exchange of sequence parallelism.
static inline int lt_mpi_sendrecv_floats(const float *send, int sendCount, int dest, float *recv, int recvCount,
                                         int source) {
    return MPI_Sendrecv(send, sendCount, MPI_FLOAT, dest < 0 ? MPI_PROC_NULL : dest, 0,
                        recv, recvCount, MPI_FLOAT, source < 0 ? MPI_PROC_NULL : source, 0,
                        MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}
static inline int lt_mpi_max_double(double *x) {
    return MPI_Allreduce(MPI_IN_PLACE, x, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
}
static inline int lt_mpi_max_int(int *x) { return MPI_Allreduce(MPI_IN_PLACE, x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD); }
static inline int lt_mpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }
static inline void lt_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }
static inline int lt_mpi_finalize(void) { return MPI_Finalize(); }
