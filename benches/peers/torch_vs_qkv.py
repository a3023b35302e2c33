#!/usr/bin/env python3
"""qkv's C ABI against PyTorch's CPU scaled_dot_product_attention, timed alternately.

Both run in this one process, on one thread each, call by call: in every round each shape
calls qkv and torch once (the order swaps every round), so a clock change or a busy
neighbour hits both sides of a ratio alike. Per shape it prints the median time of each and
the median of the per-round ratios torch/qkv ("qkv speed vs torch": above 1, qkv is faster)
with their min-max spread. Before timing, each shape is run once by both and the largest
absolute difference of the outputs is printed.

Build the shared library first (from the repository root):

    cargo rustc --release --lib --features capi --crate-type cdylib

then:

    python3 benches/peers/torch_vs_qkv.py                 # issue-15 shapes, 7 rounds
    python3 benches/peers/torch_vs_qkv.py --rounds 3 --shape prefill-1k
    python3 benches/peers/torch_vs_qkv.py --shape 32/8x1x32768x128 --shape 8x2048x2048x64,causal

PyTorch is optional (pip install torch): without it only qkv is timed. No numpy needed.
A causal mask is aligned top-left in both, as torch's is_causal is (query i sees keys 0..=i).
"""

import argparse
import ctypes
import math
import os
import platform
import random
import statistics
import sys
import time
import warnings
from array import array

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = "cargo rustc --release --lib --features capi --crate-type cdylib"

# (name, q_heads, kv_heads, q_len, kv_len, head_dim, causal): the table of issue 15.
SHAPES = [
    ("prefill-1k-d64", 1, 1, 1024, 1024, 64, False),
    ("prefill-1k-d128", 1, 1, 1024, 1024, 128, False),
    ("prefill-4k-d64", 1, 1, 4096, 4096, 64, False),
    ("prefill-4k-d128", 1, 1, 4096, 4096, 128, False),
    ("prefill-4k-d128-causal", 1, 1, 4096, 4096, 128, True),
    ("decode-8/8-32k-d128", 8, 8, 1, 32768, 128, False),
    ("decode-8/2-32k-d128", 8, 2, 1, 32768, 128, False),
    ("decode-32/8-32k-d128", 32, 8, 1, 32768, 128, False),
]

QKV_MASK_NONE = 0
QKV_MASK_CAUSAL = 1
# torch's is_causal aligns the mask top-left (query i sees keys 0..=i); qkv is told the same.
# The two alignments differ only when q_len != kv_len.
QKV_QUERY_POS_TOP_LEFT = 1


class Layout(ctypes.Structure):
    _fields_ = [("head_stride", ctypes.c_size_t), ("row_stride", ctypes.c_size_t)]


class Desc(ctypes.Structure):
    """`qkv_desc` of include/qkv.h, field for field (no padding: the header checks it)."""

    # (field names, their ctype): runs of consecutive fields of one type.
    _fields_ = [
        (name, ctype)
        for names, ctype in [
            ("struct_size q_heads kv_heads q_len kv_len head_dim v_dim", ctypes.c_size_t),
            ("q k v out", Layout),
            ("window_left window_right", ctypes.c_size_t),
            ("bias", ctypes.c_void_p),
            ("bias_layout", Layout),
            ("q_count k_count v_count out_count lse_count bias_count", ctypes.c_size_t),
            ("query_offset", ctypes.c_int64),
            ("scale", ctypes.c_float),
            ("flags", ctypes.c_uint32),
            ("mask query_pos", ctypes.c_int32),
        ]
        for name in names.split()
    ]


# QKV_DESC_SIZE_V1: 26 size_t-sized fields, then 24 bytes.
assert ctypes.sizeof(Desc) == 26 * ctypes.sizeof(ctypes.c_size_t) + 24


def planar_desc(qh, kvh, q_len, kv_len, d, causal):
    """qkv_desc_planar() of the header, with the mask set."""
    desc = Desc()
    desc.struct_size = ctypes.sizeof(Desc)
    desc.q_heads, desc.kv_heads, desc.q_len, desc.kv_len = qh, kvh, q_len, kv_len
    desc.head_dim = desc.v_dim = d
    desc.q = Layout(q_len * d, d)
    desc.k = Layout(kv_len * d, d)
    desc.v = Layout(kv_len * d, d)
    desc.out = Layout(q_len * d, d)
    desc.mask = QKV_MASK_CAUSAL if causal else QKV_MASK_NONE
    desc.query_pos = QKV_QUERY_POS_TOP_LEFT
    return desc


