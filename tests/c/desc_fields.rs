//! The fields of `qkv_desc` (`qkv::capi::QkvDesc`) as one list, so that the checks naming
//! them all agree: tests/public_api.rs destructures the struct with it (no `..`, so a field
//! missing here fails to compile there) and tests/c/layout.rs prints each one's offset and
//! size for the comparison with layout.c.

/// Calls `$then! { field, ... }` with the name of every field of `qkv_desc`, in declaration
/// order.
macro_rules! qkv_desc_fields {
    ($then:ident) => {
        $then! {
            // Version 1 (QKV_DESC_SIZE_V1): the shape, the layouts, the mask's window, the
            // bias, the counts, then the scalars.
            struct_size, q_heads, kv_heads, q_len, kv_len, head_dim, v_dim,
            q, k, v, out,
            window_left, window_right,
            bias, bias_layout,
            q_count, k_count, v_count, out_count, lse_count, bias_count,
            query_offset, scale, flags, mask, query_pos,
            // Version 2: the K/V storage types.
            k_type, v_type,
            // Version 3: the softmax variants.
            sinks, sinks_count, alibi, alibi_count, softcap, reserved,
            // Version 4: paged K/V.
            block_table, block_table_count, page_len, k_page_stride, v_page_stride,
            page_offset,
        }
    };
}
