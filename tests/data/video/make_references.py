#!/usr/bin/python3
"""Writes the frame-pair references of the tiny videos in this directory (tests/data/video/ref/),
independently of the C++ code: the model's video processor and vision tower in numpy.

Needs what a developer has, not what tests have: Debian's python3 with python3-numpy and
python3-pil, the ffmpeg and ffprobe programs (Debian package ffmpeg), and a built `qwen`
(only its tokenizer: `qwen tokenize`, for the token ids of the expanded prompt text). Tests read
the files this writes and never run it.

  tests/data/video/make_references.py [--qwen build/bin/qwen]

For each video:
  1. frames: ffprobe's decoded frames (count, timestamps) and ffmpeg's RGB24 pixels of every
     frame (-fps_mode passthrough: each decoded frame once; swscale flags as inference/video's);
  2. sampling: transformers' Qwen3VLVideoProcessor.sample_frames (fps 2, 4..768 frames) on
     total_num_frames and the stream's average rate, the last frame repeated to an even count;
  3. sizing: the processor's smart_resize for videos (factor 32, temporal factor 2, the model's
     pixel bounds), then PIL's bicubic resize of each sampled frame and (u8/255 - 0.5) / 0.5;
  4. the tower on each frame pair, numerics "model" (../vision/spec/vision_ref.py), in float64:
     every stage of the first pair (patch embedding of two different frames through the two
     temporal kernels, positions, every block, merger), the embeddings of every pair (the last
     one of an odd count is its frame twice);
  5. the prompt: the chat template's text for one user message [video, "Describe this video."]
     with the processor's replacement (per pair "<T seconds>" + <|vision_start|> + <|video_pad|>
     + <|vision_end|>, T = the mean of the pair's frame times idx / fps, .1f), tokenized by
     `qwen tokenize`, each pair's single <|video_pad|> widened to its tokens, and the M-RoPE
     positions of transformers' Qwen3-VL get_rope_index (each pair a t=1 grid; text after it
     continues from its largest position + 1).
"""
import json, math, os, subprocess, sys
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "vision", "spec"))
import numpy as np
from PIL import Image
import vision_ref

DATA = os.path.join(HERE, "..")
MMPROJ = os.path.join(DATA, "models", "mmproj-tiny-qwen35-f32.gguf")
TEXT_MODEL = os.path.join(DATA, "models", "tiny-qwen35-f32.gguf")
OUT = os.path.join(HERE, "ref")
VIDEOS = ["clip_h264.mp4", "clip_vp9.webm", "clip.gif"]
# The processor's configuration (Qwen3.5's video_preprocessor_config.json).
FPS, MIN_FRAMES, MAX_FRAMES = 2, 4, 768
MIN_PIXELS, MAX_PIXELS = 4096, 25165824
PATCH, MERGE, TEMPORAL = 16, 2, 2
PROMPT = ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe this video."
          "<|im_end|>\n<|im_start|>assistant\n<think>\n")
VISION_START, VIDEO_PAD = "<|vision_start|>", "<|video_pad|>"


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True).stdout


def probe(path):
    j = json.loads(run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                        "stream=width,height,time_base,avg_frame_rate:frame=best_effort_timestamp",
                        "-of", "json", path]))
    st = j["streams"][0]
    num, den = (int(v) for v in st["time_base"].split("/"))
    fn, fd = (int(v) for v in st["avg_frame_rate"].split("/"))
    pts = sorted(int(f["best_effort_timestamp"]) for f in j["frames"])
    times = [(p - pts[0]) * num / den for p in pts]
    return st["width"], st["height"], times, fn / fd


def rgb_frames(path, w, h):
    # The conversion to RGB with the settings inference/video uses (swscale's bicubic with
    # accurate rounding and full chroma interpolation; the ffmpeg program's default differs).
    raw = run(["ffmpeg", "-v", "error", "-i", path, "-fps_mode", "passthrough",
               "-sws_flags", "bicubic+accurate_rnd+full_chroma_int", "-f", "rawvideo",
               "-pix_fmt", "rgb24", "-"])
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def sample_frames(total, video_fps):
    """Qwen3VLVideoProcessor.sample_frames with fps given."""
    num = int(total / video_fps * FPS)
    num = min(max(num, MIN_FRAMES), MAX_FRAMES, total)
    return np.linspace(0, total - 1, num).round().astype(int)


