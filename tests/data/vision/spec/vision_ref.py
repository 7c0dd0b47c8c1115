"""Numpy (float64) specification of the Qwen3.5 / Qwen3-VL vision tower (llama.cpp projector
qwen3vl_merger), extended from the image tower to frame pairs.

A Conv3D patch embedding with temporal patch size 2 sees two frames: the first through
v.patch_embd.weight (the kernel's temporal slice 0), the second through v.patch_embd.weight.1
(slice 1), summed. A still image is the pair of two identical frames. Everything after the patch
embedding runs per frame pair exactly as for an image: the position table interpolated to the
pair's patch grid, 2-D rotary on (row, column), attention among the pair's own patches only
(transformers' cu_seqlens repeat the grid once per temporal patch), the merger.

Two numerics:
  numerics="llama": llama.cpp's CPU graph (tools/mtmd/models/qwen3vl.cpp), with its two
    low-precision steps emulated: pixels and both patch kernels rounded to float16 before the
    patch product (ggml_conv_2d's F16 im2col), and GELU through ggml's float16 table, in the
    merger too. This is what the llama.cpp dumps in tests/data/vision/ref_*/ are compared with.
  numerics="model": the model's own float math (transformers' Qwen3VLVisionModel): no float16
    rounding, gelu_pytorch_tanh in the blocks, exact (erf) GELU in the merger. The frame-pair
    references of tests/data/video/ are this, in float64.

Usage (Debian's python3 with python3-numpy), checking against llama.cpp's image dumps:
  python3 vision_ref.py MMPROJ.gguf REF_DIR PIXELS_DIR
REF_DIR holds llama.cpp's reference.json and per-stage dumps; PIXELS_DIR the <name>.inp_raw.f32
pixels that were fed to it (tests/data/vision)."""
import sys, os, json, math
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from gguf_reader import read_gguf

f16, f32, f64 = np.float16, np.float32, np.float64


class Mmproj:
    def __init__(self, path):
        self.kv, self.t = read_gguf(path)
        self.n_embd = self.kv["clip.vision.embedding_length"]
        self.n_head = self.kv["clip.vision.attention.head_count"]
        self.n_layer = self.kv["clip.vision.block_count"]
        self.eps = self.kv["clip.vision.attention.layer_norm_epsilon"]
        self.patch = self.kv["clip.vision.patch_size"]
        self.merge = self.kv["clip.vision.spatial_merge_size"]
        self.mean = np.array(self.kv.get("clip.vision.image_mean", [0.5] * 3), f64)
        self.std = np.array(self.kv.get("clip.vision.image_std", [0.5] * 3), f64)

    def w(self, name):  # weights as stored (F16 stays F16-exact), promoted to float64
        return self.t[name].astype(f64)


def gelu_table(x):
    """ggml's CPU GELU: the tanh form looked up in a float16 table."""
    xh = np.asarray(x, f64).astype(f32).astype(f16).astype(f32)
    k = np.float32(math.sqrt(2.0 / math.pi)); a = np.float32(0.044715)
    g = (f32(0.5) * xh * (f32(1.0) + np.tanh(k * xh * (f32(1.0) + a * xh * xh)))).astype(f32)
    y = g.astype(f16).astype(f64)
    xf = np.asarray(x, f64)
    return np.where(xf <= -10.0, 0.0, np.where(xf >= 10.0, xf, y))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_erf(x):
    from math import erf
    return 0.5 * x * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True); xc = x - mu
    return xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + eps) * w + b


def merge_order(ph, pw):
    """token order of llama.cpp and transformers: 2x2 blocks in raster order, raster inside."""
    idx = []
    for by in range(ph // 2):
        for bx in range(pw // 2):
            for dy in range(2):
                for dx in range(2):
                    idx.append(((2 * by + dy), (2 * bx + dx)))
    return idx


def interp_align_corners(tab, side, ph, pw):
    """bilinear, aligned corners (transformers' fast_pos_embed_interpolate uses
    linspace(0, side - 1, n) source coordinates; ggml_interpolate BILINEAR|ALIGN_CORNERS)."""
    if ph == side and pw == side:
        return tab.reshape(side, side, -1)
    g = tab.reshape(side, side, -1)

    def coords(n_out):
        c = (np.arange(n_out, dtype=f32) * f32(side - 1) / f32(n_out - 1)) if n_out > 1 \
            else np.zeros(1, f32)
        c0 = np.clip(np.floor(c).astype(int), 0, side - 1); c1 = np.clip(c0 + 1, 0, side - 1)
        d = np.clip(c - c0.astype(f32), 0, 1).astype(f64)
        return c0, c1, d
    y0, y1, dy = coords(ph); x0, x1, dx = coords(pw)
    dy = dy[:, None, None]; dx = dx[None, :, None]
    a = g[y0][:, x0]; b = g[y0][:, x1]; c = g[y1][:, x0]; d = g[y1][:, x1]
    return a * (1 - dx) * (1 - dy) + b * dx * (1 - dy) + c * (1 - dx) * dy + d * dx * dy


def rope_vision(x, py, px, theta_base=10000.0):
    """x: [n_tok, n_head, d]; pair (k, k + d/2): k < d/4 turned by py * base^(-4k/d),
    d/4 <= k < d/2 by px * base^(-4(k - d/4)/d)."""
    n, h, d = x.shape
    s, nd = d // 4, d // 2
    k = np.arange(nd)
    inv = theta_base ** (-2.0 * np.where(k < s, k, k - s) / nd)
    ang = np.where(k[None, :] < s, py[:, None], px[:, None]) * inv[None, :]
    c, sn = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., :nd], x[..., nd:]
    return np.concatenate([x0 * c - x1 * sn, x0 * sn + x1 * c], -1)


def normalize(rgb, m):
    """uint8 [H, W, 3] -> planar float [3, H, W]: (u8 / 255 - mean) / std, in float32 like the
    processor's tensors."""
    x = rgb.astype(f32) / f32(255.0)
    x = (x - m.mean.astype(f32)) / m.std.astype(f32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)).astype(f32)


