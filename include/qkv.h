/**
 * @file qkv.h
 * @brief C interface of qkv: scaled dot-product attention over float arrays,
 *        out = softmax(scale * Q K^T + bias) V, without allocating.
 *
 * C99 and C++ (any version from C++98 on). include/build-c-libs.sh PREFIX builds and
 * installs the shared and static libraries with this header, pkg-config files and a CMake
 * package; then
 *   cc app.c $(pkg-config --cflags --libs qkv)          (shared), or
 *   cc app.c $(pkg-config --cflags --libs qkv-static)   (static).
 * A static link by hand needs -Wl,--gc-sections (see docs/c-api.md, also for the no_std
 * and firmware builds).
 *
 * Semantics are those of the Rust crate (`qkv::attention`): for query head h, row i and
 * kv head g = h / (q_heads / kv_heads), the keys j that row i includes are those inside its
 * mask band whose bias is not -inf and whose score
 * s_j = c(scale * dot(q[h][i], k[g][j])) + bias[h][i][j] + alibi[h] * (j - pos(i))
 * is not -inf, where c(x) = softcap * tanh(x / softcap) with a softcap (c(x) = x without),
 * the ALiBi term counts only with slopes, and pos(i) is the query's position (query_pos);
 * then out[h][i] = sum_j e^(s_j) v[g][j] / (e^(sink[h]) + sum_j e^(s_j)) and
 * lse[h][i] = ln(e^(sink[h]) + sum_j e^(s_j)), the sink counting only with sinks.
 * A row with no key gets out = 0 and lse = -inf (lse = sink[h] with sinks). Every check
 * runs before anything is written: on an error status, out and lse are untouched.
 *
 * Tensor layout: element [head][row][col] of a tensor lives at
 * head * head_stride + row * row_stride + col (in elements, not bytes).
 * q is [q_heads][q_len][head_dim], k is [kv_heads][kv_len][head_dim],
 * v is [kv_heads][kv_len][v_dim], out is [q_heads][q_len][v_dim],
 * bias is [q_heads][q_len][kv_len] and lse is [q_heads][q_len], dense.
 *
 * K/V TYPES. q, bias, out and lse are float. k and v are stored as desc->k_type and
 * desc->v_type say (QKV_TYPE_*, float when 0 or when the descriptor predates the fields):
 * float; IEEE half (QKV_TYPE_F16) or bfloat16 (QKV_TYPE_BF16), 2 bytes each; or ggml's
 * block_q8_0 (QKV_TYPE_Q8_0: 34 bytes, a half scale d then 32 int8 q, value d*q), in which
 * case head_dim (for k) or v_dim (for v) must be a multiple of 32 (QKV_ERR_BLOCK_SIZE).
 * Their strides, counts and extents count elements of their type: blocks for q8_0, so a
 * row of head_dim values is head_dim/32 blocks (qkv_desc_kv_types() converts the strides
 * of a descriptor made for values). Values are widened to float exactly as they are read;
 * every type is accumulated in float. A value that is no QKV_TYPE_*, or a type the library
 * was built without (Cargo features kv-f16, kv-bf16, kv-q8_0; all in the default build),
 * is QKV_ERR_TYPE.
 *
 * POINTER CONTRACT. Each tensor pointer must point to at least `len` elements of its type,
 * aligned to the type (4 bytes for float; 2 for half, bfloat16 and q8_0 blocks), where
 * `len` is the tensor's count field (q_count, ...) when that is nonzero and otherwise its
 * extent (V = values per element: 32 for q8_0, otherwise 1; the division rounds up):
 *   q    (q_heads-1)*q.head_stride    + (q_len-1)*q.row_stride    + head_dim
 *   k    (kv_heads-1)*k.head_stride   + (kv_len-1)*k.row_stride   + head_dim/V
 *   v    (kv_heads-1)*v.head_stride   + (kv_len-1)*v.row_stride   + v_dim/V
 *   out  (q_heads-1)*out.head_stride  + (q_len-1)*out.row_stride  + v_dim
 *   bias (q_heads-1)*bias_layout.head_stride + (q_len-1)*bias_layout.row_stride + kv_len
 *   lse  q_heads*q_len
 *   sinks, alibi  q_heads
 * An extent is 0 when any of its heads, rows or last dimension is 0; a pointer whose len
 * is 0 is never read and may be NULL. Extents are computed with checked arithmetic: one
 * that overflows size_t, or a len over PTRDIFF_MAX bytes, is QKV_ERR_OVERFLOW; a nonzero
 * count smaller than the extent is QKV_ERR_TOO_SHORT. q, k, v, bias, sinks and alibi are
 * only read and
 * may overlap each other (a stride of 0 broadcasts); out and lse are only written and must
 * not overlap each other or any input (QKV_ERR_ALIASING). Nobody else may write the inputs
 * or touch the outputs during a call. The descriptor needs no particular alignment and
 * must hold struct_size readable bytes.
 *
 * MEMORY. Nothing is allocated. The kernel works in a working memory ("workspace") of
 * floats: the _ws functions take it from the caller (qkv_workspace_size() floats for full
 * speed, at least qkv_workspace_min_size(); it needs no initialisation and holds nothing
 * between calls) and keep no tile on the stack: at most 2 KiB of stack on a Cortex-M4F
 * (measured, README "Firmware"). The other functions keep their workspace on the stack:
 * about 60 KiB in a library built with the default features (`stack-workspace`, hosted
 * targets; about 84 KiB when k or v is 16- or 8-bit), 232 bytes in one built without them
 * (firmware, any k and v types; one query row at a time, so slower: pass a workspace for
 * speed), where each uses at most 2 KiB of stack. qkv_merge_f32, qkv_stream_init,
 * qkv_stream_finish and the query functions keep no workspace.
 *
 * All functions are thread-safe and never abort, panic or unwind on any input.
 */
