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