def encode(m, pix, pix1=None, numerics="llama"):
    """pix (and pix1, the pair's second frame; default: pix again, a still image): normalized
    float32 [3, H, W]. Returns the intermediates by llama.cpp's names, patches in merge order."""
    if pix1 is None:
        pix1 = pix
    assert pix1.shape == pix.shape
    llama = numerics == "llama"
    C, P, H, W = m.n_embd, m.patch, pix.shape[1], pix.shape[2]
    ph, pw = H // P, W // P
    out = {}

    def cols(p):
        p = p.astype(f16).astype(f64) if llama else p.astype(f64)
        return p.reshape(3, ph, P, pw, P).transpose(1, 3, 0, 2, 4).reshape(ph, pw, 3 * P * P)

    def kernel(name):
        k = m.t[name]
        k = k.astype(f16).astype(f64) if llama else k.astype(f64)
        return k.reshape(C, -1)
    k0, k1 = kernel("v.patch_embd.weight"), kernel("v.patch_embd.weight.1")
    emb = cols(pix) @ k0.T + cols(pix1) @ k1.T  # [ph, pw, C]
    order = merge_order(ph, pw)
    yy = np.array([o[0] for o in order]); xx = np.array([o[1] for o in order])
    x = emb[yy, xx] + m.w("v.patch_embd.bias")
    out["patch_bias"] = x
    side = int(math.isqrt(m.t["v.position_embd.weight"].shape[0]))
    pos = interp_align_corners(m.w("v.position_embd.weight"), side, ph, pw)
    x = x + pos[yy, xx]
    out["inp_pos_emb"] = x
    nh, dh = m.n_head, C // m.n_head
    block_gelu = gelu_table if llama else gelu_tanh
    merger_gelu = gelu_table if llama else gelu_erf
    for il in range(m.n_layer):
        p = f"v.blk.{il}."
        h = layer_norm(x, m.w(p + "ln1.weight"), m.w(p + "ln1.bias"), m.eps)
        qkv = h @ m.w(p + "attn_qkv.weight").T + m.w(p + "attn_qkv.bias")
        q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(-1, nh, dh) for i in range(3))
        q = rope_vision(q, yy.astype(f64), xx.astype(f64))
        k = rope_vision(k, yy.astype(f64), xx.astype(f64))
        att = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(dh)
        att = np.exp(att - att.max(-1, keepdims=True)); att /= att.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, v).reshape(-1, C)
        a = o @ m.w(p + "attn_out.weight").T + m.w(p + "attn_out.bias")
        out[f"attn_out-{il}"] = a
        x = x + a
        out[f"ffn_inp-{il}"] = x
        h = layer_norm(x, m.w(p + "ln2.weight"), m.w(p + "ln2.bias"), m.eps)
        h = block_gelu(h @ m.w(p + "ffn_up.weight").T + m.w(p + "ffn_up.bias"))
        x = x + h @ m.w(p + "ffn_down.weight").T + m.w(p + "ffn_down.bias")
        out[f"layer_out-{il}"] = x
    x = layer_norm(x, m.w("v.post_ln.weight"), m.w("v.post_ln.bias"), m.eps)
    out[f"norm_b-{m.n_layer}"] = x
    x = x.reshape(-1, 4 * C)  # the 4 patches of a 2x2 block concatenated
    x = merger_gelu(x @ m.w("mm.0.weight").T + m.w("mm.0.bias"))
    out["embd"] = x @ m.w("mm.2.weight").T + m.w("mm.2.bias")
    return out


if __name__ == "__main__":
    mm_path, refdir, pixdir = sys.argv[1:4]
    m = Mmproj(mm_path)
    ref = json.load(open(os.path.join(refdir, "reference.json")))
    for c in ref["cases"]:
        raw = os.path.join(pixdir, c["name"] + ".inp_raw.f32")
        if not os.path.exists(raw):
            continue
        pix = np.fromfile(raw, f32).reshape(3, c["preproc_height"], c["preproc_width"])
        res = encode(m, pix, numerics="llama")
        for name, val in res.items():
            fn = c["embd_file"] if name == "embd" else c["encoder_tensors"][name]["file"]
            path = os.path.join(refdir, fn)
            if not os.path.exists(path):
                continue
            got = np.fromfile(path, f32).reshape(val.shape)
            d = np.abs(got - val).max()
            print(f'{c["name"]:12s} {name:12s} max|diff| {d:.3e}  rms {np.sqrt((val ** 2).mean()):.3f}')
