//! The buffers of one call in `every_entry_point_returns_each_error_as_its_status`: every
//! buffer an entry point may be given, and the call of each [`Entry`] with them.

use super::*;

/// Every buffer a call may be given, generously sized, inputs as data and outputs (and the
/// stream state) as a sentinel.
pub(super) struct Buffers {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
    lse: Vec<f32>,
    out_b: Vec<f32>,
    lse_b: Vec<f32>,
    state: Vec<f32>,
    ws: Vec<f32>,
}

impl Buffers {
    pub(super) fn new() -> Buffers {
        Buffers {
            q: data(ROOM, 1),
            k: data(ROOM, 2),
            v: data(ROOM, 3),
            out: vec![7.0; ROOM],
            lse: vec![7.0; ROOM],
            out_b: data(ROOM, 4),
            lse_b: data(ROOM, 5),
            state: vec![7.0; ROOM],
            ws: vec![7.0; WS_ROOM],
        }
    }

    pub(super) fn snapshot(&self) -> Vec<Vec<u32>> {
        let all = [
            &self.q,
            &self.k,
            &self.v,
            &self.out,
            &self.lse,
            &self.out_b,
            &self.lse_b,
            &self.state,
            &self.ws,
        ];
        all.iter()
            .map(|b| b.iter().map(|x| x.to_bits()).collect())
            .collect()
    }

    /// Calls `entry` with the arguments of `c`.
    pub(super) fn call(&mut self, entry: Entry, c: &Case) -> QkvStatus {
        let d = &c.desc;
        let q = self.q.as_ptr();
        let (k, v) = (self.k.as_ptr().cast(), self.v.as_ptr().cast());
        let (out, lse) = (self.out.as_mut_ptr(), self.lse.as_mut_ptr());
        let (ob, lb) = (self.out_b.as_ptr(), self.lse_b.as_ptr());
        let state = self.state.as_mut_ptr();
        let (ks, ke) = (c.keys.start, c.keys.end);
        let (ws, wl) = (self.ws.as_mut_ptr(), c.ws_len);
        // Two sequences over the descriptor's totals, unless the case has offsets of its own.
        let (cu_q, cu_k) = c
            .offsets
            .unwrap_or(([0, d.q_len.min(1), d.q_len], [0, d.kv_len.min(2), d.kv_len]));
        let (cq, ck) = (cu_q.as_ptr(), cu_k.as_ptr());
        // SAFETY: every buffer holds `ROOM` floats, more than any length the cases' counts
        // and extents derive (`state_len` is at most `ROOM`); the outputs are distinct; the
        // offsets are 3 `usize`s each.
        unsafe {
            match entry {
                Entry::Attention => qkv_attention_f32(d, q, k, v, out, lse),
                Entry::AttentionWs => qkv_attention_f32_ws(d, q, k, v, out, lse, ws, wl),
                Entry::AttentionIsa => qkv_attention_f32_isa(c.isa, d, q, k, v, out, lse),
                Entry::Reference => qkv_reference_f32(d, q, k, v, out, lse),
                Entry::Partial => qkv_partial_f32(d, q, k, v, ks, ke, out, lse),
                Entry::PartialWs => qkv_partial_f32_ws(d, q, k, v, ks, ke, out, lse, ws, wl),
                Entry::Merge => qkv_merge_f32(d, out, lse, ob, lb),
                Entry::StreamInit => qkv_stream_init(d, state, c.state_len),
                Entry::StreamUpdate => qkv_stream_update(d, state, c.state_len, q, k, v, ks, ke),
                Entry::StreamUpdateWs => {
                    let n = c.state_len;
                    qkv_stream_update_ws(d, state, n, q, k, v, ks, ke, ws, wl)
                }
                Entry::StreamFinish => qkv_stream_finish(d, state, c.state_len, out, lse),
                // The state buffer as a task's partial buffer, `out_b` as the partials to merge;
                // one row per task and no key split, the task index from the key range.
                Entry::PlanRunTask | Entry::PlanFinish => {
                    let plan = QkvPlan {
                        q_block: 1,
                        kv_block: usize::MAX,
                        tasks: 0,
                        partial_len: ROOM,
                    };
                    match entry {
                        Entry::PlanRunTask => {
                            qkv_plan_run_task(&plan, d, q, k, v, ks, state, ws, wl)
                        }
                        _ => qkv_plan_finish(&plan, d, ob, out, lse),
                    }
                }
                Entry::AddSinks => qkv_add_sinks_f32(d, out, lse),
                #[cfg(feature = "capi-ragged")]
                Entry::Ragged => qkv_attention_ragged_f32(d, cq, ck, 3, q, k, v, out, lse),
                #[cfg(all(feature = "capi-ragged", feature = "parallel"))]
                Entry::RaggedParallel => {
                    qkv_attention_ragged_parallel_f32(d, cq, ck, 3, q, k, v, out, lse)
                }
            }
        }
    }
}