#ifndef QKV_H
#define QKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Major version of the library this header describes. */
#define QKV_VERSION_MAJOR 0
/** Minor version of the library this header describes. */
#define QKV_VERSION_MINOR 1
/** Patch version of the library this header describes. */
#define QKV_VERSION_PATCH 0
/** Packs a version as qkv_version() returns it: (major << 16) | (minor << 8) | patch. */
#define QKV_MAKE_VERSION(major, minor, patch) \
    ((uint32_t)(((uint32_t)(major) << 16) | ((uint32_t)(minor) << 8) | (uint32_t)(patch)))
/** This header's version, packed; compare with qkv_version() at run time. */
#define QKV_VERSION QKV_MAKE_VERSION(QKV_VERSION_MAJOR, QKV_VERSION_MINOR, QKV_VERSION_PATCH)

/** Returned by every fallible function: QKV_OK or one of the QKV_ERR_* codes. */
typedef int32_t qkv_status;

/** Status codes. Values are stable; new ones are only ever appended. */
enum qkv_status_code {
    /** Success. */
    QKV_OK = 0,
    /** q_heads, kv_heads, head_dim or v_dim is 0 (q_len = 0 and kv_len = 0 are fine), or
     *  page_len with a block_table. */
    QKV_ERR_ZERO_DIM = 1,
    /** q_heads is not a multiple of kv_heads. */
    QKV_ERR_HEADS_NOT_DIVISIBLE = 2,
    /** A nonzero count field is smaller than the extent its shape and strides reach; also a
     *  key range outside 0..kv_len (qkv_partial_f32(), qkv_stream_update()), and ragged
     *  offsets that do not describe the tensors (qkv_attention_ragged_f32(): fewer than 2
     *  entries, not starting at 0, decreasing, or not ending at q_len and kv_len). */
    QKV_ERR_TOO_SHORT = 3,
    /** An extent overflows size_t, or a length exceeds PTRDIFF_MAX bytes. */
    QKV_ERR_OVERFLOW = 4,
    /** The strides of out make two of its elements share memory. */
    QKV_ERR_OVERLAP = 5,
    /** The scale in use is NaN or infinite. */
    QKV_ERR_INVALID_SCALE = 6,
    /** The requested instruction set is not available on this CPU or in this build. */
    QKV_ERR_UNSUPPORTED = 7,
    /** desc is NULL, or a tensor pointer is NULL while its length is not 0. */
    QKV_ERR_NULL_POINTER = 8,
    /** A tensor pointer whose length is not 0 is not aligned to its type (4 bytes for
     *  float, 2 for half, bfloat16 and q8_0 blocks). */
    QKV_ERR_MISALIGNED = 9,
    /** out or lse overlaps another buffer of the call. */
    QKV_ERR_ALIASING = 10,
    /** struct_size is below QKV_DESC_SIZE_V1, above QKV_DESC_MAX_SIZE, or larger than
     *  this library's qkv_desc with a nonzero byte past its end. */
    QKV_ERR_STRUCT_SIZE = 11,
    /** flags has a bit this library does not know. */
    QKV_ERR_UNKNOWN_FLAGS = 12,
    /** mask is not a QKV_MASK_* value. */
    QKV_ERR_UNKNOWN_MASK = 13,
    /** query_pos is not a QKV_QUERY_POS_* value. */
    QKV_ERR_UNKNOWN_QUERY_POS = 14,
    /** The isa argument is not a QKV_ISA_* value. */
    QKV_ERR_UNKNOWN_ISA = 15,
    /** A bug in the library; never returned by a correct build. */
    QKV_ERR_INTERNAL = 16,
    /** The workspace of a _ws call holds fewer floats than qkv_workspace_min_size(). */
    QKV_ERR_WORKSPACE_TOO_SMALL = 17,
    /** k is stored as QKV_TYPE_Q8_0 and head_dim, or v is and v_dim, is not a multiple of
     *  32 (the values of a block). Checked after every pointer, as the shape is. */
    QKV_ERR_BLOCK_SIZE = 18,
    /** k_type or v_type is not a QKV_TYPE_* value, or names a type this library was built
     *  without. Checked right after mask and query_pos. */
    QKV_ERR_TYPE = 19,
    /** qkv_plan_run_task(): the task index is not below plan->tasks as the descriptor
     *  gives it. */
    QKV_ERR_TASK = 20,
    /** softcap is neither 0 (none) nor finite and positive. */
    QKV_ERR_INVALID_SOFTCAP = 21,
    /** sinks, alibi or softcap is set, and the library was built without them (Cargo
     *  feature softmax-variants, in the default build; firmware builds leave it out), or
     *  block_table is, without paged K/V (feature paged-kv, likewise). */
    QKV_ERR_VARIANT = 22
};

