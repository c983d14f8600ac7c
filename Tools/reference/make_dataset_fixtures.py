#!/usr/bin/env python3
"""Small HDF5 token datasets as h5py writes them (docs/CONVENTIONS.md §8), for the dataset reader tests.

  /tmp/ref/bin/python Tools/reference/make_dataset_fixtures.py Tests/LlamaTests/Fixtures/datasets
"""
import os, sys
import h5py
import numpy as np
from safetensors.numpy import load_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures/datasets"
os.makedirs(OUT, exist_ok=True)
rows = np.arange(30, dtype=np.int64).reshape(3, 10) * 3
with h5py.File(os.path.join(OUT, "rows_int64.h5"), "w") as f:
    f["input_ids"] = rows
    f["document_ids"] = np.array([[0] * 4 + [1] * 6, [0] * 10, [0] * 5 + [1] * 5], dtype=np.int32)
    f.attrs["format"] = "longtune-packed"
    f.attrs["seq_len"] = 10
with h5py.File(os.path.join(OUT, "stream_uint16.h5"), "w") as f:
    f["input_ids"] = np.arange(25, dtype=np.uint16) * 7
with h5py.File(os.path.join(OUT, "out_of_vocab.h5"), "w") as f:
    a = np.zeros((2, 6), dtype=np.int32); a[1, 4] = 500
    f["input_ids"] = a
with h5py.File(os.path.join(OUT, "no_input_ids.h5"), "w") as f:
    f["tokens"] = np.zeros(4, dtype=np.int32)
# The default_gqa fixture's evaluation tokens as a stream, for perplexity against transformers' loss.
ids = load_file(os.path.join(os.path.dirname(OUT), "default_gqa", "expected.safetensors"))["input_ids"].astype(np.int32)
with h5py.File(os.path.join(OUT, "default_gqa_tokens.h5"), "w") as f:
    f["input_ids"] = ids
