#!/usr/bin/env python3
"""Compares a LongTune GGUF export with llama.cpp's own file for the same model: every metadata key and value
(except provenance: general.* other than architecture, type, file_type and quantization_version), then every
tensor's type, shape and bytes.

  /tmp/ref/bin/python Tools/reference/check_gguf_export.py LONGTUNE.gguf LLAMA_CPP.gguf

Exits 1 on any difference and lists them. The reference file comes from llama.cpp's convert_hf_to_gguf.py
(f32/f16/bf16/q8_0) or from llama_cpp.llama_model_quantize on a converter f16/f32 file (q4_0, K-quants):
see Tools/reference/make_gguf_export_check.sh.
"""
import sys
import numpy as np
from gguf import GGUFReader, GGUFValueType

KEPT_GENERAL = {"general.architecture", "general.type", "general.file_type", "general.quantization_version"}


def fields(reader):
    out = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or (name.startswith("general.") and name not in KEPT_GENERAL):
            continue
        types = tuple(f.types)
        if types[0] == GGUFValueType.ARRAY:
            value = [f.parts[i].tobytes() for i in f.data]
        else:
            value = f.parts[f.data[0]].tobytes()
        out[name] = (types, value)
    return out


def main(ours_path, ref_path):
    ours, ref = GGUFReader(ours_path), GGUFReader(ref_path)
    problems = []
    fo, fr = fields(ours), fields(ref)
    for k in sorted(set(fo) | set(fr)):
        if k not in fo:
            problems.append(f"metadata {k}: missing from ours")
        elif k not in fr:
            problems.append(f"metadata {k}: only in ours")
        elif fo[k] != fr[k]:
            a, b = fo[k], fr[k]
            detail = f"types {a[0]} vs {b[0]}" if a[0] != b[0] else (
                f"{len(a[1])} vs {len(b[1])} items" if isinstance(a[1], list) and len(a[1]) != len(b[1])
                else f"{str(a[1])[:120]} vs {str(b[1])[:120]}")
            problems.append(f"metadata {k}: differs ({detail})")
    to = {t.name: t for t in ours.tensors}
    tr = {t.name: t for t in ref.tensors}
    same = 0
    for name in sorted(set(to) | set(tr)):
        if name not in to or name not in tr:
            problems.append(f"tensor {name}: only in {'reference' if name in tr else 'ours'}")
            continue
        a, b = to[name], tr[name]
        if a.tensor_type != b.tensor_type or list(a.shape) != list(b.shape):
            problems.append(f"tensor {name}: {a.tensor_type.name} {list(a.shape)} vs {b.tensor_type.name} {list(b.shape)}")
            continue
        da, db = np.asarray(a.data).tobytes(), np.asarray(b.data).tobytes()
        if da != db:
            diff = sum(x != y for x, y in zip(da, db))
            problems.append(f"tensor {name} ({a.tensor_type.name}): {diff} of {len(da)} bytes differ")
        else:
            same += 1
    print(f"{len(fo)} metadata keys compared, {same} of {len(tr)} tensors byte-identical")
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