/** Values of qkv_desc.k_type and qkv_desc.v_type: how k and v are stored. */
enum qkv_kv_type {
    /** float, 4 bytes, aligned to 4 (0: the default, and what an older descriptor means). */
    QKV_TYPE_F32 = 0,
    /** IEEE 754 binary16 (_Float16, __fp16), 2 bytes, aligned to 2. */
    QKV_TYPE_F16 = 1,
    /** bfloat16 (the upper half of a float), 2 bytes, aligned to 2. */
    QKV_TYPE_BF16 = 2,
    /** ggml's block_q8_0: a binary16 scale d then int8_t q[32] (value i = d * q[i]), 34
     *  bytes, aligned to 2; strides, counts and extents count blocks. */
    QKV_TYPE_Q8_0 = 3
};

/** Values of qkv_desc.mask: which keys each query row sees. */
enum qkv_mask_kind {
    /** Every key is visible to every query; the window fields are ignored, and the query
     *  position only places the queries for ALiBi. */
    QKV_MASK_NONE = 0,
    /** Causal: the query at position pos sees keys 0..=pos; window fields are ignored. */
    QKV_MASK_CAUSAL = 1,
    /** The band pos - window_left ..= pos + window_right; a side equal to QKV_UNBOUNDED
     *  has no limit (left = w, right = 0 is a causal sliding window). */
    QKV_MASK_BAND = 2
};

/** Values of qkv_desc.query_pos: the position pos of query row i among keys 0..kv_len. */
enum qkv_query_pos {
    /** pos = kv_len - q_len + i: the queries are the last q_len positions (KV cache). */
    QKV_QUERY_POS_BOTTOM_RIGHT = 0,
    /** pos = i. */
    QKV_QUERY_POS_TOP_LEFT = 1,
    /** pos = query_offset + i; query_offset may be negative. */
    QKV_QUERY_POS_OFFSET = 2
};

/** Instruction sets the kernel is compiled for (the values of Rust's qkv::Isa). */
enum qkv_isa {
    /** Plain float code, one lane: every target. */
    QKV_ISA_SCALAR = 0,
    /** x86-64 AVX2 + FMA, 8 lanes. */
    QKV_ISA_AVX2 = 1,
    /** x86-64 AVX-512 F/BW/CD/DQ/VL, 16 lanes (needs the x86-v4 feature). */
    QKV_ISA_AVX512 = 2,
    /** aarch64 NEON, 4 lanes. */
    QKV_ISA_NEON = 3
};

/** qkv_desc.flags bit: use qkv_desc.scale; without it the scale is 1/sqrt(head_dim). */
#define QKV_FLAG_SCALE 1u

/** window_left / window_right value meaning "no limit on this side". */
#define QKV_UNBOUNDED SIZE_MAX

/** Size of the first version of qkv_desc: 26 size_t-sized fields, then 24 bytes. A
 *  descriptor of this size (a caller built against an older header) has float k and v. */
#define QKV_DESC_SIZE_V1 (26 * sizeof(size_t) + 24)

/** Size of the second version: QKV_DESC_SIZE_V1 then k_type and v_type. */
#define QKV_DESC_SIZE_V2 (QKV_DESC_SIZE_V1 + 8)

/** Size of the third version: QKV_DESC_SIZE_V2 then sinks, sinks_count, alibi,
 *  alibi_count, softcap and reserved. */
#define QKV_DESC_SIZE_V3 (QKV_DESC_SIZE_V2 + 4 * sizeof(size_t) + 8)

/** Size of the fourth version, this header's: QKV_DESC_SIZE_V3 then block_table,
 *  block_table_count, page_len, k_page_stride, v_page_stride and page_offset. */
#define QKV_DESC_SIZE_V4 (QKV_DESC_SIZE_V3 + 6 * sizeof(size_t))

/** The largest struct_size the library accepts (nothing past it is ever read). */
#define QKV_DESC_MAX_SIZE 4096

/** Where a tensor's elements live: [head][row][col] is at
 *  head * head_stride + row * row_stride + col, in elements of the tensor's type (floats;
 *  for k and v, elements of k_type and v_type: blocks for q8_0). */
typedef struct qkv_layout {
    /** Elements between the starts of consecutive heads. */
    size_t head_stride;
    /** Elements between the starts of consecutive rows of one head. */
    size_t row_stride;
} qkv_layout;

