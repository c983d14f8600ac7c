// HDF5 C library (Debian: libhdf5-dev; include path from pkg-config hdf5).
#include <hdf5.h>
