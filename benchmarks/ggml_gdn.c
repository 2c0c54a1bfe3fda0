// ggml's fused gated delta rule (ggml_gated_delta_net, CPU backend) timed per decode step, for
// benchmarks/decode.py. Built against a local ggml tree by `benchmarks/decode.py --build-ggml`.
#include <stdlib.h>
#include <time.h>

#include "ggml.h"
#include "ggml-cpu.h"

// cpu != 0: this thread's CPU time (what a one-thread step costs whatever else the machine runs)
static double now_us(int cpu) {
    struct timespec ts;
    clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static void fill(struct ggml_tensor * t, float lo, float hi) {
    float * d = (float *) t->data;
    for (int64_t i = 0; i < ggml_nelements(t); ++i) {
        d[i] = lo + (hi - lo) * (float) rand() / (float) RAND_MAX;
    }
}

// The best of `reps` runs of `iters` single-token steps, microseconds per step (wall clock, or
// the calling thread's CPU time when `cpu`), for B sequences of H heads with S = K = V.
// Returns a negative number on failure.
double hola_gdn_step_us(int B, int H, int S, int threads, int iters, int reps, int cpu) {
    size_t need = (size_t) 4 * (3 * S * H * B + 2 * H * B + S * S * H * B + S * H * B + S * S * H * B) + (64 << 20);
    struct ggml_init_params params = { need, NULL, false };
    struct ggml_context * ctx = ggml_init(params);
    if (!ctx) return -1.0;
    struct ggml_tensor * q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, S, H, 1, B);
    struct ggml_tensor * k = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, S, H, 1, B);
    struct ggml_tensor * v = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, S, H, 1, B);
    struct ggml_tensor * g = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 1, H, 1, B);
    struct ggml_tensor * beta = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 1, H, 1, B);
    struct ggml_tensor * state = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, S, S, H, B);
    fill(q, -0.1f, 0.1f); fill(k, -0.1f, 0.1f); fill(v, -1.0f, 1.0f);
    fill(g, -0.5f, 0.0f); fill(beta, 0.0f, 1.0f); fill(state, -1.0f, 1.0f);
    struct ggml_tensor * out = ggml_gated_delta_net(ctx, q, k, v, g, beta, state);
    struct ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, out);
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(threads);
    struct ggml_threadpool * pool = ggml_threadpool_new(&tpp);
    struct ggml_cplan plan = ggml_graph_plan(gf, threads, pool);
    void * work = plan.work_size ? malloc(plan.work_size) : NULL;
    plan.work_data = work;
    double best = -1.0;
    for (int i = 0; i < 10; ++i) ggml_graph_compute(gf, &plan);       // warm-up
    for (int r = 0; r < reps; ++r) {
        double t0 = now_us(cpu);
        for (int i = 0; i < iters; ++i) ggml_graph_compute(gf, &plan);
        double per = (now_us(cpu) - t0) / iters;
        if (best < 0 || per < best) best = per;
    }
    free(work);
    ggml_threadpool_free(pool);
    ggml_free(ctx);
    return best;
}