/**
 * Everything an attention call needs besides the tensor pointers.
 *
 * Start from qkv_desc_planar(), or zero it and set struct_size = sizeof(qkv_desc): all-zero
 * fields mean default scale, no mask, bottom-right alignment, no bias, lengths derived from
 * the shape. Later versions only append fields, whose zero value keeps the old behaviour;
 * the library accepts any struct_size from QKV_DESC_SIZE_V1 to its own sizeof, and a larger
 * one (up to QKV_DESC_MAX_SIZE) when every byte past its own sizeof is zero.
 */
typedef struct qkv_desc {
    /** sizeof(qkv_desc) as the caller compiled it. */
    size_t struct_size;
    /** Number of query (and output) heads; a multiple of kv_heads. */
    size_t q_heads;
    /** Number of key/value heads; query head h reads kv head h / (q_heads / kv_heads). */
    size_t kv_heads;
    /** Query rows per head (0 is a no-op). */
    size_t q_len;
    /** Keys (and values) per kv head (0: every out row is 0, every lse is -inf). */
    size_t kv_len;
    /** Length of each query and key vector. */
    size_t head_dim;
    /** Length of each value and output vector. */
    size_t v_dim;
    /** Layout of q. */
    qkv_layout q;
    /** Layout of k. */
    qkv_layout k;
    /** Layout of v. */
    qkv_layout v;
    /** Layout of out; its elements must not share memory (QKV_ERR_OVERLAP). */
    qkv_layout out;
    /** QKV_MASK_BAND only: keys at most this many positions before the query, or
     *  QKV_UNBOUNDED. */
    size_t window_left;
    /** QKV_MASK_BAND only: keys at most this many positions after the query, or
     *  QKV_UNBOUNDED; 0 is causal. */
    size_t window_right;
    /** Additive bias [q_heads][q_len][kv_len] laid out as bias_layout says, added after
     *  scaling; -inf masks a key. NULL for none. */
    const float *bias;
    /** Strides of bias; a head stride of 0 shares one matrix across heads. */
    qkv_layout bias_layout;
    /** Floats q points to, or 0 to use its extent. */
    size_t q_count;
    /** Elements of k_type k points to, or 0 to use its extent. */
    size_t k_count;
    /** Elements of v_type v points to, or 0 to use its extent. */
    size_t v_count;
    /** Floats out points to, or 0 to use its extent. */
    size_t out_count;
    /** Floats lse points to, or 0 to use q_heads * q_len; ignored when lse is NULL. */
    size_t lse_count;
    /** Floats bias points to, or 0 to use its extent; ignored when bias is NULL. */
    size_t bias_count;
    /** QKV_QUERY_POS_OFFSET only: the position of query row 0. */
    int64_t query_offset;
    /** Factor applied to every q.k; used only when flags has QKV_FLAG_SCALE. */
    float scale;
    /** QKV_FLAG_* bits; an unknown bit is QKV_ERR_UNKNOWN_FLAGS. */
    uint32_t flags;
    /** A QKV_MASK_* value. */
    int32_t mask;
    /** A QKV_QUERY_POS_* value (used by QKV_MASK_CAUSAL, QKV_MASK_BAND and ALiBi). */
    int32_t query_pos;
    /** Since version 2: a QKV_TYPE_* value, how k is stored (0 is float). */
    uint32_t k_type;
    /** Since version 2: a QKV_TYPE_* value, how v is stored (0 is float). */
    uint32_t v_type;
    /** Since version 3: one sink logit per query head, or NULL for none. A sink joins
     *  every row of its head as one more key, always visible, with score sinks[h] and a
     *  value row of zeros; -INFINITY is no sink. Partials (qkv_partial_f32) leave it out:
     *  qkv_add_sinks_f32() adds it once after the merges. */
    const float *sinks;
    /** Floats sinks points to, or 0 to use q_heads; ignored when sinks is NULL. */
    size_t sinks_count;
    /** Since version 3: one ALiBi slope per query head, or NULL for none: the bias
     *  alibi[h] * (j - pos(i)) computed by the library, pos(i) as query_pos says (also
     *  without a mask). */
    const float *alibi;
    /** Floats alibi points to, or 0 to use q_heads; ignored when alibi is NULL. */
    size_t alibi_count;
    /** Since version 3: the softcap cap: each scaled score s becomes cap * tanh(s / cap)
     *  before the bias, ALiBi and the mask; 0 for none, otherwise finite and positive
     *  (QKV_ERR_INVALID_SOFTCAP). */
    float softcap;
    /** Zero. */
    uint32_t reserved;
    /** Since version 4: paged K and V. The block table, or NULL: k and v then hold the keys
     *  in order. With a table, k and v are pools of pages of page_len keys: key j is row
     *  (page_offset + j) % page_len of page block_table[(page_offset + j) / page_len], page p
     *  starts at element p * k_page_stride of k (p * v_page_stride of v), and the k and v
     *  layouts lay out one page (NHD [pages][page_len][kv_heads][dim]: interleaved strides;
     *  HND [pages][kv_heads][page_len][dim]: planar strides over page_len rows). The extent
     *  of k and v is then what the table's pages reach. */
    const uint32_t *block_table;
    /** Entries block_table points to, or 0 for (page_offset + kv_len) / page_len rounded
     *  up; ignored when block_table is NULL. */
    size_t block_table_count;
    /** Keys per page; 0 with a table is QKV_ERR_ZERO_DIM. */
    size_t page_len;
    /** Elements of k_type from one page of k to the next. */
    size_t k_page_stride;
    /** Elements of v_type from one page of v to the next. */
    size_t v_page_stride;
    /** The row of key 0 in the table's first page; usually 0. */
    size_t page_offset;
} qkv_desc;

