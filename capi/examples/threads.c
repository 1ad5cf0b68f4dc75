/*
 * threads.c: forward passes on one handle from several threads while another
 * thread keeps changing the handle's thread count (private pools of 1 to 3
 * threads and the default pool), for a network and for a convolution. Every
 * result must equal the handle's first, single-threaded one bit for bit, and
 * the program must end (.ci/run runs it natively and under valgrind, where a
 * pool dropped under a running pass would be an invalid access or a hang).
 *
 * usage: threads MODEL.safetensors     (e.g. tests/fixtures/s0.fused.safetensors)
 * exit status: 0 when every result matches, 1 otherwise, 2 bad usage.
 *
 * Build (from the repository root, after `cargo build --release -p repconv-capi`):
 *   cc -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -Icapi/include capi/examples/threads.c \
 *      -Ltarget/release -lrepconv_capi -lpthread -Wl,-rpath,"$PWD/target/release" -o threads
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "repconv.h"

#define FORWARDERS 3
#define PASSES 4
#define INPUTS 3

/* One handle under test: a forward function over INPUTS inputs with their
 * expected outputs, and a set_threads function. */
typedef struct {
    const char *name;
    int (*forward)(const void *handle, const float *input, float *output);
    int (*set_threads)(void *handle, size_t threads);
    void *handle;
    size_t input_len, output_len;
    float *inputs[INPUTS];
    float *expected[INPUTS];
    atomic_int stop;
    atomic_int mismatches;
    atomic_int errors;
    int changes;
} job;

static const size_t NET_SHAPE[4] = {1, 3, 32, 32};
static const size_t CONV_SHAPE[4] = {2, 16, 23, 29};

static int net_forward(const void *h, const float *x, float *y) {
    return repconv_net_forward((const repconv_net *)h, x, NET_SHAPE, y, 10);
}
static int net_set_threads(void *h, size_t n) { return repconv_net_set_threads(h, n); }
static int conv_forward(const void *h, const float *x, float *y) {
    return repconv_conv_forward((const repconv_conv *)h, x, CONV_SHAPE, y, 2 * 32 * 23 * 29);
}
static int conv_set_threads(void *h, size_t n) { return repconv_conv_set_threads(h, n); }

/* Deterministic values in [-1, 1). */
static void fill(float *v, size_t len, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        s = s * 1664525u + 1013904223u;
        v[i] = (float)(s >> 8) / (float)(1u << 23) - 1.0f;
    }
}

static void report(const char *what, int status) {
    fprintf(stderr, "threads: %s failed: %s: %s\n", what, repconv_status_name(status),
            repconv_last_error());
}

static void *forwarder(void *arg) {
    job *j = arg;
    float *y = malloc(j->output_len * sizeof(float));
    if (!y) {
        atomic_fetch_add(&j->errors, 1);
        return NULL;
    }
    for (int k = 0; k < PASSES * INPUTS; k++) {
        int i = k % INPUTS;
        int status = j->forward(j->handle, j->inputs[i], y);
        if (status != REPCONV_OK) {
            report("forward", status);
            atomic_fetch_add(&j->errors, 1);
        } else if (memcmp(y, j->expected[i], j->output_len * sizeof(float)) != 0) {
            atomic_fetch_add(&j->mismatches, 1);
        }
    }
    free(y);
    return NULL;
}

static void *setter(void *arg) {
    job *j = arg;
    static const size_t counts[4] = {2, 0, 3, 1};
    const struct timespec pause = {0, 1000000};
    while (!atomic_load(&j->stop)) {
        int status = j->set_threads(j->handle, counts[j->changes % 4]);
        if (status != REPCONV_OK) {
            report("set_threads", status);
            atomic_fetch_add(&j->errors, 1);
        }
        j->changes++;
        nanosleep(&pause, NULL);
    }
    return NULL;
}

/* Runs the job; returns 0 when every pass gave the expected bits. */
static int run(job *j) {
    int ok = 0;
    for (int i = 0; i < INPUTS; i++) {
        j->inputs[i] = malloc(j->input_len * sizeof(float));
        j->expected[i] = malloc(j->output_len * sizeof(float));
        if (!j->inputs[i] || !j->expected[i]) goto done;
        fill(j->inputs[i], j->input_len, (uint32_t)i + 1);
    }
    int status = j->set_threads(j->handle, 1);
    for (int i = 0; i < INPUTS && status == REPCONV_OK; i++)
        status = j->forward(j->handle, j->inputs[i], j->expected[i]);
    if (status != REPCONV_OK) {
        report("the reference pass", status);
        goto done;
    }
    atomic_store(&j->stop, 0);
    pthread_t set, fwd[FORWARDERS];
    if (pthread_create(&set, NULL, setter, j)) goto done;
    int started = 0;
    for (; started < FORWARDERS; started++)
        if (pthread_create(&fwd[started], NULL, forwarder, j)) break;
    for (int t = 0; t < started; t++) pthread_join(fwd[t], NULL);
    atomic_store(&j->stop, 1);
    pthread_join(set, NULL);
    int mismatches = atomic_load(&j->mismatches), errors = atomic_load(&j->errors);
    printf("%s: %d passes on %d threads during %d thread-count changes: %d mismatches, %d errors\n",
           j->name, started * PASSES * INPUTS, started, j->changes, mismatches, errors);
    ok = started == FORWARDERS && mismatches == 0 && errors == 0 && j->changes > 0;
done:
    for (int i = 0; i < INPUTS; i++) {
        free(j->inputs[i]);
        free(j->expected[i]);
    }
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: threads MODEL.safetensors\n");
        return 2;
    }
    int failed = 0;

    repconv_net *net = NULL;
    int status = repconv_net_load(argv[1], NULL, &net);
    if (status != REPCONV_OK) {
        report("repconv_net_load", status);
        return 1;
    }
    job nj = {.name = "net", .forward = net_forward, .set_threads = net_set_threads,
              .handle = net, .input_len = 3 * 32 * 32, .output_len = 10};
    failed |= run(&nj);
    repconv_net_destroy(net);

    repconv_conv_params params;
    repconv_conv *conv = NULL;
    size_t weights_len = 32 * 16 * 3 * 3;
    float *weights = malloc(weights_len * sizeof(float));
    if (!weights) return 1;
    fill(weights, weights_len, 99);
    status = repconv_conv_params_init(&params, 16, 32, 3, 3);
    params.padding[0] = params.padding[1] = 1;
    if (status == REPCONV_OK)
        status = repconv_conv_create(&params, weights, weights_len, NULL, 0,
                                     REPCONV_ACTIVATION_RELU, NULL, &conv);
    free(weights);
    if (status != REPCONV_OK) {
        report("repconv_conv_create", status);
        return 1;
    }
    job cj = {.name = "conv", .forward = conv_forward, .set_threads = conv_set_threads,
              .handle = conv, .input_len = 2 * 16 * 23 * 29, .output_len = 2 * 32 * 23 * 29};
    failed |= run(&cj);
    repconv_conv_destroy(conv);
    return failed;
}