def smart_resize(num_frames, height, width, factor=PATCH * MERGE, temporal_factor=TEMPORAL,
                 min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS):
    """video_processing_qwen3_vl.smart_resize."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height = int(height * scale)
        width = int(width * scale)
    assert max(height, width) / min(height, width) <= 200
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def timestamps(indices, video_fps):
    """Qwen3VLProcessor._calculate_timestamps: idx / fps, padded, then the mean of each pair."""
    indices = list(indices)
    if len(indices) % MERGE != 0:
        indices.extend(indices[-1] for _ in range(MERGE - len(indices) % MERGE))
    ts = [idx / video_fps for idx in indices]
    return [(ts[i] + ts[i + MERGE - 1]) / 2 for i in range(0, len(ts), MERGE)]


def expand_prompt(prompt, pair_times):
    """The processor's replacement of the template's video text (one <|video_pad|> per pair,
    widened after tokenization)."""
    placeholder = ""
    for t in pair_times:
        placeholder += f"<{t:.1f} seconds>" + VISION_START + VIDEO_PAD + "<|vision_end|>"
    return prompt.replace(VISION_START + VIDEO_PAD + "<|vision_end|>", placeholder, 1)


def rope_index(ids, video_pad, grids):
    """transformers' Qwen3VLModel.get_rope_index for one video (a grid per frame pair, t = 1):
    positions [n, 3] (t, h, w)."""
    pos, st, k = [], 0, 0
    nxt = 0
    while True:
        try:
            ed = ids.index(video_pad, st)
        except ValueError:
            break
        rows, cols = grids[k]
        k += 1
        for j in range(ed - st):
            pos.append((nxt + j,) * 3)
        base = nxt + ed - st
        for r in range(rows):
            for c in range(cols):
                pos.append((base, base + r, base + c))
        nxt = max(max(p) for p in pos) + 1
        st = ed + rows * cols
    for j in range(len(ids) - st):
        pos.append((nxt + j,) * 3)
    return pos


def main():
    qwen = sys.argv[sys.argv.index("--qwen") + 1] if "--qwen" in sys.argv else \
        os.path.join(HERE, "..", "..", "..", "build", "bin", "qwen")
    tok = json.loads(run([qwen, "tokenize", f"--model={TEXT_MODEL}", "--json",
                          f"--text={VIDEO_PAD}"]))
    video_pad = tok["ids"][0] if "ids" in tok else tok["tokens"][0]["id"]
    m = vision_ref.Mmproj(MMPROJ)
    os.makedirs(OUT, exist_ok=True)
    cases = []
    for name in VIDEOS:
        path = os.path.join(HERE, name)
        w, h, times, video_fps = probe(path)
        frames = rgb_frames(path, w, h)
        assert len(frames) == len(times), (name, len(frames), len(times))
        idx = sample_frames(len(times), video_fps)
        rh, rw = smart_resize(len(idx), h, w)
        padded = list(idx) + ([idx[-1]] if len(idx) % 2 else [])
        pair_times = timestamps(idx, video_fps)
        stem = os.path.splitext(name)[0]
        case = {"name": name, "width": w, "height": h, "n_frames": len(times),
                "frame_times": times, "average_fps": video_fps, "sampled": [int(i) for i in idx],
                "frames": [int(i) for i in padded], "resized_width": rw, "resized_height": rh,
                "pair_times": pair_times,
                "pair_timestamps": [f"<{t:.1f} seconds>" for t in pair_times], "pairs": []}
        # Sampled frames as decoded (RGB24) and as normalised for the tower.
        rgb = np.stack([frames[i] for i in padded])
        rgb.tofile(os.path.join(OUT, f"{stem}.frames.rgb"))
        case["frames_file"] = f"{stem}.frames.rgb"
        # The resized frames stay uint8 (normalising them is one formula, in float32 as the
        # processor's tensors).
        resized = np.stack([np.asarray(Image.fromarray(f).resize((rw, rh), Image.BICUBIC))
                            for f in rgb])
        resized.tofile(os.path.join(OUT, f"{stem}.resized.rgb"))
        case["resized_file"] = f"{stem}.resized.rgb"
        pix = [vision_ref.normalize(f, m) for f in resized]
        for p in range(len(padded) // 2):
            res = vision_ref.encode(m, pix[2 * p], pix[2 * p + 1], numerics="model")
            files = {}
            for stage, val in res.items():
                if p > 0 and stage != "embd":
                    continue
                fn = f"{stem}.pair{p}.{stage}.f32"
                val.astype(np.float32).tofile(os.path.join(OUT, fn))
                files[stage] = fn
            case["pairs"].append(files)
        # The prompt.
        text = expand_prompt(PROMPT, pair_times)
        ids = json.loads(run([qwen, "tokenize", f"--model={TEXT_MODEL}", "--json",
                              f"--text={text}"]))
        ids = ids["ids"] if "ids" in ids else [t["id"] for t in ids["tokens"]]
        rows, cols = rh // (PATCH * MERGE), rw // (PATCH * MERGE)
        expanded = []
        for t in ids:
            expanded.extend([t] * (rows * cols) if t == video_pad else [t])
        case["prompt"] = PROMPT
        case["expanded_text"] = text
        case["token_ids"] = expanded
        case["positions"] = [list(p) for p in rope_index(expanded, video_pad,
                                                        [(rows, cols)] * len(pair_times))]
        cases.append(case)
        print(f"{name}: {len(times)} frames at {video_fps:g} fps, sampled {list(idx)}, "
              f"{rw}x{rh}, pairs at {case['pair_timestamps']}, {len(expanded)} prompt tokens")
    json.dump({"mmproj": "models/mmproj-tiny-qwen35-f32.gguf",
               "text_model": "models/tiny-qwen35-f32.gguf", "video_pad": video_pad,
               "numerics": "model (float64)", "cases": cases},
              open(os.path.join(OUT, "reference.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