/** Compile-time check (C99 and C++) that this compiler lays qkv_desc out without padding,
 *  as the library does; a negative array size fails the build. */
typedef char qkv_desc_has_no_padding_[(sizeof(qkv_desc) == QKV_DESC_SIZE_V4) ? 1 : -1];

/**
 * A descriptor for planar [heads][rows][dim] tensors, packed densely: default scale
 * 1/sqrt(head_dim), no mask, no bias, lengths derived from the shape, float k and v (see
 * qkv_desc_kv_types() for others).
 */
static inline qkv_desc qkv_desc_planar(size_t q_heads, size_t kv_heads, size_t q_len,
                                       size_t kv_len, size_t head_dim, size_t v_dim) {
    qkv_desc d;
    d.struct_size = sizeof(qkv_desc);
    d.q_heads = q_heads;
    d.kv_heads = kv_heads;
    d.q_len = q_len;
    d.kv_len = kv_len;
    d.head_dim = head_dim;
    d.v_dim = v_dim;
    d.q.head_stride = q_len * head_dim;
    d.q.row_stride = head_dim;
    d.k.head_stride = kv_len * head_dim;
    d.k.row_stride = head_dim;
    d.v.head_stride = kv_len * v_dim;
    d.v.row_stride = v_dim;
    d.out.head_stride = q_len * v_dim;
    d.out.row_stride = v_dim;
    d.window_left = 0;
    d.window_right = 0;
    d.bias = NULL;
    d.bias_layout.head_stride = 0;
    d.bias_layout.row_stride = 0;
    d.q_count = 0;
    d.k_count = 0;
    d.v_count = 0;
    d.out_count = 0;
    d.lse_count = 0;
    d.bias_count = 0;
    d.query_offset = 0;
    d.scale = 0.0f;
    d.flags = 0;
    d.mask = QKV_MASK_NONE;
    d.query_pos = QKV_QUERY_POS_BOTTOM_RIGHT;
    d.k_type = QKV_TYPE_F32;
    d.v_type = QKV_TYPE_F32;
    d.sinks = NULL;
    d.sinks_count = 0;
    d.alibi = NULL;
    d.alibi_count = 0;
    d.softcap = 0.0f;
    d.reserved = 0;
    d.block_table = NULL;
    d.block_table_count = 0;
    d.page_len = 0;
    d.k_page_stride = 0;
    d.v_page_stride = 0;
    d.page_offset = 0;
    return d;
}

/**
 * A descriptor for interleaved [seq][heads][dim] tensors (the usual KV-cache layout),
 * packed densely: q and out have q_heads heads per row, k and v kv_heads (GQA). Otherwise
 * as qkv_desc_planar(): default scale, no mask, no bias, lengths derived from the shape.
 */
static inline qkv_desc qkv_desc_interleaved(size_t q_heads, size_t kv_heads, size_t q_len,
                                            size_t kv_len, size_t head_dim, size_t v_dim) {
    qkv_desc d = qkv_desc_planar(q_heads, kv_heads, q_len, kv_len, head_dim, v_dim);
    d.q.head_stride = head_dim;
    d.q.row_stride = q_heads * head_dim;
    d.k.head_stride = head_dim;
    d.k.row_stride = kv_heads * head_dim;
    d.v.head_stride = v_dim;
    d.v.row_stride = kv_heads * v_dim;
    d.out.head_stride = v_dim;
    d.out.row_stride = q_heads * v_dim;
    return d;
}

/**
 * d with k stored as k_type and v as v_type (QKV_TYPE_* values), its k and v strides, given
 * in values as qkv_desc_planar() and qkv_desc_interleaved() give them, turned into elements
 * of those types (divided by 32 for QKV_TYPE_Q8_0, unchanged for the others), and the page
 * strides likewise. Set k_count and v_count, if any, in elements too.
 */
static inline qkv_desc qkv_desc_kv_types(qkv_desc d, uint32_t k_type, uint32_t v_type) {
    size_t kn = k_type == QKV_TYPE_Q8_0 ? 32 : 1, vn = v_type == QKV_TYPE_Q8_0 ? 32 : 1;
    d.k_type = k_type;
    d.v_type = v_type;
    d.k.head_stride /= kn;
    d.k.row_stride /= kn;
    d.v.head_stride /= vn;
    d.v.row_stride /= vn;
    d.k_page_stride /= kn;
    d.v_page_stride /= vn;
    return d;
}

