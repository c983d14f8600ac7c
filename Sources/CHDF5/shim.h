// HDF5 C library (Debian: libhdf5-dev; include path from pkg-config hdf5).
#include <hdf5.h>

// Constants that hdf5.h defines as macros calling H5open(), which Swift cannot import.
static inline hid_t lt_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t lt_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t lt_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t lt_h5t_c_s1(void) { return H5T_C_S1; }
static inline unsigned lt_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned lt_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline hid_t lt_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }

// Probing a packed file in a child process. HDF5 1.10 crashes (SIGSEGV, abort) or loops forever inside its own
// code on some corrupt files, before any error check of ours can run: a variable-length string attribute with a
// wrong global-heap object size, a damaged symbol table or local heap met by H5Lexists. So a forked child that
// runs only this C code first opens the file, looks up and opens the datasets, reads their first and last elements
// and the root attributes, and sends the attributes back through a pipe as "name\tvalue\n" lines. A child that
// crashes or outlives `timeout_ms` is reported instead of taking the process down; the parent then repeats the
// same steps in-process. Only scalar integer and string attributes are read; others are skipped.
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline void lt_write_all(int fd, const char *p, size_t n) {
    while (n > 0) { ssize_t w = write(fd, p, n); if (w <= 0) return; p += w; n -= (size_t)w; }
}

// In the child: one line per readable attribute; values longer than 1 MiB or holding a tab/newline are skipped.
static inline void lt_emit_root_attributes(hid_t file, const char *const *names, int count, int fd) {
    hid_t root = H5Gopen2(file, "/", H5P_DEFAULT);
    if (root < 0) return;
    for (int i = 0; i < count; i++) {
        if (H5Aexists(root, names[i]) <= 0) continue;
        hid_t a = H5Aopen(root, names[i], H5P_DEFAULT);
        if (a < 0) continue;
        hid_t space = H5Aget_space(a), type = H5Aget_type(a);
        char small[32]; char *value = NULL; int owned = 0;
        if (space >= 0 && type >= 0 && H5Sget_simple_extent_npoints(space) == 1) {
            H5T_class_t cls = H5Tget_class(type);
            if (cls == H5T_INTEGER) {
                long long v = 0;
                if (H5Aread(a, H5T_NATIVE_INT64, &v) >= 0) { snprintf(small, sizeof small, "%lld", v); value = small; }
            } else if (cls == H5T_STRING && H5Tis_variable_str(type) > 0) {
                char *p = NULL;
                hid_t mt = H5Tget_native_type(type, H5T_DIR_DEFAULT);
                if (mt >= 0 && H5Aread(a, mt, &p) >= 0 && p) { value = p; owned = 1; }
                if (mt >= 0) H5Tclose(mt);
            } else if (cls == H5T_STRING) {
                size_t size = H5Tget_size(type);
                if (size > 0 && size <= (1u << 20) && (value = calloc(size + 1, 1))) {
                    owned = 1;
                    if (H5Aread(a, type, value) < 0) value[0] = 0;
                }
            }
        }
        if (value && strlen(value) <= (1u << 20) && !strpbrk(value, "\t\n")) {
            lt_write_all(fd, names[i], strlen(names[i])); lt_write_all(fd, "\t", 1);
            lt_write_all(fd, value, strlen(value)); lt_write_all(fd, "\n", 1);
        }
        if (owned) free(value);
        if (type >= 0) H5Tclose(type);
        if (space >= 0) H5Sclose(space);
        H5Aclose(a);
    }
    H5Gclose(root);
}

// In the child: opens dataset `name` if it exists and reads its first and last elements (at most rank 2).
static inline void lt_touch_dataset(hid_t file, const char *name) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return;
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) return;
    hid_t space = H5Dget_space(d);
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[2] = {0, 0};
    if (rank >= 1 && rank <= 2 && H5Sget_simple_extent_dims(space, dims, NULL) == rank && dims[0] > 0
        && (rank == 1 || dims[1] > 0) && dims[0] < ((hsize_t)1 << 48) && (rank == 1 || dims[1] < ((hsize_t)1 << 48))) {
        hsize_t points[4] = {0, 0, dims[0] - 1, rank == 2 ? dims[1] - 1 : 0};
        if (rank == 1) points[1] = dims[0] - 1;
        long long values[2];
        hsize_t two = 2;
        hid_t mem = H5Screate_simple(1, &two, NULL);
        if (mem >= 0 && H5Sselect_elements(space, H5S_SELECT_SET, 2, points) >= 0)
            H5Dread(d, H5T_NATIVE_INT64, mem, space, H5P_DEFAULT, values);
        if (mem >= 0) H5Sclose(mem);
    }
    if (space >= 0) H5Sclose(space);
    H5Dclose(d);
}

// Returns 0 and fills *out (malloc'd, NUL-terminated; the caller frees it) on success, also when the file cannot
// be opened (the caller's own open then says why); otherwise -1 when no child could be started, -2 when the child
// died (*signal_number set), -3 when it ran past timeout_ms and was killed.
static inline int lt_probe_file_isolated(const char *path, const char *const *datasets, int datasetCount,
                                         const char *const *names, int count, int timeout_ms,
                                         char **out, int *signal_number) {
    *out = NULL; *signal_number = 0;
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) { close(fds[0]); close(fds[1]); return -1; }
    if (pid == 0) {
        // A crash here must end this child quietly: not run the parent's handlers (Swift's backtracer, a fuzzer's).
        int deadly[] = { SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTRAP };
        for (unsigned i = 0; i < sizeof deadly / sizeof deadly[0]; i++) signal(deadly[i], SIG_DFL);
        close(fds[0]);
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (file >= 0) {
            for (int i = 0; i < datasetCount; i++) lt_touch_dataset(file, datasets[i]);
            lt_emit_root_attributes(file, names, count, fds[1]);
        }
        _exit(0);
    }
    close(fds[1]);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    struct timespec start; clock_gettime(CLOCK_MONOTONIC, &start);
    int timedOut = 0;
    for (;;) {
        struct timespec now; clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= timeout_ms) { timedOut = 1; break; }
        struct pollfd p = { fds[0], POLLIN, 0 };
        int r = poll(&p, 1, (int)(timeout_ms - elapsed));
        if (r < 0) continue;
        if (r == 0) { timedOut = 1; break; }
        if (len + 1 >= cap) { cap *= 2; buf = realloc(buf, cap); }
        ssize_t n = read(fds[0], buf + len, cap - len - 1);
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fds[0]);
    buf[len] = 0;
    if (timedOut) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {}
    if (timedOut) { free(buf); return -3; }
    if (WIFSIGNALED(status)) { *signal_number = WTERMSIG(status); free(buf); return -2; }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { free(buf); return -2; }
    *out = buf;
    return 0;
}
