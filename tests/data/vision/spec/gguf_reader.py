"""The GGUF reader of the shared numpy reference of Qwen3.5 (shared/docs/qwen35_reference.py),
copied here so that the vision specification runs from the repository alone. F32 and F16 tensors
only; numpy shape = reversed ggml ne."""
import struct, sys
import numpy as np

# ---------------------------------------------------------------- GGUF (F32 and F16 tensors only)
def read_gguf(path):
    buf = open(path, "rb").read()
    off = 0
    def take(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, buf, off); off += struct.calcsize("<" + fmt)
        return v[0]
    def string():
        nonlocal off
        n = take("Q"); s = buf[off:off + n].decode("utf-8"); off += n
        return s
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    def value(t):
        if t == 8: return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(scalar[t])
    assert buf[:4] == b"GGUF", "not a GGUF file"
    off = 4
    version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    assert version == 3
    kv = {}
    for _ in range(n_kv):
        k = string(); kv[k] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string(); nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        typ, rel = take("I"), take("Q")
        infos.append((name, ne, typ, rel))
    align = kv.get("general.alignment", 32)
    base = (off + align - 1) // align * align
    tensors = {}
    for name, ne, typ, rel in infos:
        assert typ in (0, 1), f"{name}: this reference reads F32 and F16 tensors only"
        n = int(np.prod(ne))
        a = np.frombuffer(buf, dtype=np.float32 if typ == 0 else np.float16, count=n, offset=base + rel)
        tensors[name] = a.reshape(list(reversed(ne)))   # numpy shape = reversed ggml ne
    return kv, tensors