/**
 * Attention with the best instruction set this CPU supports (qkv_detected_isa()).
 *
 * @param desc the call's descriptor; not kept after the call.
 * @param q, k, v the inputs, each following the pointer contract (see the top of this file);
 *                k and v of desc->k_type and desc->v_type.
 * @param out receives [q_heads][q_len][v_dim] as desc->out says.
 * @param lse NULL, or receives the natural log of each row's softmax denominator,
 *            [q_heads][q_len], dense.
 * @return QKV_OK, or an error status and nothing written.
 */
qkv_status qkv_attention_f32(const qkv_desc *desc, const float *q, const void *k,
                             const void *v, float *out, float *lse);

/**
 * qkv_attention_f32() in the caller's workspace: workspace_len floats at workspace
 * (qkv_workspace_size(desc) for full speed, at least qkv_workspace_min_size(desc); fewer is
 * QKV_ERR_WORKSPACE_TOO_SMALL, after every other check). The workspace needs no
 * initialisation, must not overlap any other buffer of the call (QKV_ERR_ALIASING), and
 * may be NULL only when workspace_len is 0. The stack holds no tile: under 2 KiB.
 */
qkv_status qkv_attention_f32_ws(const qkv_desc *desc, const float *q, const void *k,
                                const void *v, float *out, float *lse, float *workspace,
                                size_t workspace_len);

/** The floats of workspace with which the _ws functions run at full speed for desc (only
 *  its shape fields, k_type and v_type count): at most about 15,300 (60 KiB) for float k
 *  and v, up to about 6,100 more when either is narrower (the tile its values are widened
 *  into); less for small heads, short queries and narrow values. 0 if desc is NULL, its
 *  struct_size is not accepted or a type is unknown (QKV_ERR_TYPE). */
size_t qkv_workspace_size(const qkv_desc *desc);

/** The fewest floats of workspace the _ws functions run in for desc (58 whatever the shape
 *  and types: tiles of one row, 16 keys, 16 value columns, k and v read as stored). 0 as
 *  qkv_workspace_size(). */
size_t qkv_workspace_min_size(const qkv_desc *desc);

/**
 * qkv_attention_f32() forced to the instruction set isa (a QKV_ISA_* value), for tests and
 * benchmarks. QKV_ERR_UNKNOWN_ISA for a value that is no QKV_ISA_*, QKV_ERR_UNSUPPORTED
 * (after every other check) for a level this CPU or build lacks.
 */
qkv_status qkv_attention_f32_isa(int32_t isa, const qkv_desc *desc, const float *q,
                                 const void *k, const void *v, float *out, float *lse);

/**
 * The reference implementation: the same function computed in double precision, two-pass,
 * with the same arguments, checks and statuses as qkv_attention_f32(). Slow; for tests.
 */
qkv_status qkv_reference_f32(const qkv_desc *desc, const float *q, const void *k,
                             const void *v, float *out, float *lse);

/** The QKV_ISA_* level qkv_attention_f32() uses on this CPU (detected once, cached). */
int32_t qkv_detected_isa(void);

/** 1 if the level isa is compiled in and this CPU and OS can run it, else 0 (also for an
 *  unknown value). */
int32_t qkv_isa_available(int32_t isa);

/** The lowercase name of isa ("scalar", "avx2", "avx512", "neon"), or "unknown".
 *  Static, NUL-terminated, never NULL. */
const char *qkv_isa_name(int32_t isa);

/** A short English description of status, or "unknown status". Static, NUL-terminated,
 *  never NULL. */
const char *qkv_status_str(qkv_status status);

/** The version of the linked library, packed as QKV_MAKE_VERSION does; compare with
 *  QKV_VERSION. */
uint32_t qkv_version(void);

/* ---- Split-KV (flash-decoding): src/capi/split.rs, docs/c-api.md ------------------ */

/**
 * Attention over the keys key_start..key_end (end excluded) of the problem desc describes:
 * out is normalised over the included keys of that range and lse (required,
 * [q_heads][q_len]) receives their log-sum-exp; a row with no key in the range gets out 0
 * and lse -INFINITY. Masks keep absolute key positions and the bias is read at the range's
 * columns. q, k, v, bias and out are those of the whole problem (same pointer contract as
 * qkv_attention_f32(), lse treated like out). A range outside 0..kv_len, or with
 * key_start > key_end, is QKV_ERR_TOO_SHORT. Nothing is written on error.
 */
qkv_status qkv_partial_f32(const qkv_desc *desc, const float *q, const void *k,
                           const void *v, size_t key_start, size_t key_end, float *out,
                           float *lse);

/** qkv_partial_f32() in the caller's workspace, as qkv_attention_f32_ws(). */
qkv_status qkv_partial_f32_ws(const qkv_desc *desc, const float *q, const void *k,
                              const void *v, size_t key_start, size_t key_end, float *out,
                              float *lse, float *workspace, size_t workspace_len);

/**
 * Joins the partial (out_b, lse_b) into (out_a, lse_a), so that a holds the result over
 * both (disjoint) key ranges: with m = max(lse_a, lse_b), w = exp(lse - m),
 * out = (w_a out_a + w_b out_b) / (w_a + w_b), lse = m + log(w_a + w_b). A -INFINITY lse
 * contributes nothing; NaN propagates. Only desc's shape, out layout, out_count and
 * lse_count are used: both outs have the out layout, both lse are [q_heads][q_len].
 * out_a and lse_a must not overlap each other or out_b/lse_b. Nothing is written on error.
 */