def load_qkv(path):
    lib = ctypes.CDLL(path)
    fptr = ctypes.POINTER(ctypes.c_float)
    lib.qkv_attention_f32.argtypes = [ctypes.POINTER(Desc), fptr, fptr, fptr, fptr, fptr]
    lib.qkv_attention_f32.restype = ctypes.c_int32
    lib.qkv_status_str.argtypes = [ctypes.c_int32]
    lib.qkv_status_str.restype = ctypes.c_char_p
    lib.qkv_detected_isa.restype = ctypes.c_int32
    lib.qkv_isa_name.argtypes = [ctypes.c_int32]
    lib.qkv_isa_name.restype = ctypes.c_char_p
    lib.qkv_version.restype = ctypes.c_uint32
    return lib


def filled(n, seed):
    """n floats in [-1, 1): a pseudo-random block of a prime length, repeated (fast without
    numpy; the kernels' speed does not depend on the values)."""
    rng = random.Random(seed)
    block = array("f", (rng.uniform(-1.0, 1.0) for _ in range(4099)))
    reps = -(-n // len(block))
    a = block * reps
    del a[n:]
    return a


def ptr(a):
    return ctypes.cast(a.buffer_info()[0], ctypes.POINTER(ctypes.c_float))


def cpu_name():
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def parse_shape(spec):
    """QH[/KVH]xQ_LENxKV_LENxHEAD_DIM[,causal], as the bench example's --shape."""
    dims, _, opt = spec.partition(",")
    parts = dims.replace("×", "x").split("x")
    if len(parts) != 4 or opt not in ("", "causal"):
        raise ValueError(f"shape {spec!r}: expected QH[/KVH]xQ_LENxKV_LENxHEAD_DIM[,causal]")
    heads, q_len, kv_len, d = parts
    qh, _, kvh = heads.partition("/")
    qh, kvh = int(qh), int(kvh or qh)
    q_len, kv_len, d = int(q_len), int(kv_len), int(d)
    if min(qh, kvh, q_len, kv_len, d) <= 0 or qh % kvh:
        raise ValueError(f"shape {spec!r}: sizes must be positive, QH a multiple of KVH")
    return (spec, qh, kvh, q_len, kv_len, d, opt == "causal")


class Case:
    """One shape's buffers and its two calls."""

    def __init__(self, lib, torch, shape):
        self.name, qh, kvh, q_len, kv_len, d, causal = shape
        self.lib, self.torch = lib, torch
        self.desc = planar_desc(qh, kvh, q_len, kv_len, d, causal)
        self.q = filled(qh * q_len * d, 1)
        self.k = filled(kvh * kv_len * d, 2)
        self.v = filled(kvh * kv_len * d, 3)
        self.out = array("f", bytes(4 * qh * q_len * d))
        self.args = (ctypes.byref(self.desc), ptr(self.q), ptr(self.k), ptr(self.v),
                     ptr(self.out), None)
        self.torch_note = ""
        if torch is not None:
            view = lambda a, h, n: torch.frombuffer(a, dtype=torch.float32).view(1, h, n, d)
            self.tq = view(self.q, qh, q_len)
            self.tk, self.tv = view(self.k, kvh, kv_len), view(self.v, kvh, kv_len)
            self.gqa = {}
            if qh != kvh:
                try:
                    torch.nn.functional.scaled_dot_product_attention(
                        self.tq[:, :, :1], self.tk[:, :, :1], self.tv[:, :, :1],
                        enable_gqa=True)
                    self.gqa = {"enable_gqa": True}
                    self.torch_note = "enable_gqa"
                except TypeError:
                    # An older torch: K/V expanded to every query head beforehand.
                    group = qh // kvh
                    self.tk = self.tk.repeat_interleave(group, dim=1)
                    self.tv = self.tv.repeat_interleave(group, dim=1)
                    self.torch_note = "K/V repeated per head"
            self.causal = causal

    def run_qkv(self):
        status = self.lib.qkv_attention_f32(*self.args)
        if status != 0:
            raise RuntimeError(f"{self.name}: qkv: {self.lib.qkv_status_str(status).decode()}")

    def run_torch(self):
        return self.torch.nn.functional.scaled_dot_product_attention(
            self.tq, self.tk, self.tv, is_causal=self.causal, **self.gqa)

    def max_abs_diff(self):
        """Both once; the largest |qkv - torch| over the whole output."""
        self.run_qkv()
        expect = self.run_torch().reshape(-1)
        got = self.torch.frombuffer(self.out, dtype=self.torch.float32)
        return (got - expect).abs().max().item()


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds per shape (default 7)")
    ap.add_argument("--shape", action="append", default=[],
                    help="a shape name substring (prefill-4k, decode) or a custom shape "
                         "QH[/KVH]xQ_LENxKV_LENxHEAD_DIM[,causal]; repeatable")
    ap.add_argument("--lib", default=None,
                    help="qkv's shared library (default: target/release/libqkv.so of the repo)")
    ap.add_argument("--no-torch", action="store_true", help="time qkv alone")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    shapes = []
    for s in args.shape:
        if s[:1].isdigit():
            try:
                shapes.append(parse_shape(s))
            except ValueError as e:
                ap.error(str(e))
        else:
            hits = [x for x in SHAPES if s in x[0] and x not in shapes]
            if not any(s in x[0] for x in SHAPES):
                ap.error(f"no shape name contains {s!r}: {' '.join(x[0] for x in SHAPES)}")
            shapes += hits
    shapes = shapes or SHAPES

    suffix = {"darwin": "dylib", "win32": "dll"}.get(sys.platform, "so")
    path = args.lib or os.path.join(REPO, "target", "release", f"libqkv.{suffix}")
    if not os.path.exists(path):
        sys.exit(f"no {path}: build it first, from {REPO}:\n    {BUILD}")
    lib = load_qkv(path)

    torch = None
    if not args.no_torch:
        try:
            with warnings.catch_warnings():
                # torch warns at import when numpy is absent; nothing here needs numpy.
                warnings.simplefilter("ignore")
                import torch
        except ImportError:
            print("PyTorch is not importable (pip install torch): timing qkv alone\n")
    if torch is not None:
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass  # already set by an earlier parallel call

    v = lib.qkv_version()
    isa = lib.qkv_isa_name(lib.qkv_detected_isa()).decode()
    print(f"CPU: {cpu_name()}")
    print(f"qkv {v >> 16}.{(v >> 8) & 255}.{v & 255} ({isa}, one thread, {path})")
    if torch is not None:
        print(f"torch {torch.__version__} (F.scaled_dot_product_attention, "
              f"torch.set_num_threads(1)); f32, planar [heads][rows][dim], default scale")
        print(f"called alternately in one process; {args.rounds} rounds; ratio = torch time /"
              f" qkv time of the same round (> 1: qkv faster), median (min-max)\n")
        print("| shape (f32) | torch ms | qkv ms | qkv speed vs torch | max abs diff |")
        print("| --- | --- | --- | --- | --- |")
    else:
        print(f"{args.rounds} rounds, median\n")
        print("| shape (f32) | qkv ms |")
        print("| --- | --- |")

    for shape in shapes:
        case = Case(lib, torch, shape)
        if torch is None:
            case.run_qkv()
            t = [timed(case.run_qkv) for _ in range(args.rounds)]
            print(f"| {case.name} | {statistics.median(t) * 1e3:.2f} |", flush=True)
            continue
        diff = case.max_abs_diff()  # also the warm-up of both
        tq, tt = [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                tq.append(timed(case.run_qkv))
                tt.append(timed(case.run_torch))
            else:
                tt.append(timed(case.run_torch))
                tq.append(timed(case.run_qkv))
        ratios = [b / a for a, b in zip(tq, tt)]
        note = f" ({case.torch_note})" if case.torch_note else ""
        print(f"| {case.name}{note} | {statistics.median(tt) * 1e3:.2f} | "
              f"{statistics.median(tq) * 1e3:.2f} | {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f}) | {diff:.1e} |", flush=True)
        if not math.isfinite(diff) or diff > 1e-4:
            print(f"  ^ {case.name}: outputs differ by {diff:.2e}: not the same function?")


if __name__ == "__main__":
    main()
