/* Prints the ABI facts of include/qkv.h as C sees them: sizes, alignments, field offsets,
 * enum and macro values, one "name value" per line. tests/capi.rs compares this output with
 * layout.rs, which prints the same names from the Rust definitions in src/capi/. */
#include "qkv.h"

#include <stdio.h>

#define SIZE(t) printf("size %s %zu\n", #t, sizeof(t))
#define ALIGN(t) printf("align %s %zu\n", #t, (size_t)offsetof(struct { char c; t x; }, x))
#define FIELD(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(t, f))
#define FIELD_SIZE(t, f) printf("fieldsize %s.%s %zu\n", #t, #f, sizeof(((t *)0)->f))
#define VALUE(v) printf("value %s %lld\n", #v, (long long)(v))

int main(void) {
    SIZE(qkv_layout);
    ALIGN(qkv_layout);
    FIELD(qkv_layout, head_stride);
    FIELD(qkv_layout, row_stride);

    SIZE(qkv_desc);
    ALIGN(qkv_desc);
#define DESC(f) FIELD(qkv_desc, f); FIELD_SIZE(qkv_desc, f)
    DESC(struct_size);
    DESC(q_heads);
    DESC(kv_heads);
    DESC(q_len);
    DESC(kv_len);
    DESC(head_dim);
    DESC(v_dim);
    DESC(q);
    DESC(k);
    DESC(v);
    DESC(out);
    DESC(window_left);
    DESC(window_right);
    DESC(bias);
    DESC(bias_layout);
    DESC(q_count);
    DESC(k_count);
    DESC(v_count);
    DESC(out_count);
    DESC(lse_count);
    DESC(bias_count);
    DESC(query_offset);
    DESC(scale);
    DESC(flags);
    DESC(mask);
    DESC(query_pos);
    DESC(k_type);
    DESC(v_type);
    DESC(sinks);
    DESC(sinks_count);
    DESC(alibi);
    DESC(alibi_count);
    DESC(softcap);
    DESC(reserved);
    DESC(block_table);
    DESC(block_table_count);
    DESC(page_len);
    DESC(k_page_stride);
    DESC(v_page_stride);
    DESC(page_offset);
    SIZE(qkv_status);
    SIZE(qkv_plan);
    ALIGN(qkv_plan);
    FIELD(qkv_plan, q_block);
    FIELD(qkv_plan, kv_block);
    FIELD(qkv_plan, tasks);
    FIELD(qkv_plan, partial_len);

    VALUE(QKV_OK);
    VALUE(QKV_ERR_ZERO_DIM);
    VALUE(QKV_ERR_HEADS_NOT_DIVISIBLE);
    VALUE(QKV_ERR_TOO_SHORT);
    VALUE(QKV_ERR_OVERFLOW);
    VALUE(QKV_ERR_OVERLAP);
    VALUE(QKV_ERR_INVALID_SCALE);
    VALUE(QKV_ERR_UNSUPPORTED);
    VALUE(QKV_ERR_NULL_POINTER);
    VALUE(QKV_ERR_MISALIGNED);
    VALUE(QKV_ERR_ALIASING);
    VALUE(QKV_ERR_STRUCT_SIZE);
    VALUE(QKV_ERR_UNKNOWN_FLAGS);
    VALUE(QKV_ERR_UNKNOWN_MASK);
    VALUE(QKV_ERR_UNKNOWN_QUERY_POS);
    VALUE(QKV_ERR_UNKNOWN_ISA);
    VALUE(QKV_ERR_INTERNAL);
    VALUE(QKV_ERR_WORKSPACE_TOO_SMALL);
    VALUE(QKV_ERR_BLOCK_SIZE);
    VALUE(QKV_ERR_TYPE);
    VALUE(QKV_ERR_TASK);
    VALUE(QKV_ERR_INVALID_SOFTCAP);
    VALUE(QKV_ERR_VARIANT);
    VALUE(QKV_MASK_NONE);
    VALUE(QKV_MASK_CAUSAL);
    VALUE(QKV_MASK_BAND);
    VALUE(QKV_QUERY_POS_BOTTOM_RIGHT);
    VALUE(QKV_QUERY_POS_TOP_LEFT);
    VALUE(QKV_QUERY_POS_OFFSET);
    VALUE(QKV_ISA_SCALAR);
    VALUE(QKV_ISA_AVX2);
    VALUE(QKV_ISA_AVX512);
    VALUE(QKV_ISA_NEON);
    VALUE(QKV_FLAG_SCALE);
    VALUE(QKV_TYPE_F32);
    VALUE(QKV_TYPE_F16);
    VALUE(QKV_TYPE_BF16);
    VALUE(QKV_TYPE_Q8_0);
    VALUE(QKV_UNBOUNDED == SIZE_MAX);
    VALUE(QKV_DESC_SIZE_V1);
    VALUE(QKV_DESC_SIZE_V2);
    VALUE(QKV_DESC_SIZE_V3);
    VALUE(QKV_DESC_SIZE_V4);
    VALUE(QKV_DESC_MAX_SIZE);
    VALUE(QKV_VERSION);
    VALUE(QKV_VERSION_MAJOR);
    VALUE(QKV_VERSION_MINOR);
    VALUE(QKV_VERSION_PATCH);
    return 0;
}