qkv_status qkv_merge_f32(const qkv_desc *desc, float *out_a, float *lse_a,
                         const float *out_b, const float *lse_b);

/**
 * Merges desc's sinks into a result merged from partials (out, lse required), which never
 * count them: row i of head h becomes its merge with a partial of zeros and lse sinks[h].
 * Call it once, after the last qkv_merge_f32(). Only desc's shape, out layout, counts and
 * sinks are used; with sinks NULL it changes nothing. Nothing is written on error.
 */
qkv_status qkv_add_sinks_f32(const qkv_desc *desc, float *out, float *lse);

/* ---- Streaming: a caller-owned state fed K/V chunks (pages, single tokens) ------------ */

/** Writes to *len the number of floats a stream state for desc needs:
 *  q_heads * q_len * (3 + 2 * v_dim). */
qkv_status qkv_stream_state_len(const qkv_desc *desc, size_t *len);

/** Starts a stream with no key in state (state_len floats, at least
 *  qkv_stream_state_len()). Pass the same desc to every later call on this state. */
qkv_status qkv_stream_init(const qkv_desc *desc, float *state, size_t state_len);

/**
 * Feeds the keys at absolute positions key_start..key_end (end excluded): k and v hold
 * only those keys' rows (row 0 is key key_start) with the strides of desc->k and desc->v
 * and are taken to hold that many rows (k_count and v_count are ignored) -- or, with a
 * block_table, k and v are the whole pools of pages (k_count and v_count apply); q and bias are
 * those of the whole problem. Chunks may have any size and come in any order; masks and
 * bias use absolute positions. A range outside 0..kv_len is QKV_ERR_TOO_SHORT. The state
 * is unchanged on error.
 */
qkv_status qkv_stream_update(const qkv_desc *desc, float *state, size_t state_len,
                             const float *q, const void *k, const void *v,
                             size_t key_start, size_t key_end);

/** qkv_stream_update() in the caller's workspace, as qkv_attention_f32_ws() (a
 *  workspace_len of 0 runs as qkv_stream_update()); it must not overlap state either. */
qkv_status qkv_stream_update_ws(const qkv_desc *desc, float *state, size_t state_len,
                                const float *q, const void *k, const void *v,
                                size_t key_start, size_t key_end, float *workspace,
                                size_t workspace_len);

/** Writes the attention over every key fed so far to out and, unless NULL, lse (rows that
 *  saw no key: 0 and -INFINITY). The state is left as it was; streaming can go on. */
qkv_status qkv_stream_finish(const qkv_desc *desc, float *state, size_t state_len,
                             float *out, float *lse);

/* ---- Plans: one call as tasks for the caller's threads: src/capi/plan.rs ------------ */

/**
 * How one call is cut into independent tasks: one kv head's group of query heads x a block
 * of query rows x a range of keys. Any thread pool, OpenMP loop or RTOS runs the tasks,
 * in any order and at the same time (each index once), each writing its own part of one
 * partial buffer of partial_len floats; qkv_plan_finish() then merges the key ranges into
 * out and lse. With q_block >= q_len and no key split the result is qkv_attention_f32()'s,
 * bit for bit; otherwise it agrees within the tolerance of a split-KV merge.
 *
 *     qkv_plan plan;
 *     qkv_plan_make(&desc, threads, &plan);
 *     float *partial = malloc(plan.partial_len * sizeof(float));
 *     #pragma omp parallel for
 *     for (size_t t = 0; t < plan.tasks; t++)
 *         qkv_plan_run_task(&plan, &desc, q, k, v, t, partial, NULL, 0);
 *     qkv_plan_finish(&plan, &desc, partial, out, lse);
 *
 * A caller may choose q_block and kv_block itself if it sets tasks and partial_len as
 * qkv_plan_make() would; the calls recompute both from desc and refuse a smaller
 * partial_len (QKV_ERR_TOO_SHORT). Stack: as the calls they wrap (qkv_plan_run_task()
 * as qkv_attention_f32() or, with a workspace, qkv_attention_f32_ws()).
 */
typedef struct qkv_plan {
    size_t q_block;     /* query rows per task */
    size_t kv_block;    /* keys per task; blocks of the same rows over other keys are merged */
    size_t tasks;       /* tasks, numbered from 0 (0: nothing to compute) */
    size_t partial_len; /* floats of the partial buffer */
} qkv_plan;

/** Fills *plan for `threads` threads: at least 8 * threads tasks where the query rows allow,
 *  over heads and query blocks shared evenly, and over keys (for 2 * threads tasks) only
 *  when those are fewer (decode) and threads > 1.
 *  Statuses as qkv_attention_f32() for desc's shape, mask and types; QKV_ERR_NULL_POINTER
 *  for a NULL plan. Nothing is written on error. */
qkv_status qkv_plan_make(const qkv_desc *desc, size_t threads, qkv_plan *plan);

