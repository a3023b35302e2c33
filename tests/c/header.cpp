// include/qkv.h from C++: compiles with -std=c++11 -Wall -Wextra -Werror -pedantic, and links
// against the library (which fails without the header's extern "C" guards).
#include "qkv.h"

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
    const size_t heads = 2, q_len = 3, kv_len = 5, dim = 4;
    qkv_desc d = qkv_desc_planar(heads, heads, q_len, kv_len, dim, dim);
    d.mask = QKV_MASK_CAUSAL;
    std::vector<float> q(heads * q_len * dim, 0.25f), k(heads * kv_len * dim, 0.5f);
    std::vector<float> v(heads * kv_len * dim, 1.0f), out(heads * q_len * dim, 0.0f);
    std::vector<float> lse(heads * q_len);
    qkv_status s = qkv_attention_f32(&d, q.data(), k.data(), v.data(), out.data(), lse.data());
    if (s != QKV_OK) {
        std::printf("FAIL: %s\n", qkv_status_str(s));
        return 1;
    }
    for (size_t i = 0; i < out.size(); i++) {
        if (std::fabs(out[i] - 1.0f) > 1e-6f) {
            std::printf("FAIL: out[%zu] = %g\n", i, out[i]);
            return 1;
        }
    }
    if (qkv_version() != QKV_VERSION) {
        std::printf("FAIL: version\n");
        return 1;
    }
    std::printf("PASS %s\n", qkv_isa_name(qkv_detected_isa()));
    return 0;
}