/** Runs task `task` of plan over the problem desc describes (q, k, v and bias of the whole
 *  problem), writing its own part of partial (plan->partial_len floats) and nothing else.
 *  workspace as for qkv_attention_f32_ws() (NULL and 0: as qkv_attention_f32()); concurrent
 *  tasks need workspaces of their own. QKV_ERR_TASK for task >= the plan's tasks,
 *  QKV_ERR_TOO_SHORT for a partial_len below the plan's, otherwise the statuses of
 *  qkv_attention_f32_ws(). Nothing is written on error. */
qkv_status qkv_plan_run_task(const qkv_plan *plan, const qkv_desc *desc, const float *q,
                             const void *k, const void *v, size_t task, float *partial,
                             float *workspace, size_t workspace_len);

/** Merges the partials every task of plan wrote into out and, unless NULL, lse, laid out as
 *  by qkv_attention_f32(). Uses desc's shape, out layout, out_count and lse_count. Nothing
 *  is written on error. */
qkv_status qkv_plan_finish(const qkv_plan *plan, const qkv_desc *desc, const float *partial,
                           float *out, float *lse);

/** qkv_attention_f32() on the calling thread and the threads of the library's own pool
 *  (rayon's global pool, one thread per CPU; the library built with the `parallel`
 *  feature, which needs std): the caller takes tasks too, so the call starts at once even
 *  while the pool's threads sleep. Same arguments, statuses and results up to the merge's
 *  rounding. */
qkv_status qkv_attention_parallel_f32(const qkv_desc *desc, const float *q, const void *k,
                                      const void *v, float *out, float *lse);

/* ---- Ragged batches: sequences of different lengths in one call: src/capi/ragged.rs ---- */

/**
 * Attention over a ragged batch: offsets_len - 1 sequences of different lengths packed along
 * the rows of q, k, v and out, as FlashAttention's varlen API packs them. Sequence b owns
 * query rows cu_q[b]..cu_q[b+1] and keys cu_k[b]..cu_k[b+1] (end excluded); desc
 * describes the packed tensors, its q_len and kv_len being the totals, usually
 * qkv_desc_interleaved() ([total][heads][dim]). Each sequence is a problem of its own: the
 * mask aligned to its own lengths (causal bottom-right per sequence), its block of a
 * [q_heads][q_len][kv_len] bias, the same scale, softcap, sinks and ALiBi slopes; its rows
 * are, bit for bit, what qkv_attention_f32() gives for the sequence alone. Sequences may be
 * empty.
 *
 *     size_t cu_q[] = {0, 3, 3, 5}, cu_k[] = {0, 5, 9, 16};   // 3 sequences, one empty
 *     qkv_desc d = qkv_desc_interleaved(8, 2, 5, 16, 64, 64);  // the totals: 5 rows, 16 keys
 *     d.mask = QKV_MASK_CAUSAL;
 *     qkv_status s = qkv_attention_ragged_f32(&d, cu_q, cu_k, 4, q, k, v, out, lse);
 *
 * @param desc the packed call's descriptor (k_type, v_type, bias, variants and pages as for
 *             qkv_attention_f32(); a block_table maps the packed keys); not kept.
 * @param cu_q, cu_k offsets_len cumulative query rows and keys each: start at 0, never
 *                   decrease, end at q_len and kv_len. Read only; may be NULL only when
 *                   offsets_len is 0 (which is QKV_ERR_TOO_SHORT: no sequence).
 * @param offsets_len entries of cu_q and of cu_k: the number of sequences plus one.
 * @param q, k, v, out the packed tensors, each following the pointer contract.
 * @param lse NULL, or receives [q_heads][q_len] over the total rows, dense.
 * @return QKV_OK, or an error status and nothing written: those of qkv_attention_f32();
 *         then, after its pointer checks, cu_q and cu_k (QKV_ERR_NULL_POINTER,
 *         QKV_ERR_MISALIGNED to size_t, QKV_ERR_ALIASING when out or lse overlaps them);
 *         QKV_ERR_TOO_SHORT, after the descriptor's own checks, for offsets that do not
 *         describe the tensors.
 *
 * In the library built with the Cargo feature capi-ragged (default); firmware builds
 * (--no-default-features) leave the ragged functions out.
 */
qkv_status qkv_attention_ragged_f32(const qkv_desc *desc, const size_t *cu_q,
                                    const size_t *cu_k, size_t offsets_len, const float *q,
                                    const void *k, const void *v, float *out, float *lse);

/** qkv_attention_ragged_f32() on the threads of the library's own pool (rayon; the library
 *  built with the `parallel` feature, which needs std), the sequences and each sequence's
 *  tasks one pool of work. Same arguments and statuses; each sequence's rows are what
 *  qkv_attention_parallel_f32() gives for it alone (up to the merge's rounding). */
qkv_status qkv_attention_ragged_parallel_f32(const qkv_desc *desc, const size_t *cu_q,
                                             const size_t *cu_k, size_t offsets_len,
                                             const float *q, const void *k, const void *v,
                                             float *out, float *lse);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* QKV_H */
